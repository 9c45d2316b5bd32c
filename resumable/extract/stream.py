"""A forward-only file object over a decompressed archive, decompressed on a second thread.

zlib/bz2/lzma/zstandard release the GIL, so decompression runs beside tarfile's parsing and the
writes, as ``gzip -d | tar -x`` does with two processes. The byte limit is enforced on what the
decompressor actually produces, not on sizes the archive declares.
"""

from __future__ import annotations

import io
import queue
import threading
from pathlib import Path
from typing import Callable

from ..errors import ArchiveTooLargeError, ExtractError
from .formats import decompressed_chunks

_DONE = object()
_QUEUE_CHUNKS = 8  # x CHUNK_SIZE of decompressed data in flight at most


class DecompressingReader(io.RawIOBase):
    """``read``/``tell``/forward ``seek`` over the decompressed stream of ``archive``.

    Hashes the raw archive bytes as they are read (``hasher``) so a new archive is hashed for free.
    ``on_progress(raw_bytes_read)`` is called on the consumer's thread.
    """

    def __init__(self, archive: Path, fmt: str, *, limit: int, limit_hint: str,
                 hasher=None, on_progress: Callable[[int], None] | None = None):
        super().__init__()
        self._archive, self._fmt = archive, fmt
        self._limit, self._limit_hint = limit, limit_hint
        self._hasher = hasher
        self._on_progress = on_progress
        self._queue: queue.Queue = queue.Queue(_QUEUE_CHUNKS)
        self._stop = threading.Event()
        self._chunk = b""
        self._off = 0
        self._pos = 0
        self._raw_pos = 0
        self._eof = False
        self._file = open(archive, "rb", buffering=0)
        self._thread = threading.Thread(target=self._produce, name="decompress", daemon=True)
        self._thread.start()

    # -- producer (second thread) --
    def _produce(self) -> None:
        produced = 0
        try:
            for raw_pos, chunk in decompressed_chunks(self._file, self._fmt, str(self._archive),
                                                      self._hasher.update if self._hasher else None):
                produced += len(chunk)
                if produced > self._limit:
                    raise ArchiveTooLargeError(f"{self._archive}: expands to more than {self._limit_hint}; "
                                            f"refusing a possible decompression bomb (raise the limit if you "
                                            f"trust this archive)")
                if not self._put((raw_pos, chunk)):
                    return
            if self._hasher is not None:  # hash what follows the archive's end too: the digest is the file's
                while block := self._file.read(1 << 20):
                    self._hasher.update(block)
            self._put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    # -- consumer --
    def _next_chunk(self) -> bool:
        if self._eof:
            return False
        item = self._queue.get()
        if item is _DONE:
            self._eof = True
            return False
        if isinstance(item, BaseException):
            self._eof = True
            raise item
        raw_pos, self._chunk = item
        self._off = 0
        if self._on_progress is not None and raw_pos != self._raw_pos:
            self._on_progress(raw_pos)
        self._raw_pos = raw_pos
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = [self._chunk[self._off:]]
            while self._next_chunk():
                parts.append(self._chunk)
            self._chunk, self._off = b"", 0
            data = b"".join(parts)
            self._pos += len(data)
            return data
        avail = len(self._chunk) - self._off
        if n <= avail:  # the common case: one slice of the current chunk
            if self._off == 0 and n == len(self._chunk):
                data = self._chunk
            else:
                data = self._chunk[self._off:self._off + n]
            self._off += n
            self._pos += n
            return data
        parts = [self._chunk[self._off:]] if avail else []
        need = n - avail
        self._chunk, self._off = b"", 0
        while need and self._next_chunk():
            take = min(need, len(self._chunk))
            parts.append(self._chunk if take == len(self._chunk) else self._chunk[:take])
            self._off = take
            need -= take
        data = b"".join(parts)
        self._pos += len(data)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True  # forward only: tarfile's "r:" mode seeks to the next header, never back

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("seek from the end of a stream")
        if offset < self._pos:
            raise ExtractError(f"{self._archive}: the archive needs a backward seek "
                               f"(a hard link to a member not yet extracted?); it cannot be streamed")
        while offset > self._pos:
            avail = len(self._chunk) - self._off
            if not avail and not self._next_chunk():
                break
            step = min(offset - self._pos, len(self._chunk) - self._off)
            self._off += step
            self._pos += step
        return self._pos

    def finish(self) -> None:
        """Read to the end (so the raw hash covers the whole file), then stop the producer."""
        while self._next_chunk():
            pass
        self.close()

    def close(self) -> None:
        if not self.closed:
            self._stop.set()
            self._thread.join()
            self._file.close()
        super().close()
