"""The formats training reads, by name: each is a module of its own with the same few names
(NAME, DESCRIBE, DEFAULTS, claims, row_kind, rows). Errors list them from here."""

from __future__ import annotations

from types import ModuleType

from train_pipeline.training.data_settings import FORMAT_NAMES
from train_pipeline.training.formats import arrow, imagefolder, llava, parquet, sharegpt

FORMATS: dict[str, ModuleType] = {m.NAME: m for m in (imagefolder, parquet, arrow, sharegpt, llava)}
assert tuple(FORMATS) == FORMAT_NAMES, "data_settings.FORMAT_NAMES must list the formats registered here"


def valid_formats() -> str:
    """One line: every format and what it reads."""
    return "; ".join(m.DESCRIBE for m in FORMATS.values())
