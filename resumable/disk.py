"""Getting bytes onto the disk: positional writes, early writeback, writes around the page cache,
and durable renames."""

from __future__ import annotations

import errno
import mmap
import os
import queue
import sys
import threading
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on Windows: no O_DIRECT there either
    fcntl = None

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


# O_DIRECT wants offsets, lengths and buffer addresses aligned to the device's logical block (512
# or 4096 bytes on Linux): 4096 fits both, and mmap'd staging buffers are page-aligned.
ALIGN = 4096
DIRECT_MIN = 16 << 20  # bodies this long or of unknown length; a small file is one buffered write
DIRECT_BUFFERS = 8  # staging buffers in flight: bytes received but not yet in the file stay under 8 MiB
DIRECT_STAGE = 1 << 20  # bytes a staging buffer holds (plus up to ALIGN carried over from the last one)
# Queued for writing as soon as this much is aligned: a fast link fills whole buffers anyway, and on
# a slow or stalled one a kill finds at most this much read but not in the file.
DIRECT_FLUSH = 64 << 10


class DirectWriter:
    """A sequential body written at ``fd`` from ``pos`` on with O_DIRECT, on a thread of its own.

    Through the page cache, a GiB costs this machine 0.2-0.3 CPU-s of copying into freshly
    allocated pages (slow to get back from the host once freed) and then writeback, on the thread
    that also decrypts TLS. Written around it from aligned staging buffers on a second thread, the
    disk works while the next records are read: 1 GiB over HTTPS, one connection, medians of
    interleaved runs against the page-cache path: 1.61 -> 1.33 s and 1.71 -> 1.47 CPU-s (5 runs),
    1.67 -> 1.41 s (7 runs, busier). Durability is unchanged: the caller still fsyncs before
    publishing, and a file written this way is not left in memory (nor read back from it).

    Each chunk is copied into the current staging buffer; once DIRECT_FLUSH bytes of it are
    aligned they go to the thread, the rest (< ALIGN) is carried into the next buffer. ``write`` and ``finish`` return the bytes
    that reached the file since the last call, so a caller that counts them never counts a byte
    the file lacks. ``finish`` writes the carried tail through the page cache; ``abort`` (on an
    error) does too, best effort, so a cut connection keeps every byte it received.
    """

    def __init__(self, fd: int, pos: int, flags: int):
        # A descriptor of its own: the caller closes ``fd`` after the body, and a number closed
        # and reused meanwhile must never receive this body's writes
        self.fd, self.pos, self.flags = os.dup(fd), pos, flags
        self._drained = False
        self._lead = -pos % ALIGN  # written through the page cache first: O_DIRECT starts aligned
        self.done = self.reported = 0  # bytes in the file / already returned to the caller
        self.error: BaseException | None = None
        self._free: "queue.SimpleQueue[mmap.mmap]" = queue.SimpleQueue()
        self._made = 0
        self._todo: queue.SimpleQueue = queue.SimpleQueue()
        self._stage, self._held = self._take(), 0
        self._thread = threading.Thread(target=self._run, name="direct-write", daemon=True)
        self._thread.start()

    @classmethod
    def start(cls, fd: int, pos: int, length: int | None) -> "DirectWriter | None":
        """A writer for a body of ``length`` bytes (None: unknown), or None where O_DIRECT does
        not apply: a short body, or a file system that refuses it. An unaligned ``pos`` (a resume)
        first writes up to the next ALIGN boundary through the page cache."""
        if (length is not None and length < DIRECT_MIN) or fcntl is None or not hasattr(os, "O_DIRECT"):
            return None
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)  # EINVAL where unsupported (tmpfs, FUSE, ...)
            if pos % ALIGN:
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)  # until the first bytes reach an aligned offset
        except OSError:
            return None
        return cls(fd, pos, flags)

    def _take(self) -> mmap.mmap:
        if self._made < DIRECT_BUFFERS:
            try:
                return self._free.get_nowait()
            except queue.Empty:
                self._made += 1
                return mmap.mmap(-1, DIRECT_STAGE + ALIGN)
        return self._free.get()  # all in flight: wait for the disk (bounded memory)

    def write(self, chunk) -> int:
        """Queue ``chunk``'s bytes; returns the bytes that reached the file since the last call."""
        if self.error is not None:
            raise self.error
        view = memoryview(chunk)
        if self._lead and view:
            lead, view = view[:self._lead], view[self._lead:]
            pwrite_all(self.fd, lead, self.pos)
            self._lead -= len(lead)
            self.pos += len(lead)
            self.done += len(lead)
            if not self._lead:
                fcntl.fcntl(self.fd, fcntl.F_SETFL, self.flags | os.O_DIRECT)
        while view:
            room = DIRECT_STAGE + ALIGN - self._held
            piece, view = view[:room], view[room:]
            self._stage[self._held:self._held + len(piece)] = piece
            self._held += len(piece)
            aligned = self._held - self._held % ALIGN
            if aligned >= (DIRECT_FLUSH if not view else DIRECT_STAGE):
                full, rest = self._stage, self._held - aligned
                self._stage = self._take()
                self._stage[:rest] = full[aligned:self._held]
                self._held = rest
                self._todo.put((full, aligned, self.pos))
                self.pos += aligned
        return self._collect()

    def _collect(self) -> int:
        done = self.done
        new, self.reported = done - self.reported, done
        return new

    def _run(self) -> None:
        while (item := self._todo.get()) is not None:
            buf, length, at = item
            try:
                if self.error is None:
                    self._write(memoryview(buf)[:length], at)
                    self.done += length
            except BaseException as exc:  # raised by the next write or by finish
                self.error = exc
            finally:
                self._free.put(buf)

    def _write(self, view: memoryview, at: int) -> None:
        while view:
            try:
                n = os.pwrite(self.fd, view, at)
            except OSError as exc:
                if exc.errno != errno.EINVAL or not self._buffered():  # the device wants another alignment
                    raise
                continue
            view, at = view[n:], at + n

    def _buffered(self) -> bool:
        """Back to the page cache for the rest of the body; False if it was already."""
        if not fcntl.fcntl(self.fd, fcntl.F_GETFL) & os.O_DIRECT:
            return False
        fcntl.fcntl(self.fd, fcntl.F_SETFL, self.flags)
        return True

    def _drain(self) -> None:
        """Wait for the queued writes, then write the carried tail through the page cache; once."""
        if self._drained:
            return
        self._drained = True
        aligned = self._held - self._held % ALIGN
        if aligned and self.error is None:
            self._todo.put((self._stage, aligned, self.pos))  # the tail beyond stays in the buffer
            self.pos += aligned
        self._todo.put(None)
        self._thread.join()
        try:
            try:
                fcntl.fcntl(self.fd, fcntl.F_SETFL, self.flags)  # shared with the caller's descriptor
            except OSError:
                pass
            tail = self._held - aligned
            self._held = 0
            if self.error is None and tail:
                pwrite_all(self.fd, memoryview(self._stage)[aligned:aligned + tail], self.pos)
                self.done += tail
                self.pos += tail
        finally:
            os.close(self.fd)

    def finish(self) -> int:
        """Every byte written; returns the bytes that reached the file since the last call."""
        self._drain()
        if self.error is not None:
            raise self.error
        return self._collect()

    def abort(self) -> None:
        """After an error elsewhere: keep what was received, as far as the disk lets us."""
        try:
            self._drain()
        except OSError:
            pass
