"""Read an imagefolder dataset (images + ``metadata.jsonl``) into chat examples.

Bad rows (unparseable JSON, missing or unreadable images, no caption, malformed chats) are
reported and skipped; a dataset with nothing usable left is an error. Images are fully decoded
once here, so a truncated file is caught before training starts rather than mid-epoch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

logger = logging.getLogger(__name__)

METADATA_NAME = "metadata.jsonl"
ROLES = ("system", "user", "assistant")


class DataError(ValueError):
    """The dataset cannot be used; the message is one line naming the input and the fix."""


@dataclass(frozen=True)
class Example:
    image_path: Path
    messages: list[dict[str, Any]]  # chat with exactly one image part; last turn is the assistant's


@dataclass(frozen=True)
class SkippedRow:
    line: int
    file_name: str | None
    reason: str

    def describe(self) -> str:
        return f"line {self.line}" + (f" ({self.file_name})" if self.file_name else "") + f": {self.reason}"


@dataclass
class DataReport:
    metadata_path: Path
    total_rows: int = 0
    skipped: list[SkippedRow] = field(default_factory=list)

    @property
    def usable(self) -> int:
        return self.total_rows - len(self.skipped)

    def summary(self, limit: int = 5) -> str:
        head = "; ".join(s.describe() for s in self.skipped[:limit])
        more = f"; and {len(self.skipped) - limit} more" if len(self.skipped) > limit else ""
        return f"{self.metadata_path}: skipped {len(self.skipped)} of {self.total_rows} rows: {head}{more}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "metadata_path": str(self.metadata_path),
            "total_rows": self.total_rows,
            "usable_rows": self.usable,
            "skipped": [{"line": s.line, "file_name": s.file_name, "reason": s.reason} for s in self.skipped],
        }


def find_metadata(data_dir: Path) -> Path:
    """The dataset's metadata.jsonl: at the root, or in a ``train/`` split folder."""
    if not data_dir.is_dir():
        raise DataError(f"data_dir {data_dir} is not a directory: point it at the downloaded dataset folder")
    for candidate in (data_dir / METADATA_NAME, data_dir / "train" / METADATA_NAME):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"data_dir {data_dir} has no {METADATA_NAME} (nor train/{METADATA_NAME}): "
        "expected the imagefolder layout, images plus metadata.jsonl with file_name and a caption"
    )


def load_examples(
    data_dir: str | Path,
    *,
    instruction: str,
    caption_field: str = "text",
    messages_field: str = "messages",
    image_field: str = "file_name",
) -> tuple[list[Example], DataReport]:
    """Parse every row; return the usable examples and a report of the skipped ones.

    Raises DataError when no row is usable.
    """
    metadata = find_metadata(Path(data_dir))
    root = metadata.parent
    report = DataReport(metadata_path=metadata)
    examples: list[Example] = []
    with open(metadata, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            report.total_rows += 1
            try:
                examples.append(_parse_row(line, root, instruction, caption_field, messages_field, image_field))
            except _BadRow as bad:
                report.skipped.append(SkippedRow(line_no, bad.file_name, str(bad)))
    if report.skipped:
        logger.warning(report.summary())
    if not examples:
        if report.total_rows == 0:
            raise DataError(f"{metadata}: no rows: add one JSON object per line with {image_field!r} and {caption_field!r}")
        raise DataError(
            f"{metadata}: no usable rows ({report.summary(limit=3)}); "
            f"each row needs {image_field!r} naming a readable image and {caption_field!r} or {messages_field!r}"
        )
    return examples, report


class _BadRow(Exception):
    def __init__(self, reason: str, file_name: str | None = None):
        super().__init__(reason)
        self.file_name = file_name


def _parse_row(
    line: str, root: Path, instruction: str, caption_field: str, messages_field: str, image_field: str
) -> Example:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _BadRow(f"not valid JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise _BadRow("not a JSON object")
    file_name = row.get(image_field)
    if not isinstance(file_name, str) or not file_name:
        raise _BadRow(f"no {image_field!r}")
    image_path = _resolve_image(root, file_name)
    if messages_field in row:
        messages = _normalise_chat(row[messages_field], messages_field, file_name)
    else:
        caption = row.get(caption_field)
        if not isinstance(caption, str) or not caption.strip():
            raise _BadRow(f"no {caption_field!r} caption", file_name)
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]},
            {"role": "assistant", "content": [{"type": "text", "text": caption.strip()}]},
        ]
    _check_image(image_path, file_name)
    return Example(image_path=image_path, messages=messages)


def _resolve_image(root: Path, file_name: str) -> Path:
    path = (root / file_name).resolve()
    if not path.is_relative_to(root.resolve()):
        raise _BadRow("image path leaves the dataset folder", file_name)
    if not path.is_file():
        raise _BadRow("image file missing", file_name)
    return path


def _check_image(path: Path, file_name: str) -> None:
    try:
        with Image.open(path) as img:
            img.load()  # full decode: catches truncated files, which verify() lets through
            if img.width < 1 or img.height < 1:
                raise _BadRow("image is empty", file_name)
    except _BadRow:
        raise
    except Exception as exc:  # PIL raises many types for corrupt data
        raise _BadRow(f"image unreadable ({type(exc).__name__})", file_name) from None


def _normalise_chat(raw: Any, field_name: str, file_name: str) -> list[dict[str, Any]]:
    """Validate a chat and give it exactly one image part (added to the first user turn if absent)."""
    if not isinstance(raw, list) or not raw:
        raise _BadRow(f"{field_name!r} is not a non-empty list of messages", file_name)
    messages: list[dict[str, Any]] = []
    n_images = 0
    for msg in raw:
        if not isinstance(msg, dict) or msg.get("role") not in ROLES:
            raise _BadRow(f"{field_name!r} has a message without a role in {ROLES}", file_name)
        content = msg.get("content")
        if isinstance(content, str):
            parts = [{"type": "text", "text": content}]
        elif isinstance(content, list) and all(isinstance(p, dict) for p in content):
            parts = []
            for part in content:
                if part.get("type") == "image" or "image" in part:
                    n_images += 1
                    parts.append({"type": "image"})  # the row's file_name is the image
                elif isinstance(part.get("text"), str):
                    parts.append({"type": "text", "text": part["text"]})
                else:
                    raise _BadRow(f"{field_name!r} has a content part that is neither image nor text", file_name)
        else:
            raise _BadRow(f"{field_name!r} has a message whose content is not text or a list of parts", file_name)
        messages.append({"role": msg["role"], "content": parts})
    if messages[-1]["role"] != "assistant" or not _text_of(messages[-1]).strip():
        raise _BadRow(f"{field_name!r} does not end with a non-empty assistant answer", file_name)
    if n_images > 1:
        raise _BadRow(f"{field_name!r} has {n_images} image parts; one row carries one image", file_name)
    if n_images == 0:
        first_user = next((m for m in messages if m["role"] == "user"), None)
        if first_user is None:
            raise _BadRow(f"{field_name!r} has no user turn", file_name)
        first_user["content"].insert(0, {"type": "image"})
    return messages


def _text_of(message: dict[str, Any]) -> str:
    return "".join(p.get("text", "") for p in message["content"])
