"""Scratch files of write-then-rename updates: ``.NAME.XXXXXXXX.tmp`` beside the file NAME they
will become, locked (``flock``) by their writer until it has renamed them.

A kill between the create and the rename leaves one behind (the chaos campaign found one beside a
training run's ``data_report.json``). The next update of the same file in any process removes
every scratch file of that name whose lock is free: its writer is dead. A live writer's is never
taken: it holds the lock, and a writer whose fresh file was removed before it could lock it (the
only window) sees that and starts over with another name.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_SUFFIX = re.compile(r"\.[0-9a-f]{8}\.tmp")
_cleaned: set[tuple[str, str]] = set()  # (folder, name) already swept by this process
_cleaned_lock = threading.Lock()
_CLEANED_MAX = 100_000


def scratch_name(name: str) -> str:
    return f".{name}.{uuid.uuid4().hex[:8]}.tmp"


@contextmanager
def scratch_for(path: Path) -> Iterator[tuple[int, Path]]:
    """A new locked scratch file for ``path`` (same folder), open for writing: ``(fd, its path)``.
    The caller writes, then renames it over ``path`` inside the block; on an exception it is
    removed. Afterwards, scratch files that dead writers left for ``path`` are removed too."""
    folder = path.parent
    for _ in range(100):
        tmp = folder / scratch_name(path.name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _is(tmp, fd):
            break
        os.close(fd)  # swept between our create and our lock, as a dead writer's: another name
    else:
        raise OSError(errno.EAGAIN, "scratch files removed as fast as they are made", str(folder))
    try:
        yield fd, tmp
    except BaseException:
        try:
            if _is(tmp, fd):
                os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        os.close(fd)
    sweep(folder, path.name)


def sweep(folder: Path, name: str, *, again: bool = False) -> list[Path]:
    """Remove the scratch files of ``name`` in ``folder`` that no live writer holds (once per
    process and file unless ``again``: a dead writer's are from before this process wrote it).
    Returns what it removed."""
    key = (str(folder), name)
    with _cleaned_lock:
        if key in _cleaned and not again:
            return []
        if len(_cleaned) >= _CLEANED_MAX:
            _cleaned.clear()  # a long-lived process: memory stays bounded, a later write sweeps again
        _cleaned.add(key)
    prefix = f".{name}"
    removed = []
    try:
        entries = [e.name for e in os.scandir(folder) if e.name.startswith(prefix)]
    except OSError:
        return removed
    for entry in entries:
        if not _SUFFIX.fullmatch(entry[len(prefix):]):
            continue
        path = folder / entry
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                continue  # a folder, link, FIFO or device planted under that name: not ours to touch
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue  # gone already
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: its writer is alive
            if _is(path, fd):
                os.unlink(path)
                removed.append(path)
        except OSError:
            pass  # held, gone, or not removable: it stays, as it would have before
        finally:
            os.close(fd)
    return removed


def _is(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)
