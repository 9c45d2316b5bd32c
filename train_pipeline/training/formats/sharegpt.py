"""sharegpt: JSON or JSON lines of conversations with a list of images (LLaMA-Factory's
``mllm_demo`` layout): ``{"messages": [{"role": "user", "content": "<image>Who are they?"}, ...],
"images": ["mllm_demo_data/1.jpg"]}``; ShareGPT's ``conversations`` with ``from``/``value``
(``human``/``gpt``) are read too. Each ``<image>`` marks where the next image goes; image paths
are relative to the JSON file's folder (or ``image_dir``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from train_pipeline.training.data_settings import DataFields
from train_pipeline.training.formats import jsonfiles
from train_pipeline.training.formats.rows import FieldDefaults

NAME = "sharegpt"
DESCRIBE = "sharegpt (*.json/*.jsonl records with messages + an images list, LLaMA-Factory mllm_demo)"
DEFAULTS = FieldDefaults(image=("images",), messages=("messages", "conversations"))
SUFFIXES = (".json", ".jsonl")


def chat_kind(path: Path, fields: DataFields) -> str | None:
    """'sharegpt' or 'llava' for a JSON(L) file of conversations (by its first records' keys),
    None for any other file (dataset_info.json, state.json, metadata.jsonl, ...)."""
    if path.suffix.lower() not in SUFFIXES or path.name == "metadata.jsonl":
        return None
    records = jsonfiles.peek(path)
    keys = jsonfiles.keys_of(records)
    chat_keys = {fields.messages} if fields.messages else {"messages", "conversations"}
    if not keys & chat_keys:
        return None
    if fields.image:
        value = next((r[fields.image] for r in records if isinstance(r, dict) and fields.image in r), None)
        if value is not None:
            return "sharegpt" if isinstance(value, list) else "llava"
    if "images" in keys:
        return "sharegpt"
    if "image" in keys:
        return "llava"
    return "sharegpt" if "messages" in keys else "llava"


def claims(path: Path, fields: DataFields, explicit: bool) -> bool:
    kind = chat_kind(path, fields)
    return kind is not None if explicit else kind == NAME


def row_kind(path: Path) -> str:
    return jsonfiles.row_kind(path)


def rows(path: Path, wanted: set[str], report) -> Iterator[tuple[int, Any]]:
    for number, row in jsonfiles.rows(path):
        if isinstance(row, dict):
            report.see_columns(row)
        yield number, row
