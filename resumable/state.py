"""What the engine keeps beside a destination, and how it touches the file system safely.

Every sidecar lives in ``<folder>/.resumable/`` under an escaped name, where no downloaded file
can land (names from servers never start with a dot, and ``.resumable`` itself is refused as a
file name): the partial download ``<name>.part``, its resume state ``<name>.part.json``, the
lock (a byte of the folder's ``.locks``, or ``<name>.lock``: locks.py), the folder's verification
records ``.verified.jsonl`` (journal.py; earlier versions wrote ``<name>.verified.json``, still
read) and bad bytes kept aside as ``<name>.corrupt``. Every open refuses symlinks and anything
but a regular file (a FIFO, a device); records are written atomically and validated strictly when
read: a record that does not make sense is no record.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import re
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from . import journal
from .disk import pwrite_all
from .errors import DiskSpaceError, LocalFileError, UsageError
from .scratch import scratch_for

RECORD_DIR = ".resumable"
# Escaped names longer than this are replaced by a digest, so that the longest sidecar plus a
# temporary suffix stays within NAME_MAX (255 bytes).
_READABLE_MAX = 200
_RECORD_MAX_BYTES = 16 << 20
_HEADER_MAX = 1024
PRIVATE_PART_MAX_AGE = 3600.0  # a lock-free writer's part untouched this long is an orphan


def url_id(url: str) -> str:
    """What a record stores to recognise a URL: its digest (a signed URL's query is a secret)."""
    return hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()


def escaped_name(name: str) -> str:
    """``name`` as a sidecar stem: '%' is escaped, so the digest form '%h<hex>' used for long
    names can never equal an escaped one."""
    esc = name.replace("%", "%25")
    if len(os.fsencode(esc)) <= _READABLE_MAX:
        return esc
    return "%h" + hashlib.sha256(os.fsencode(name)).hexdigest()


# Paths are built from a destination again and again per file (the lock, the part, its record, the
# journal): remembered, they cost a dict lookup instead of pathlib's parsing (~7 % of a small file).
# Typed: a PurePosixPath equals the Path of the same text, and must not get that Path's answer back.
@functools.lru_cache(maxsize=4096, typed=True)
def record_dir(dest: Path) -> Path:
    return dest.parent / RECORD_DIR


@functools.lru_cache(maxsize=4096, typed=True)
def _sidecar(dest: Path, suffix: str) -> Path:
    return record_dir(dest) / (escaped_name(dest.name) + suffix)


def part_path(dest: Path) -> Path:
    return _sidecar(dest, ".part")


def private_part_path(dest: Path, owner: str) -> Path:
    """The part file of one writer that runs without the lock: nobody else ever opens it."""
    return _sidecar(dest, f".{owner}.private-part")


def state_path(dest: Path) -> Path:
    return _sidecar(dest, ".part.json")


def corrupt_path(dest: Path) -> Path:
    return _sidecar(dest, ".corrupt")


def lock_path(dest: Path) -> Path:
    """A lock file of ``dest``'s own (where byte-range locks are missing: see locks.py)."""
    return _sidecar(dest, ".lock")


def shared_lock_path(dest: Path) -> Path:
    """The lock file shared by every destination in ``dest``'s folder (see locks.py); no sidecar
    can have this name (every sidecar ends in one of the suffixes above)."""
    return record_dir(dest) / ".locks"


def verified_path(dest: Path) -> Path:
    return _sidecar(dest, ".verified.json")


def temp_path(dest: Path) -> Path:
    """A unique scratch name in the record folder (same file system as ``dest``), for a link or copy
    that then replaces ``dest``. Not a name that ``scratch.sweep`` takes (``.new.tmp``): nobody
    holds a lock on it."""
    return record_dir(dest) / f".{escaped_name(dest.name)}.{uuid.uuid4().hex[:8]}.new.tmp"


def remove_stale_temps(dest: Path) -> None:
    """Remove the ``temp_path`` files of ``dest`` that killed writers left. Only with ``dest``'s lock
    held: every writer of them holds it, so none is live."""
    prefix = f".{escaped_name(dest.name)}."
    try:
        names = [e.name for e in os.scandir(record_dir(dest)) if e.name.startswith(prefix)]
    except OSError:
        return
    for name in names:
        if re.fullmatch(r"[0-9a-f]{8}\.new\.tmp", name[len(prefix):]):
            try:
                os.unlink(record_dir(dest) / name)
            except OSError:
                pass


# -- the file system, touched safely ------------------------------------------------------------
def check_destination(dest: Path) -> bool:
    """``dest`` may be created or replaced: it is absent or a regular file, and its name is not ours.
    Returns whether it is there."""
    if dest.name in ("", ".", "..") or dest.name == RECORD_DIR:
        raise UsageError(f"destination {str(dest)!r}: choose a file name (not '{dest.name or dest}')")
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        raise UsageError(f"destination {dest}: a parent of it is a file, not a folder; choose another path") from None
    except OSError as exc:
        raise local_error(exc, dest) from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"destination {dest} is a {_kind(st.st_mode)}, not a regular file; remove it or choose "
                         "another path (downloads replace only regular files)")
    return True


def ensure_record_dir(dest: Path) -> Path:
    """``.resumable/`` beside ``dest``, created if needed; a symlink or a file there is refused."""
    folder = record_dir(dest)
    try:
        st = os.lstat(folder)  # usually there: a mkdir that fails still waits for the folder's lock
    except FileNotFoundError:
        try:
            os.mkdir(folder)
        except FileExistsError:
            pass
        except OSError as exc:
            raise local_error(exc, folder) from None
        st = os.lstat(folder)
    except OSError as exc:
        raise local_error(exc, folder) from None
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{folder} is a {_kind(st.st_mode)}, not the engine's record folder; remove it "
                         "(downloads keep their partial files and records there)")
    return folder


def open_regular(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that never follows a symlink, never blocks on a FIFO, opens only regular files, and
    writes only into a file with no other hard link."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(f"{path} is a symlink; the engine never writes through one: remove it") from None
        if exc.errno == errno.ENXIO:  # a FIFO without a reader, opened for writing
            raise UsageError(f"{path} is a FIFO, not a regular file; remove it") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UsageError(f"{path} is a {_kind(st.st_mode)}, not a regular file; remove it")
    if flags & (os.O_WRONLY | os.O_RDWR) and st.st_nlink > 1:
        os.close(fd)  # writing would change the other names of this file too, wherever they are
        raise UsageError(f"{path} is a hard link to another file; the engine writes only files of its own: remove it")
    os.set_blocking(fd, True)
    return fd


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "symlink"), (stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


_FIXES = {
    errno.EACCES: "not writable: fix its permissions or choose another location",
    errno.EPERM: "not writable: fix its permissions or choose another location",
    errno.EROFS: "on a read-only file system: choose another location",
    errno.ENOTDIR: "a parent of it is a file, not a folder: choose another path",
    errno.EISDIR: "is a folder: choose a file path",
    errno.ENAMETOOLONG: "the name is too long for the file system: choose a shorter one",
    errno.ELOOP: "a symlink stands where a file is expected: remove it",
    errno.EEXIST: "something else already exists there: remove it or choose another path",
}


def local_error(exc: OSError, path: Path | str | None = None) -> Exception:
    """A one-line error for a local file-system failure, naming the path and the fix."""
    where = exc.filename or path or "?"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskSpaceError(f"{where}: no space left on the device (or quota); free some space and run again: "
                              "the partial download is kept for the next run")
    fix = _FIXES.get(exc.errno, exc.strerror or type(exc).__name__)
    return LocalFileError(f"{where}: {fix}")


# -- small JSON records ---------------------------------------------------------------------------
def write_json(path: Path, data: dict, *, durable: bool = False, readable: bool = False) -> None:
    """Atomically (a fresh file, then rename: a symlink at ``path`` is replaced, never followed).
    ``durable``: the bytes reach the disk before the rename, so a power cut leaves the old record
    or the new one, never an empty file. ``readable``: indented, for files people open. ASCII JSON: names that are not UTF-8 round-trip as
    \\udcXX escapes."""
    if readable:
        text = json.dumps(data, sort_keys=True, indent=2) + "\n"
    else:
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    with scratch_for(path) as (fd, tmp):  # a killed writer's scratch file is removed by the next write
        pwrite_all(fd, text.encode(), 0)
        if durable:
            os.fsync(fd)
        os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    """The record at ``path``, or None when it is missing, not a regular file, too big or not JSON."""
    try:
        fd = open_regular(path, os.O_RDONLY)
    except (OSError, UsageError):
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            raw = f.read(_RECORD_MAX_BYTES + 1)
        if len(raw) > _RECORD_MAX_BYTES:
            return None
        data = json.loads(raw)
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _int(value, *, minimum: int = 0) -> int:
    if type(value) is not int or value < minimum:
        raise ValueError(value)
    return value


def _text(value, *, optional: bool = False, limit: int = _HEADER_MAX) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > limit or any(ord(c) < 0x20 or ord(c) == 0x7f for c in value):
        raise ValueError(value)
    return value


def _header_value(value) -> str | None:
    """A validator we may send back in If-Range / If-None-Match: printable ASCII only."""
    value = _text(value, optional=True)
    if value is not None and not value.isascii():
        raise ValueError(value)
    return value


@dataclass
class PartState:
    """What we know about the bytes in the ``.part``.

    ``source`` is the digest of the URL the bytes came from (``url`` is shown to people, without
    its query). ``segments`` is empty for a sequential download (the .part's size is the
    progress); for a multi-connection download it lists ``[start, end, done]`` per segment.
    """

    source: str
    url: str = ""
    validator: str | None = None
    total: int | None = None
    expected_hash: str | None = None
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    segments: list[list[int]] = field(default_factory=list)

    def save(self, dest: Path) -> None:
        write_json(state_path(dest), {**vars(self), "segments": [list(s) for s in self.segments]})

    @classmethod
    def load(cls, dest: Path) -> "PartState | None":
        data = read_json(state_path(dest))
        try:
            return cls.from_json(data) if data else None
        except (ValueError, TypeError, KeyError):
            return None

    @classmethod
    def from_json(cls, data: dict) -> "PartState":
        total = None if data.get("total") is None else _int(data["total"])
        state = cls(source=_text(data["source"], limit=64), url=_text(data.get("url", ""), limit=8192),
                    validator=_header_value(data.get("validator")), total=total,
                    expected_hash=_text(data.get("expected_hash"), optional=True, limit=200),
                    owner=_text(data.get("owner", ""), limit=64),
                    segments=[list(s) for s in data.get("segments") or []])
        if state.segments:
            _check_segments(state.segments, total)
        return state


def _check_segments(segments: list[list[int]], total: int | None) -> None:
    """Segments tile [0, total) in order, each ``start <= done <= end``."""
    if total is None or not isinstance(segments, list):
        raise ValueError("segments without a total")
    at = 0
    for seg in segments:
        if not isinstance(seg, list) or len(seg) != 3:
            raise ValueError(seg)
        start, end, done = (_int(v) for v in seg)
        if start != at or not start <= done <= end:
            raise ValueError(seg)
        at = end
    if at != total:
        raise ValueError("segments do not cover the file")


@dataclass
class VerifiedRecord:
    """A file we published or verified, keyed by what changes whenever anyone touches it
    (size, mtime, ctime, inode: rewriting a file and restoring its mtime still changes its ctime).

    ``source`` is the digest of the URL the engine published it from (None for a file we only
    verified), ``validator`` that response's ETag or Last-Modified, for a conditional re-check.
    """

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    digests: dict[str, str]
    source: str | None = None
    validator: str | None = None

    @classmethod
    def of(cls, path: Path, digests: dict[str, str], source: str | None = None,
           validator: str | None = None) -> "VerifiedRecord":
        st = os.lstat(path)
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, dict(digests), source, validator)

    def matches(self, path: Path) -> bool:
        try:
            st = os.lstat(path)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) == (
            self.size, self.mtime_ns, self.ctime_ns, self.inode)

    def save(self, dest: Path) -> None:
        folder = ensure_record_dir(dest)
        try:
            journal.append(folder, escaped_name(dest.name), {**vars(self), "digests": dict(self.digests)})
        except OSError as exc:
            raise local_error(exc, journal.journal_path(folder)) from None

    @staticmethod
    def forget(dest: Path) -> None:
        """``dest`` is no longer the file any record describes."""
        folder = record_dir(dest)
        if os.path.isdir(folder):
            try:
                journal.append(folder, escaped_name(dest.name), None)
            except OSError as exc:
                raise local_error(exc, journal.journal_path(folder)) from None
        verified_path(dest).unlink(missing_ok=True)

    @classmethod
    def load(cls, dest: Path) -> "VerifiedRecord | None":
        data = journal.lookup(record_dir(dest), escaped_name(dest.name))
        if data is None:
            data = read_json(verified_path(dest))  # a record file of an earlier version
        try:
            return cls.from_json(data) if data else None
        except (ValueError, TypeError, KeyError):
            return None

    @classmethod
    def from_json(cls, data: dict) -> "VerifiedRecord":
        digests = data["digests"]
        if not isinstance(digests, dict):
            raise ValueError(digests)
        for alg, hexdigest in digests.items():
            if not isinstance(alg, str) or not isinstance(hexdigest, str) or len(hexdigest) > 256:
                raise ValueError(alg)
        return cls(_int(data["size"]), _int(data["mtime_ns"], minimum=-(1 << 62)),
                   _int(data["ctime_ns"], minimum=-(1 << 62)), _int(data["inode"]), dict(digests),
                   _text(data.get("source"), optional=True, limit=64), _header_value(data.get("validator")))


def remove_orphaned_private_parts(dest: Path, max_age: float = PRIVATE_PART_MAX_AGE) -> None:
    """Part files of lock-free writers that died: untouched for ``max_age`` seconds."""
    folder = record_dir(dest)
    mine = re.compile(re.escape(escaped_name(dest.name)) + r"\.[0-9a-f]{32}\.private-part")
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if mine.fullmatch(entry.name):
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime > max_age:
                    os.unlink(entry.path)
            except OSError:
                pass

