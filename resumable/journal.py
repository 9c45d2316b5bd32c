"""The verification records of one folder, in one append-only file: ``.resumable/.verified.jsonl``.

A file per record cost a file create and a rename for every download (0.3–0.8 ms each on these
disks: more than transferring a 64 KiB file). Appending a line costs one write. Each line is
``{"name": ESCAPED_NAME, "record": {...}}`` or ``{"name": ..., "record": null}`` (forgotten); the
last line for a name wins. The first line names the journal's epoch, a random id that every
rewrite changes: readers keep what they parsed of an epoch and read only what was appended since.
Appends and the rewrite that drops superseded lines hold an OFD lock on the journal, and an
appender that finds the journal replaced under it appends to the new one, so no line is lost.
A line that does not parse (a torn write after a power cut, or anyone's garbage) is skipped:
records only spare a re-hash, so losing one costs time, never correctness.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
import threading
import uuid
from pathlib import Path

from .disk import pwrite_all
from .errors import UsageError
from .scratch import scratch_for

NAME = ".verified.jsonl"
_READ_MAX = 64 << 20  # a bigger journal is not ours to parse: it is treated as empty and replaced
_COMPACT_AT = 1 << 20  # rewrite when the journal passes this size and most lines are superseded

_cache: dict[str, "_Parsed"] = {}
_cache_lock = threading.Lock()


class _Parsed:
    """What one process has read of one journal: up to ``offset`` of the epoch ``epoch``."""

    def __init__(self, epoch: bytes | None):
        self.epoch, self.offset, self.lines, self.records = epoch, 0, 0, {}

    def feed(self, chunk: bytes) -> None:
        end = chunk.rfind(b"\n") + 1  # a line still being written is read next time
        for line in chunk[:end].splitlines():
            self.lines += 1
            try:
                entry = json.loads(line)
                name, record = entry["name"], entry["record"]
            except (ValueError, TypeError, KeyError, RecursionError):
                continue
            if isinstance(name, str) and (record is None or isinstance(record, dict)):
                if record is None:
                    self.records.pop(name, None)
                else:
                    self.records[name] = record
        self.offset += end


def journal_path(folder: Path) -> Path:
    return folder / NAME


def lookup(folder: Path, name: str) -> dict | None:
    """The last record appended for ``name`` (an escaped sidecar name), or None."""
    path = journal_path(folder)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return _read(fd, str(path)).records.get(name)
    except (OSError, UsageError):
        return None
    finally:
        os.close(fd)


def append(folder: Path, name: str, record: dict | None) -> None:
    """Add ``record`` for ``name`` (None forgets it): one line, written whole."""
    line = (json.dumps({"name": name, "record": record}, sort_keys=True, separators=(",", ":")) + "\n").encode()
    path = journal_path(folder)
    for _ in range(8):  # a journal replaced between our open and our lock is opened again
        fd = _open_for_append(path)
        try:
            _lock(fd)
            st = os.fstat(fd)
            if st.st_nlink == 0 or _replaced(path, st):
                continue
            os.write(fd, _new_epoch() + line if st.st_size == 0 else line)
            if st.st_size + len(line) > _COMPACT_AT:
                _compact(fd, path)
            return
        finally:
            os.close(fd)  # also drops the lock
    raise UsageError(f"{path}: replaced again and again while the engine appended to it; "
                     "stop whatever rewrites it")


def _read(fd: int, key: str) -> _Parsed:
    st = os.fstat(fd)
    if not _regular(st) or st.st_size > _READ_MAX:
        return _Parsed(None)
    head = os.pread(fd, len(_new_epoch()), 0)
    epoch = head if _EPOCH.fullmatch(head) else None  # without one (not ours): read it all each time
    with _cache_lock:
        parsed = _cache.get(key)
        if parsed is None or epoch is None or parsed.epoch != epoch or parsed.offset > st.st_size:
            parsed = _cache[key] = _Parsed(epoch)
        if st.st_size > parsed.offset:
            parsed.feed(os.pread(fd, st.st_size - parsed.offset, parsed.offset))
        return parsed


def _compact(fd: int, path: Path) -> None:
    """Keep only each name's last line (the lock is held): a tmp file, then rename over."""
    parsed = _Parsed(None)
    size = os.fstat(fd).st_size
    if size <= _READ_MAX:
        reader = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)  # ``fd`` only appends
        try:
            parsed.feed(os.pread(reader, size, 0))
        finally:
            os.close(reader)
    if parsed.lines < 2 * len(parsed.records) + 64:
        return  # mostly live: rewriting would not shrink it
    data = _new_epoch() + b"".join((json.dumps({"name": n, "record": r}, sort_keys=True, separators=(",", ":"))
                                    + "\n").encode() for n, r in parsed.records.items())
    try:
        # O_EXCL: whatever someone planted at the scratch name (a link to another file) is never written
        with scratch_for(path) as (out, tmp):
            pwrite_all(out, data, 0)
            os.replace(tmp, path)
    except OSError:
        pass  # a full disk, say: the record is already appended; the journal stays long until next time


def _open_for_append(path: Path) -> int:
    """The journal opened for appending; whatever else stands at its name (a symlink, a FIFO, a
    hard link to another file) is removed first: the record folder is the engine's own."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    for _ in range(2):
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENXIO):
                raise
        else:
            st = os.fstat(fd)
            if _regular(st) and st.st_nlink <= 1:
                os.set_blocking(fd, True)
                return fd
            os.close(fd)
        if os.path.isdir(path) and not os.path.islink(path):
            raise UsageError(f"{path} is a folder, not the engine's record journal; remove it")
        os.unlink(path)
    raise UsageError(f"{path}: something keeps replacing the engine's record journal; stop it")


def _new_epoch() -> bytes:
    return b'{"journal":"%s"}\n' % uuid.uuid4().hex.encode()


_EPOCH = re.compile(rb'\{"journal":"[0-9a-f]{32}"\}\n')


def _regular(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)


def _replaced(path: Path, st: os.stat_result) -> bool:
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        return True
    return (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino)


def _lock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_EX)  # per open file: excludes other threads' opens too
