"""The completion record: which archive a target folder holds, checkable without hashing.

It lives next to the target (``.<name>.extract.json``), not inside it, so the extracted tree is
exactly the archive's content. It is only ever replaced atomically, and exists for as long as the
target is ours: ``state`` is "complete" once the target matches it, "replacing" while a new
version is being swapped in (a crash there leaves a target we may still replace).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

VERSION = 1
_TOP_LEVEL_KEPT = 64  # names checked by the cheap validity test


@dataclass
class Record:
    state: str  # "complete" | "replacing"
    archive: str = ""
    archive_digest: str = ""
    archive_size: int = -1
    archive_mtime_ns: int = -1
    archive_ino: int = -1
    format: str = ""
    files: int = 0
    bytes: int = 0
    target_ino: int = -1
    top_level: list[str] = field(default_factory=list)
    version: int = VERSION


def record_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.extract.json")


def read_record(target: Path) -> Record | None:
    try:
        data = json.loads(record_path(target).read_text())
        if data.get("version") != VERSION:
            return None
        return Record(**data)
    except (OSError, ValueError, TypeError):
        return None  # missing or unreadable: treat the target as not extracted


def write_record(target: Path, record: Record) -> None:
    path = record_path(target)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(asdict(record), f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def archive_matches(record: Record, st: os.stat_result) -> bool:
    return (record.archive_size, record.archive_mtime_ns, record.archive_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)


def target_intact(record: Record, target: Path) -> bool:
    """The folder the record describes is still there (same inode, its top-level entries present)."""
    try:
        st = os.lstat(target)
    except OSError:
        return False
    if st.st_ino != record.target_ino:
        return False
    return all(os.path.lexists(target / name) for name in record.top_level)


def top_level_names(folder: Path) -> list[str]:
    names = sorted(os.listdir(folder))
    return names[:_TOP_LEVEL_KEPT]
