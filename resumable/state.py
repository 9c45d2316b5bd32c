"""Small JSON records on disk: the resume state of a ``.part`` and the verification record.

Both are written atomically (temp file + os.replace) so a kill never leaves half a record.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

RECORD_DIR = ".resumable"


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def state_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part.json")


def corrupt_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".corrupt")


def record_dir(dest: Path) -> Path:
    return dest.parent / RECORD_DIR


def lock_path(dest: Path) -> Path:
    return record_dir(dest) / (dest.name + ".lock")


def verified_path(dest: Path) -> Path:
    return record_dir(dest) / (dest.name + ".verified.json")


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(data, sort_keys=True))
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class PartState:
    """What we know about the bytes in ``<dest>.part``.

    ``segments`` is empty for a sequential download (the .part's size is the progress);
    for a multi-connection download it lists ``[start, end, done]`` per segment.
    """

    url: str
    validator: str | None = None
    total: int | None = None
    expected_hash: str | None = None
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    segments: list[list[int]] = field(default_factory=list)

    def save(self, dest: Path) -> None:
        write_json(state_path(dest), asdict(self))

    @classmethod
    def load(cls, dest: Path) -> "PartState | None":
        data = read_json(state_path(dest))
        if not data or "url" not in data:
            return None
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except TypeError:
            return None


@dataclass
class VerifiedRecord:
    """A file we verified, keyed by what changes when anyone touches it (size, mtime, inode)."""

    size: int
    mtime_ns: int
    inode: int
    digests: dict[str, str]

    @classmethod
    def of(cls, path: Path, digests: dict[str, str]) -> "VerifiedRecord":
        st = path.stat()
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, dict(digests))

    def matches(self, path: Path) -> bool:
        try:
            st = path.stat()
        except OSError:
            return False
        return (st.st_size, st.st_mtime_ns, st.st_ino) == (self.size, self.mtime_ns, self.inode)

    def save(self, dest: Path) -> None:
        record_dir(dest).mkdir(parents=True, exist_ok=True)
        write_json(verified_path(dest), asdict(self))

    @classmethod
    def load(cls, dest: Path) -> "VerifiedRecord | None":
        data = read_json(verified_path(dest))
        try:
            return cls(**data) if data else None
        except TypeError:
            return None


def discard_part(dest: Path) -> None:
    for p in (part_path(dest), state_path(dest)):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
