"""The files the servers serve (random bytes, kept between runs) and the folders contenders write to."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from bench.harness.config import MIB
from resumable.extract.atomic import remove as rm  # a tree, a file or a link


def make_random_file(path: Path, size: int) -> str:
    """A file of random bytes (kept between runs); returns its sha256 (cached beside it)."""
    meta = path.with_name(path.name + ".sha256")
    if path.is_file() and path.stat().st_size == size and meta.is_file():
        return meta.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 8 * MIB))
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
    meta.write_text(h.hexdigest())
    return h.hexdigest()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    return h.hexdigest()


def clear(folder: Path) -> None:
    """Delete everything in ``folder`` (a contender's previous output), keeping the folder."""
    for p in folder.iterdir():
        rm(p)
