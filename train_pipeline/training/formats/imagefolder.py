"""imagefolder: images plus ``metadata.jsonl`` (the Hugging Face ``imagefolder`` layout).

Each line is an object naming its image (``file_name``, relative to the metadata file's folder)
and its text: a caption (``text``), ``question`` + ``answer``, or a chat (``messages``). Several
metadata files (``train/metadata.jsonl``, one per extracted archive) are all read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from train_pipeline.training.data_settings import DataFields
from train_pipeline.training.formats import jsonfiles
from train_pipeline.training.formats.rows import FieldDefaults

NAME = "imagefolder"
DESCRIBE = "imagefolder (metadata.jsonl with file_name + text/messages, beside the images)"
METADATA_NAME = "metadata.jsonl"
DEFAULTS = FieldDefaults(image=("file_name",), caption=("text",), messages=("messages",))


def claims(path: Path, fields: DataFields, explicit: bool) -> bool:
    return path.name == METADATA_NAME


def row_kind(path: Path) -> str:
    return "line"


def rows(path: Path, wanted: set[str], report) -> Iterator[tuple[int, Any]]:
    for number, row in jsonfiles.rows(path):
        if isinstance(row, dict):
            report.see_columns(row)
        yield number, row
