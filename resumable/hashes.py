"""Expected hashes: parsing ``alg:hex`` / bare hex, and hashing off the main thread."""

from __future__ import annotations

import hashlib
import os
import queue
import string
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

ALGORITHMS = ("md5", "sha1", "sha256", "sha512")
# Bare hex is recognised by its length.
_BY_LENGTH = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}
READ_SIZE = 1 << 20


@dataclass(frozen=True)
class ExpectedHash:
    algorithm: str
    hexdigest: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"

    def new(self):
        return hashlib.new(self.algorithm)


def parse_hash(text: str | ExpectedHash | None, algorithm: str | None = None) -> ExpectedHash | None:
    """``sha256:HEX``, ``md5:HEX``, ``sha1:``, ``sha512:`` or bare hex (algorithm by length).

    ``algorithm`` names the algorithm of bare hex when the caller knows it (the guide's
    ``hash_algorithm=``); a prefix in ``text`` always wins.
    """
    if text is None or isinstance(text, ExpectedHash):
        return text
    raw = str(text).strip()
    if ":" in raw:
        algorithm, _, hexdigest = raw.partition(":")
        algorithm = algorithm.strip().lower().replace("-", "")
    else:
        hexdigest = raw
        if algorithm:
            algorithm = algorithm.lower().replace("-", "")
        else:
            algorithm = _BY_LENGTH.get(len(hexdigest))
            if algorithm is None:
                raise UsageError(
                    f"hash {raw!r}: bare hex of length {len(hexdigest)} matches no algorithm; "
                    f"write it as ALG:HEX with ALG one of {', '.join(ALGORITHMS)}"
                )
    hexdigest = hexdigest.strip().lower()
    if algorithm not in ALGORITHMS:
        raise UsageError(f"hash {raw!r}: unknown algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")
    want = hashlib.new(algorithm).digest_size * 2
    if len(hexdigest) != want or not set(hexdigest) <= set(string.hexdigits.lower()):
        raise UsageError(f"hash {raw!r}: a {algorithm} digest is {want} hex characters; check the value")
    return ExpectedHash(algorithm, hexdigest)


def file_digest(path: str | Path, algorithm: str = "sha256", *, start: int = 0, end: int | None = None) -> str:
    """Hex digest of ``path`` (or of bytes ``[start, end)``), read in large blocks."""
    h = hashlib.new(algorithm)
    update_from_file(h, path, start, end)
    return h.hexdigest()


def update_from_file(h, path: str | Path, start: int = 0, end: int | None = None) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return update_from_fd(h, fd, start, end)
    finally:
        os.close(fd)


def update_from_fd(h, fd: int, start: int = 0, end: int | None = None, buf: bytearray | None = None) -> int:
    """Feed ``h`` bytes ``[start, end)`` of open file ``fd`` (positional reads: the file offset is
    left alone, so another thread may write the same fd). Returns the byte count read."""
    done = 0
    view = memoryview(buf if buf is not None else bytearray(READ_SIZE))
    while end is None or start + done < end:
        want = len(view) if end is None else min(len(view), end - start - done)
        n = os.preadv(fd, [view[:want]], start + done)
        if not n:
            break
        h.update(view[:n])
        done += n
    return done


class _Region:
    __slots__ = ("fd", "start", "end", "then")

    def __init__(self, fd: int, start: int, end: int, then):
        self.fd, self.start, self.end, self.then = fd, start, end, then


class _Borrowed:
    __slots__ = ("view", "release")

    def __init__(self, view, release):
        self.view, self.release = view, release


class InlineHasher:
    """BackgroundHasher's interface, hashing on the caller's thread: for bodies too small to be
    worth a thread (starting one per file cost more than hashing 64 KiB)."""

    def __init__(self, algorithm: str):
        self._hash = hashlib.new(algorithm)

    def update(self, chunk, release=None) -> None:
        self._hash.update(chunk)
        if release is not None:
            release()

    def update_from_fd(self, fd: int, start: int, end: int, then=None) -> None:
        update_from_fd(self._hash, fd, start, end)
        if then is not None:
            then(end)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def detach(self):
        """The hash object, to go on with elsewhere."""
        return self._hash

    def close(self) -> None:
        pass


class BackgroundHasher:
    """Hashes chunks on a second thread (hashlib releases the GIL), fed through a bounded queue.

    The queue bound keeps memory flat: the downloader blocks if hashing falls behind.
    """

    _STOP = object()

    def __init__(self, algorithm: str, max_pending: int = 16):
        self._hash = hashlib.new(algorithm)
        self._queue: queue.Queue = queue.Queue(max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"hash-{algorithm}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buf = None
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            release = None
            try:
                if isinstance(item, _Region):  # bytes just written to the file: from the page cache
                    buf = buf or bytearray(READ_SIZE)
                    update_from_fd(self._hash, item.fd, item.start, item.end, buf)
                    if item.then is not None:
                        item.then(item.end)
                elif isinstance(item, tuple):  # (path, start, end): hash a region of a file
                    update_from_file(self._hash, *item)
                elif isinstance(item, _Borrowed):
                    release = item.release
                    self._hash.update(item.view)
                else:
                    self._hash.update(item)
            except BaseException as exc:  # reported by hexdigest()
                self._error = exc
            finally:
                if release is not None:
                    release()

    def update(self, chunk, release=None) -> None:
        """Hash ``chunk`` (bytes or a memoryview); ``release()`` is called once it is hashed, so the
        caller can reuse the buffer behind a view (no new memory per chunk)."""
        self._queue.put(_Borrowed(chunk, release) if release is not None else chunk)

    def update_from_file(self, path: str | Path, start: int = 0, end: int | None = None) -> None:
        self._queue.put((path, start, end))

    def update_from_fd(self, fd: int, start: int, end: int, then=None) -> None:
        """Hash bytes ``[start, end)`` of ``fd``, which must stay open until ``close()`` returns;
        ``then(end)`` runs on the hashing thread afterwards."""
        self._queue.put(_Region(fd, start, end, then))

    def hexdigest(self) -> str:
        return self.detach().hexdigest()

    def detach(self):
        """The hash object once everything queued is hashed, to go on with elsewhere."""
        self.close()
        if self._error:
            raise self._error
        return self._hash

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(self._STOP)
            self._thread.join()
