"""The run's datasets: where each is on disk (``DatasetSource``), reading one (``load_examples``)
and reading them all for a training run (``load_run_data``: train mixture, eval split and the
data fingerprint, see mixture.py).

The readers are in ``train_pipeline.training.formats``; bad rows are reported and skipped, a
dataset with nothing usable is a one-line DataError. Images are fully decoded once while
reading, so a truncated file is caught before training starts rather than mid-epoch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from train_pipeline.training.data_settings import DataConfig
from train_pipeline.training.formats import DataError, DataReport, Example, ImageRef, SkippedRow, read_dataset

__all__ = ["DataError", "DataReport", "DatasetSource", "Example", "ImageRef", "SkippedRow", "as_sources",
           "load_examples", "load_run_data"]


@dataclass(frozen=True)
class DatasetSource:
    """One dataset of the run: its name (what the train config's ``datasets:`` refers to) and the
    folders holding it (each archive's extraction target, the downloads folder of its other files)."""

    name: str
    folders: tuple[Path, ...]


def as_sources(data: Any) -> list[DatasetSource]:
    """``data`` as DatasetSources: one folder (named after itself), ``NAME=PATH``, a DatasetSource,
    a {name: folder(s)} mapping, or a sequence of any of these."""
    if isinstance(data, Mapping):
        items = [DatasetSource(str(k), _folders(v)) for k, v in data.items()]
    elif isinstance(data, (str, os.PathLike, DatasetSource)):
        items = [_one(data)]
    else:
        items = [_one(d) for d in data]
    if not items:
        raise DataError("no dataset given: pass at least one data folder")
    names = [s.name for s in items]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"two datasets are named {dupes[0]!r}: name them apart (NAME=PATH)")
    return items


def _one(item: Any) -> DatasetSource:
    if isinstance(item, DatasetSource):
        return item
    text = os.fspath(item)
    name, sep, path = text.partition("=") if isinstance(text, str) and not os.path.exists(text) else ("", "", text)
    if sep and name and "/" not in name:
        return DatasetSource(name, (Path(path),))
    folder = Path(text)
    return DatasetSource(folder.resolve().name or "data", (folder,))


def _folders(value: Any) -> tuple[Path, ...]:
    if isinstance(value, (str, os.PathLike)):
        return (Path(value),)
    return tuple(Path(v) for v in value)


def load_examples(data_dir: str | os.PathLike, *, instruction: str, name: str | None = None,
                  **settings: Any) -> tuple[list[Example], DataReport]:
    """Every usable row of the dataset in ``data_dir`` and a report of the skipped ones.
    ``settings``: the train config's data settings (``format``, ``fields``, ``image_dir``, ``split``).

    Raises DataError when the folder holds no known layout or no usable row."""
    folder = Path(data_dir)
    spec = DataConfig(**settings).dataset_settings(name or folder.name or "data")
    return read_dataset([folder], spec, instruction)


def load_run_data(sources: Sequence[DatasetSource], config) -> Any:
    """Read every dataset of the run (see mixture.RunData)."""
    from train_pipeline.training.mixture import build_run_data

    return build_run_data(sources, config)
