"""The completion record: which archive a target folder holds, checkable without hashing.

It lives next to the target (``.<name>.extract.json``), not inside it, so the extracted tree is
exactly the archive's content. It is only ever replaced atomically, and exists for as long as the
target is ours: ``state`` is "complete" once the target matches it, "replacing" while a new
version is being swapped in (``members``: the new version's, ``previous``: the old one's, and
``target_ino``: the new folder's inode, which the target has once the swap happened: a crash
there leaves a target whose every member is known), "outdated" for a record an older release wrote (ours, but not
trusted: the target is extracted again). Entries of the target that the record does not list are
someone else's: a new version keeps them (see ``resumable.foreign``).

A complete record lists every extracted member, as the tree stood right after publishing: each
folder by its relative path, and each other entry (file, symlink) by its name in its folder with
its lstat mode, size, mtime and ctime. ``members_intact`` stats them (no hashing, no reading): a
member missing or of another type, size, mtime or ctime means the target is no longer what was
extracted. ctime catches a file rewritten with its old size and mtime restored (``os.utime``
sets ctime to now); it stays put after extraction, because publishing renames only the target
folder itself (whose own times are not compared). Folders are checked to exist as folders, not
by their times: a file the user adds inside the target changes its folder's mtime and ctime, and
such extra files are not a change to the extracted members.

On disk the members are columns (a JSON list per field; the names, grouped by folder, as one
'/'-separated string; times as offsets from their smallest value): 100,000 entries take about
5 MiB and load in ~50 ms (bench/bench_extract_check.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..foreign import Owned
from ..state import write_json

VERSION = 2  # 1: top-level names only (no members); such records read as "outdated"
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_INT_FIELDS = ("archive_size", "archive_mtime_ns", "archive_ino", "files", "bytes", "target_ino")
_STR_FIELDS = ("state", "archive", "archive_digest", "format")


@dataclass
class Members:
    """Every entry of an extracted tree. ``dirs[0]`` is the target itself (""); ``counts[i]`` is how
    many of ``names`` (and of the stat columns) lie directly in ``dirs[i]``, in that order."""

    dirs: list[str] = field(default_factory=lambda: [""])
    counts: list[int] = field(default_factory=lambda: [0])
    names: list[str] = field(default_factory=list)
    modes: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    mtimes_ns: list[int] = field(default_factory=list)
    ctimes_ns: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.dirs) - 1 + len(self.names)  # the target itself is not a member


@dataclass
class Record:
    state: str  # "complete" | "replacing" | "outdated"
    archive: str = ""
    archive_digest: str = ""
    archive_size: int = -1
    archive_mtime_ns: int = -1
    archive_ino: int = -1
    format: str = ""
    files: int = 0
    bytes: int = 0
    target_ino: int = -1
    unwrap: str | None = None  # the folder name extract() was asked to unwrap (see core.extract)
    members: Members | None = None
    version: int = VERSION
    previous: Members | None = None  # "replacing": the members of the version being replaced
    legacy_top_level: list[str] | None = None  # "outdated": the version-1 record's top-level names


def members_of(owned: Owned) -> Members:
    """``owned`` as record members, without stats (a "replacing" record needs only the names)."""
    by_dir: dict[str, list[str]] = {d: [] for d in sorted(owned.dirs)}
    for path in owned.files:
        folder, _, name = path.rpartition("/")
        by_dir.setdefault(folder, []).append(name)
    dirs = ["", *(d for d in by_dir if d)]
    names = [n for d in dirs for n in sorted(by_dir.get(d, ()))]
    zeros = [0] * len(names)
    return Members(dirs, [len(by_dir.get(d, ())) for d in dirs], names, zeros, zeros[:], zeros[:], zeros[:])


def owned_by(members: Members) -> Owned:
    """The relative paths of every member: what a new version of the target may replace."""
    files, start = [], 0
    for folder, count in zip(members.dirs, members.counts):
        files += (f"{folder}/{n}" if folder else n for n in members.names[start:start + count])
        start += count
    return Owned(frozenset(members.dirs[1:]), frozenset(files))


def record_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.extract.json")


def read_record(target: Path) -> Record | None:
    """The record beside ``target``; None when there is none or it is not one of ours."""
    try:
        raw = record_path(target).read_bytes()
    except (OSError, ValueError):
        return None  # missing or unreadable: treat the target as not extracted
    return parse_record(raw)


def parse_record(raw: bytes) -> Record | None:
    """A record from the file's bytes, or None (never another exception, whatever the bytes)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, an int too long, nesting too deep
        return None
    if not isinstance(data, dict):
        return None
    version = data.get("version")
    if type(version) is int and 0 < version < VERSION and data.get("state") in ("complete", "replacing"):
        top = data.get("top_level")  # version 1 kept at most 64 names: any beyond count as foreign
        names = top if type(top) is list and all(type(n) is str and _is_plain(n) for n in top) else None
        return Record(state="outdated", legacy_top_level=names)  # ours, by an older release: never trusted
    if type(version) is not int or version != VERSION or set(data) - _KEYS:
        return None
    try:
        return _parse_v2(data)
    except (TypeError, ValueError, KeyError, OverflowError):
        return None


_KEYS = {"state", "archive", "archive_digest", "archive_size", "archive_mtime_ns", "archive_ino", "format", "files",
         "bytes", "target_ino", "unwrap", "members", "previous", "version"}


def _parse_v2(data: dict[str, Any]) -> Record | None:
    record = Record(state="")
    for name in _STR_FIELDS:
        if name in data:
            setattr(record, name, _typed(data[name], str))
    for name in _INT_FIELDS:
        if name in data:
            setattr(record, name, _typed(data[name], int))
    unwrap = data.get("unwrap")
    record.unwrap = None if unwrap is None else _plain_name(_typed(unwrap, str))
    if record.state not in ("complete", "replacing"):
        return None
    members, previous = data.get("members"), data.get("previous")
    record.members = None if members is None else _parse_members(_typed(members, dict))
    record.previous = None if previous is None else _parse_members(_typed(previous, dict))
    if record.state == "complete" and record.members is None:
        return None
    return record


def _typed(value: Any, kind: type) -> Any:
    if type(value) is not kind:  # type(), not isinstance: True is not an int here
        raise TypeError(f"expected {kind.__name__}")
    return value


def _list(value: Any) -> list:
    if type(value) is not list:
        raise TypeError("expected a list")
    return value  # items are only ever compared with ==: a wrong type never matches, never raises


def _plain_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"not a plain name: {name!r}")
    os.fsencode(name)  # UnicodeEncodeError (a ValueError) for a lone surrogate no file name can have
    return name


def _is_plain(name: str) -> bool:
    try:
        return bool(_plain_name(name))
    except ValueError:
        return False


def _unpack_times(value: Any) -> list[int]:
    base, offsets = _list(value)  # ValueError unless two items
    base = _typed(base, int)
    return [base + x for x in _list(offsets)]  # TypeError for an offset that is no number


def _pack_times(values: list[int]) -> list[Any]:
    base = min(values, default=0)
    return [base, [x - base for x in values]]


def _parse_members(data: dict[str, Any]) -> Members:
    joined = _typed(data["names"], str)  # names never hold "/": one string, split in C, is fastest to load
    names = joined.split("/") if joined else []
    if "\0" in joined or not all(names) or names.count(".") or names.count(".."):
        raise ValueError("not a plain name")
    os.fsencode(joined)
    dirs = _list(data["dirs"])
    if not dirs or dirs[0] != "" or not all(_plain_name(p) for d in dirs[1:] for p in _typed(d, str).split("/")):
        raise ValueError("the first folder must be the target itself, the others relative paths")
    counts = _list(data["counts"])
    if len(counts) != len(dirs) or not all(type(c) is int and c >= 0 for c in counts) or sum(counts) != len(names):
        raise ValueError("counts do not add up")
    m = Members(dirs, counts, names, _list(data["modes"]), _list(data["sizes"]),
                _unpack_times(data["mtimes_ns"]), _unpack_times(data["ctimes_ns"]))
    if not len(m.modes) == len(m.sizes) == len(m.mtimes_ns) == len(m.ctimes_ns) == len(names):
        raise ValueError("columns of different lengths")
    return m


def write_record(target: Path, record: Record) -> None:
    data = {name: getattr(record, name) for name in ("version", "state", *_STR_FIELDS[1:], *_INT_FIELDS, "unwrap")}
    data["members"] = _packed(record.members)
    if record.previous is not None:
        data["previous"] = _packed(record.previous)
    write_json(record_path(target), data, durable=True)


def _packed(m: Members | None) -> dict[str, Any] | None:
    return None if m is None else {
        "dirs": m.dirs, "counts": m.counts, "names": "/".join(m.names), "modes": m.modes, "sizes": m.sizes,
        "mtimes_ns": _pack_times(m.mtimes_ns), "ctimes_ns": _pack_times(m.ctimes_ns)}


def archive_matches(record: Record, st: os.stat_result) -> bool:
    return (record.archive_size, record.archive_mtime_ns, record.archive_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)


def scan_members(target: Path, only: Owned | None = None) -> tuple[int, Members]:
    """(the target's inode, every entry under it with its lstat), or with ``only`` just the
    entries it lists (what the extraction made: entries kept from others are never members)."""
    m = Members(dirs=[], counts=[])
    stack = [""]
    while stack:
        rel = stack.pop()
        m.dirs.append(rel)
        n = 0
        with os.scandir(os.path.join(target, rel) if rel else target) as entries:
            for entry in entries:
                path = f"{rel}/{entry.name}" if rel else entry.name
                is_dir = entry.is_dir(follow_symlinks=False)
                if only is not None and path not in (only.dirs if is_dir else only.files):
                    continue
                if is_dir:
                    stack.append(path)
                    continue
                st = entry.stat(follow_symlinks=False)
                m.names.append(entry.name)
                m.modes.append(st.st_mode)
                m.sizes.append(st.st_size)
                m.mtimes_ns.append(st.st_mtime_ns)
                m.ctimes_ns.append(st.st_ctime_ns)
                n += 1
        m.counts.append(n)
    return os.lstat(target).st_ino, m


def members_intact(record: Record, target: Path) -> bool:
    """The target is the folder the record describes (same inode) and every member the record
    lists is there, unchanged (lstat: mode, size, mtime, ctime; folders: still folders). One
    ``lstat`` per entry, relative to its folder's descriptor; files added since are not looked at."""
    m = record.members
    if m is None:
        return False
    try:
        root = os.open(target, _OPEN_DIR)
    except (OSError, ValueError):
        return False
    try:
        if os.fstat(root).st_ino != record.target_ino:
            return False
        lstat = os.lstat
        names, modes, sizes, mtimes, ctimes = m.names, m.modes, m.sizes, m.mtimes_ns, m.ctimes_ns
        start = 0
        for rel, count in zip(m.dirs, m.counts):
            fd = os.open(rel, _OPEN_DIR, dir_fd=root) if rel else root  # O_NOFOLLOW: a symlink is a change
            try:
                end = start + count
                if count:
                    stats = [lstat(name, dir_fd=fd) for name in names[start:end]]
                    if ([s.st_size for s in stats] != sizes[start:end]
                            or [s.st_mtime_ns for s in stats] != mtimes[start:end]
                            or [s.st_ctime_ns for s in stats] != ctimes[start:end]
                            or [s.st_mode for s in stats] != modes[start:end]):
                        return False
                start = end
            finally:
                if fd != root:
                    os.close(fd)
        return True
    except (OSError, ValueError):  # a member or folder gone, replaced by a symlink or a file
        return False
    finally:
        os.close(root)
