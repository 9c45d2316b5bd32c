"""Getting bytes onto the disk: positional writes, early writeback, and durable renames."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Start writing dirty pages to disk every this many bytes, so the final fsync is short. 32 MiB per
# connection left up to 128 MiB for the fsync of a 4-connection download: 1 GiB over HTTPS, 7
# interleaved runs, one connection 1.63 -> 1.52 s and four 1.84 -> 1.72 s with 4 MiB (2 MiB: no better).
WRITEBACK_STEP = 4 << 20
# Bytes per write call. Linux sizes page-cache folios by the write's length: 1 MiB writes took
# 2.2-2.6 s of CPU per GiB on these machines, 64 KiB writes 0.25-0.35 s (curl writes 16 KiB).
WRITE_PIECE = 64 << 10


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """Write all of ``data`` at ``offset``, in calls of at most WRITE_PIECE bytes (``os.pwrite``
    may also write less than asked)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view[:WRITE_PIECE], offset)
        view, offset = view[n:], offset + n


def fsync_dir(path: Path) -> None:
    """Make the renames in folder ``path`` durable. Best effort: a folder that cannot be opened or
    synced (some file systems refuse fsync on a folder) leaves them as durable as it makes them."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Writeback:
    """Starts the kernel writing the file behind us (Linux ``sync_file_range``, through ctypes:
    the os module lacks it), so the fsync that makes the publish durable finds almost nothing
    left to write (2 GiB: fsync 0.6 s -> 0.02 s). A no-op where unavailable."""

    def __init__(self, fd: int, pos: int):
        self.fd, self.flushed = fd, pos
        self.call = _sync_file_range()

    def written(self, pos: int) -> None:
        if self.call is not None and pos - self.flushed >= WRITEBACK_STEP:
            if self.call(self.fd, self.flushed, pos - self.flushed, 2) != 0:  # SYNC_FILE_RANGE_WRITE
                self.call = None
            self.flushed = pos


_SYNC_FILE_RANGE: list = []


def _sync_file_range():
    if not _SYNC_FILE_RANGE:
        fn = None
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                fn = ctypes.CDLL(None, use_errno=True).sync_file_range
                fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
                fn.restype = ctypes.c_int
            except (OSError, AttributeError):
                fn = None
        _SYNC_FILE_RANGE.append(fn)
    return _SYNC_FILE_RANGE[0]
