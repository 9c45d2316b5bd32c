"""What every format reader produces: examples (a chat plus its images), and a report of the
rows it skipped and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def one_line(text: str, limit: int = 120) -> str:
    """``text`` (a name from the data: a column, a file, an image path) fit for a one-line message."""
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text))
    return text if len(text) <= limit else text[: limit - 3] + "..."


class DataError(ValueError):
    """The dataset cannot be used; the message is one line naming the input and the fix."""


class BadRow(Exception):
    """One row cannot be used: it is skipped and reported (``reason``, and the image it names)."""

    def __init__(self, reason: str, file_name: str | None = None):
        super().__init__(reason)
        self.file_name = file_name


@dataclass(frozen=True)
class ImageRef:
    """One image of an example: a file inside the dataset folder (read again when batched), or
    the encoded bytes a parquet/arrow row carries. ``digest`` is the sha256 of the bytes that were
    checked (the run's data fingerprint counts it)."""

    name: str  # how the row names it (for messages)
    digest: str
    root: Path | None = None  # the dataset folder the file must stay inside
    path: Path | None = None  # the file (symlinks resolved, inside root when checked)
    data: bytes | None = field(default=None, repr=False)

    def load(self):
        """The image, decoded, as RGB (a file is read again, through the same confinement)."""
        from train_pipeline.training.formats.images import decode, read_inside

        data = self.data if self.data is not None else read_inside(self.root, self.path)
        return decode(data, self.name).convert("RGB")


@dataclass(frozen=True)
class Example:
    """A chat whose image parts (in order) are ``images``; the last turn is the assistant's."""

    images: tuple[ImageRef, ...]
    messages: list[dict[str, Any]]
    origin: str = ""  # 'file:line' of the row, for messages

    @property
    def image_path(self) -> Path | None:
        """The first image's file (None for an image stored in the row)."""
        return self.images[0].path if self.images else None


@dataclass(frozen=True)
class SkippedRow:
    line: int  # line (JSON lines), record (JSON array) or row (parquet/arrow) number, from 1; 0: the whole file
    file_name: str | None  # the image the row names, if any
    reason: str
    file: str | None = None  # the data file, relative to the dataset folder, when it has several
    kind: str = "line"

    def describe(self) -> str:
        where = f"{one_line(self.file)}: " if self.file else ""
        where += f"{self.kind} {self.line}" if self.line else "whole file"
        return where + (f" ({one_line(self.file_name)})" if self.file_name else "") + f": {one_line(self.reason, 400)}"


@dataclass
class DataReport:
    """What reading one dataset found: rows, skipped rows, the columns/keys seen."""

    metadata_path: Path  # the dataset folder, or its only data file
    format: str = ""
    name: str = ""
    files: list[str] = field(default_factory=list)
    total_rows: int = 0
    skipped: list[SkippedRow] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # data files of other splits

    @property
    def usable(self) -> int:
        return self.total_rows - sum(1 for s in self.skipped if s.line)

    def see_columns(self, names) -> None:
        for n in names:
            if len(self.columns) >= 32:
                break
            if isinstance(n, str) and one_line(n, 60) not in self.columns:
                self.columns.append(one_line(n, 60))

    def summary(self, limit: int = 5, where: bool = True) -> str:
        head = "; ".join(s.describe() for s in self.skipped[:limit])
        more = f"; and {len(self.skipped) - limit} more" if len(self.skipped) > limit else ""
        rows = sum(1 for s in self.skipped if s.line)
        files = len(self.skipped) - rows
        what = f"skipped {rows} of {self.total_rows} rows" + (f" and {files} unreadable file(s)" if files else "")
        return (f"{self.metadata_path}: " if where else "") + f"{what}: {head}{more}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.format,
            "metadata_path": str(self.metadata_path),
            "files": self.files,
            "columns": self.columns,
            "left_out": self.left_out,
            "total_rows": self.total_rows,
            "usable_rows": self.usable,
            "skipped": [{"line": s.line, "file_name": s.file_name, "reason": s.reason, "file": s.file, "kind": s.kind}
                        for s in self.skipped],
        }


class UnreadableFile(Exception):
    """A whole data file cannot be read (reported, the other files still count)."""
