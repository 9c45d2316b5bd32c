"""One row (a JSON object, a parquet/arrow row as a dict) -> an Example, by the field mapping.

Each format has Hugging Face conventions as defaults: a tuple of column names per field, the
first one present in a row being used; a field set in the train config replaces the tuple.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from train_pipeline.training.data_settings import FIELD_NAMES, DataFields
from train_pipeline.training.formats.chat import chat_from_row
from train_pipeline.training.formats.common import BadRow, Example, one_line
from train_pipeline.training.formats.images import MAX_IMAGES_PER_ROW, images_of


@dataclass(frozen=True)
class FieldDefaults:
    image: tuple[str, ...]
    caption: tuple[str, ...] = ("text", "caption")
    question: tuple[str, ...] = ("question",)
    answer: tuple[str, ...] = ("answer",)
    messages: tuple[str, ...] = ("messages", "conversations")


def resolve_fields(defaults: FieldDefaults, fields: DataFields) -> dict[str, tuple[str, ...]]:
    """{field: the column names to look for, in order}: the config's name, else the defaults."""
    return {k: (v,) if (v := getattr(fields, k)) is not None else getattr(defaults, k) for k in FIELD_NAMES}


def columns_wanted(fields: dict[str, tuple[str, ...]]) -> set[str]:
    return {c for names in fields.values() for c in names}


def example_from_row(row: Any, fields: dict[str, tuple[str, ...]], base: Path, root: Path, instruction: str,
                     origin: str) -> Example:
    """The example of ``row``; BadRow (with the reason) when it cannot be used."""
    if not isinstance(row, dict):
        raise BadRow("not a JSON object")
    present = {k: next((c for c in names if row.get(c) is not None), None) for k, names in fields.items()}
    image_col = present["image"]
    if image_col is None:
        raise BadRow(f"no {' or '.join(map(repr, fields['image']))} image")
    value = row[image_col]
    name = _image_name(value)
    n_images = len(value) if isinstance(value, (list, tuple)) else 1
    if n_images > MAX_IMAGES_PER_ROW:
        raise BadRow(f"{image_col!r} has {n_images} images; at most {MAX_IMAGES_PER_ROW} per row", name)
    if not any(present[k] for k in ("messages", "question", "answer", "caption")):
        def names(k: str) -> str:
            return " or ".join(map(repr, fields[k]))

        raise BadRow(f"no caption ({names('caption')}), question+answer ({names('question')} + {names('answer')}) "
                     f"or messages ({names('messages')})", name)
    messages = chat_from_row(row, present, n_images, instruction, name)
    images = images_of(value, base, root, image_col)
    return Example(images=images, messages=messages, origin=origin)


def _image_name(value: Any) -> str | None:
    """How the row names its (first) image, for reports."""
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    if isinstance(value, dict):
        value = value.get("path")
    if isinstance(value, str) and value:
        return one_line(value)
    return None
