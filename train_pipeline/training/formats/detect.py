"""Which format a dataset folder holds, by its files: ``metadata.jsonl`` (imagefolder),
``*.parquet``, ``*.arrow``, ``*.json``/``*.jsonl`` whose first records have conversation keys
(sharegpt: an ``images`` list; llava: an ``image``). Exactly one format must be present, unless
the config names one (``format:``). Files of another split than the one trained on
(``test-00000-of-00001.parquet``, ``validation/metadata.jsonl``) are left out.

Hidden entries (``.resumable/``, ``.cache/``) are not data; a symlink whose target lies outside
the folder is not followed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from train_pipeline.training.data_settings import DatasetSettings
from train_pipeline.training.formats.common import DataError, one_line
from train_pipeline.training.formats.registry import FORMATS

DATA_SUFFIXES = (".parquet", ".arrow", ".json", ".jsonl")
SPLIT_ALIASES = {"train": "train", "training": "train", "test": "test", "testing": "test", "validation": "validation",
                 "valid": "validation", "val": "validation", "dev": "validation", "eval": "validation"}


@dataclass
class Found:
    """What one folder holds: its format and data files (None/empty: no data file of any format)."""

    root: Path
    format: ModuleType | None = None
    files: list[Path] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # data files of other splits
    others: list[str] = field(default_factory=list)  # a few of the files that are no data, for messages
    n_others: int = 0  # how many there are


def detect(root: Path, settings: DatasetSettings, label: str) -> Found:
    """The format and data files of ``root`` (DataError when ambiguous, or only of other splits)."""
    found = Found(root)
    candidates = _scan(root, found)
    if settings.format != "auto":
        fmt = FORMATS[settings.format]
        files = [p for p in candidates if fmt.claims(p, settings.fields, True)]
    else:
        by_format = {n: fs for n, m in FORMATS.items() if (fs := [p for p in candidates if m.claims(p, settings.fields, False)])}
        if len(by_format) > 1:
            what = "; ".join(f"{n}: {_names(root, fs)}" for n, fs in by_format.items())
            raise DataError(f"{label}: {root} holds data of several formats ({what}); set train.format (or "
                            f"train.datasets.<name>.format) to the one to read: one of {', '.join(FORMATS)}")
        fmt, files = next(((FORMATS[n], fs) for n, fs in by_format.items()), (None, []))
    if fmt is None or not files:
        found.others = (found.others + [one_line(_rel(root, p)) for p in candidates])[:8]
        found.n_others += len(candidates)
        return found
    found.format = fmt
    found.files, found.left_out = _this_split(root, files, settings.split, label)
    return found


def _scan(root: Path, found: Found) -> list[Path]:
    """Data-file candidates under ``root`` (sorted by relative path); notes a few other files."""
    if not root.is_dir():
        raise DataError(f"data_dir {root} is not a directory: point it at the downloaded dataset folder")
    real_root = os.path.realpath(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=None):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath, name)
            if not name.lower().endswith(DATA_SUFFIXES):
                found.n_others += 1
                if len(found.others) < 8:
                    found.others.append(one_line(_rel(root, path)))
                continue
            real = os.path.realpath(path)
            if real != str(path) and not real.startswith(real_root.rstrip(os.sep) + os.sep):
                continue  # a link out of the dataset folder: not the dataset's
            out.append(path)
    return sorted(out, key=lambda p: _rel(root, p))


def split_of(rel: str) -> str | None:
    """The split a data file belongs to by Hugging Face naming (``train-00000-of-00002.parquet``,
    ``test.jsonl``, ``data-validation.arrow``, ``validation/metadata.jsonl``), else None."""
    *folders, name = rel.split("/")
    for folder in folders:
        if folder.lower() in SPLIT_ALIASES:
            return SPLIT_ALIASES[folder.lower()]
    for token in re.split(r"[-_.]+", name.lower()):
        if token in SPLIT_ALIASES:
            return SPLIT_ALIASES[token]
    return None


def _this_split(root: Path, files: list[Path], split: str, label: str) -> tuple[list[Path], list[str]]:
    wanted = SPLIT_ALIASES.get(split.lower(), split.lower())
    marks = {p: split_of(_rel(root, p)) for p in files}
    kept = [p for p in files if marks[p] in (None, wanted)]
    if not kept:
        splits = ", ".join(sorted({m for m in marks.values() if m}))
        raise DataError(f"{label}: the data files in {root} belong to split(s) {splits}, not {split!r}: set train.split "
                        f"(or train.datasets.<name>.split) to the one to train on")
    return kept, [one_line(_rel(root, p)) for p in files if p not in kept]


def _rel(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _names(root: Path, files: list[Path], limit: int = 3) -> str:
    names = [one_line(_rel(root, p)) for p in files[:limit]]
    return ", ".join(names) + (f" and {len(files) - limit} more" if len(files) > limit else "")
