"""Reading a response body: straight from the socket file into reused buffers, spliced by the
kernel into the file, or through urllib3's ``read1``; network errors become TransferErrors."""

from __future__ import annotations

import queue
import select
import ssl
import threading
from typing import Iterator

import requests
import urllib3

from . import http, wire, zerocopy
from .disk import DirectWriter, Writeback, pwrite_all
from .errors import TransferError
from .hashes import BackgroundHasher

READ_SIZE = 1 << 20  # socket read size, whatever chunk size a caller asks for: small reads cost 2x
HASH_BUFFERS = 16  # reads waiting for the hashing thread at most (memory stays flat: 17 x READ_SIZE)
HASH_STEP = 4 << 20  # spliced bytes are handed to the hashing thread in regions of this size


def read_raw(resp: requests.Response, url: str):
    """The raw body in reads of up to READ_SIZE; network errors become transient TransferErrors.

    ``read1`` returns what has arrived instead of waiting to fill the buffer, so a cut or
    stalled connection loses no received bytes.
    """
    raw = resp.raw
    while True:
        try:
            chunk = raw.read1(READ_SIZE, decode_content=False)
        except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, ConnectionError,
                TimeoutError) as exc:
            raise TransferError(f"{http.redact(url)}: {http.describe_network_error(exc)}") from None
        if not chunk:
            return
        yield chunk


class Buffer:
    __slots__ = ("data", "pool")

    def __init__(self, pool: "BufferPool", size: int):
        self.data, self.pool = bytearray(size), pool

    def release(self) -> None:
        self.pool.free.put(self)


class BufferPool:
    """Up to ``count`` buffers of ``size`` bytes, made on first need and then reused: every read
    lands in memory that is already mapped.

    Allocating a fresh 1 MiB object per read makes the allocator map (and the kernel fault in)
    new pages for every chunk; on machines that hand freed memory back to their host that alone
    doubled the wall time. ``get`` blocks while all buffers are in use (bounded memory).
    """

    def __init__(self, count: int, size: int = READ_SIZE):
        self.free: "queue.SimpleQueue[Buffer]" = queue.SimpleQueue()
        self.size, self.left = max(1, size), count
        self._lock = threading.Lock()

    def get(self) -> Buffer:
        try:
            return self.free.get_nowait()
        except Exception:  # queue.Empty
            with self._lock:
                if self.left > 0:
                    self.left -= 1
                    return Buffer(self, self.size)
            return self.free.get()


class _Unpooled:
    @staticmethod
    def release() -> None:
        pass


_UNPOOLED = _Unpooled()


def body_into(resp: requests.Response, url: str, pool: BufferPool, direct=None, probe=None, fill_lock=None):
    """The body as (memoryview, buffer) pairs, each view into a pooled buffer that the consumer
    releases when done with it. One ``readinto1`` per read: what has arrived, up to READ_SIZE, so
    a cut connection loses no received bytes (as ``read_raw``). ``direct``: the (socket file, bytes
    left) of ``wire.plain_body``, when the caller already read part of it. ``probe``: see
    ``zerocopy.splice_into``. ``fill_lock``: held while the TLS records at hand fill a buffer
    (``_fill``); the connections of one download share it."""
    direct = direct or wire.plain_body(resp)
    if direct is None:
        for chunk in read_raw(resp, url):
            yield memoryview(chunk), _UNPOOLED
        return
    fp, left = direct
    sock = wire.socket_of(fp)
    tls = isinstance(sock, ssl.SSLSocket)
    ready = _ready(sock) if probe is not None else None
    while left is None or left > 0:
        if probe is not None and probe.stop_here():
            return
        waited = probe is not None and not ready()
        buf = pool.get()
        view = memoryview(buf.data)
        if left is not None and left < len(view):
            view = view[:left]
        try:
            n = fp.readinto1(view)
        except (OSError, ValueError) as exc:  # socket errors, timeouts, a closed file
            buf.release()
            raise TransferError(f"{http.redact(url)}: {http.describe_network_error(exc)}") from None
        if n and tls:
            if fill_lock is None:
                n = _fill(sock, view, n)
            else:
                with fill_lock:
                    n = _fill(sock, view, n)
        if not n:
            buf.release()
            return
        if probe is not None:
            probe.note(waited, n)
        if left is not None:
            left -= n
        yield view[:n], buf
    if left == 0:
        finish(resp)


def _ready(sock):
    """A callable telling whether body bytes can be read from ``sock`` without waiting (decrypted
    bytes in the TLS object, or data in the kernel's buffer)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if isinstance(sock, ssl.SSLSocket):
        return lambda: sock.pending() > 0 or bool(poller.poll(0))
    return lambda: bool(poller.poll(0))


def _fill(sock: ssl.SSLSocket, view: memoryview, n: int) -> int:
    """Read on into ``view[n:]`` the TLS records at hand, never waiting for more.

    A TLS read returns one record (16 KiB at most) however large the buffer: 64 reads, each
    written, hashed and handed over on its own, per MiB. Filling the buffer halves the time and
    CPU of an HTTPS download; a cut connection still loses nothing received. The socket reads
    straight into the buffer, non-blocking for the loop: the read that finds nothing ends it (a
    poll per record, and http.client's buffered file, cost ~0.2 CPU-s per GiB). A read that
    fails ends the filling too: the next read meets the same error, after these bytes are written.
    """
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    tls = wire.tls_object(sock)  # one record per call from OpenSSL, without ssl.SSLSocket's Python layers
    try:
        while n < len(view):
            try:
                m = tls.read(len(view) - n, view[n:]) if tls is not None else sock.recv_into(view[n:])
            except (OSError, ValueError):  # SSLWantReadError (nothing at hand), or a real error
                break
            if not m:
                break
            n += m
    finally:
        try:
            sock.settimeout(timeout)
        except OSError:
            pass  # closed meanwhile (the watchdog): the next read says so
    return n


def finish(resp: requests.Response) -> None:
    """The whole body went around http.client: the connection goes back to the pool for the next
    request (keep-alive), or is closed with the response."""
    guard = getattr(resp, "guard", None)
    if guard is not None:
        guard.attach(None)  # the connection goes back to the pool: no longer this response's to cut
    wire.end_plain_body(resp)


def receive_into(resp: requests.Response, url: str, fd: int, pos: int, total: int | None,
                 hasher: BackgroundHasher, probe=None) -> Iterator[int]:
    """Write the body into ``fd`` from ``pos`` on, feeding ``hasher``; yields each piece's size.

    Spliced by the kernel where it pays (plain HTTP on Linux, bodies larger than one read: no
    copy through Python), else read into pooled buffers that the hasher hands back once hashed.
    ``probe`` (ramp.LinkProbe) may end the reading early, between pieces, with every piece
    written and handed to the hasher; the rest of the body is then still to be read.
    """
    flusher = Writeback(fd, pos)
    direct = wire.plain_body(resp)
    sock = zerocopy.body_socket(direct[0]) if direct and (direct[1] is None or direct[1] > READ_SIZE) else None
    if sock is not None:
        rest = yield from _splice(resp, url, fd, pos, direct, sock, hasher, flusher, probe)
        if rest is None:
            return
        pos, direct = rest
    # reused: fresh memory per read costs page faults; small files get small buffers
    pool = BufferPool(HASH_BUFFERS + 1, READ_SIZE if total is None else min(READ_SIZE, max(1, total - pos)))
    writer = DirectWriter.start(fd, pos, None if total is None else total - pos)
    if writer is not None:
        yield from _receive_direct(body_into(resp, url, pool, direct, probe), writer, hasher)
        return
    for chunk, buf in body_into(resp, url, pool, direct, probe):
        pwrite_all(fd, chunk, pos)
        hasher.update(chunk, buf.release)
        pos += len(chunk)
        flusher.written(pos)
        yield len(chunk)


def _receive_direct(chunks, writer: DirectWriter, hasher: BackgroundHasher) -> Iterator[int]:
    """``receive_into`` around the page cache (disk.DirectWriter): yields the bytes that reached the
    file, so the caller never counts one the file lacks."""
    try:
        for chunk, buf in chunks:
            done = writer.write(chunk)  # copied: the buffer goes back to the pool once hashed
            hasher.update(chunk, buf.release)
            if done:
                yield done
        done = writer.finish()
    except BaseException:
        writer.abort()
        raise
    if done:
        yield done


def _splice(resp: requests.Response, url: str, fd: int, pos: int, direct, sock, hasher: BackgroundHasher,
            flusher: Writeback, probe=None):
    """The body spliced from ``sock`` into ``fd`` (see ``receive_into``). Returns None once the body
    is in, or (position, what ``body_into`` reads on from) when the file system refused splice."""
    fp, left = direct
    try:
        # Body bytes that http.client buffered along with the headers go first.
        head = fp.peek(1)[:left] if left is None or left > 0 else b""
        head = fp.read(len(head)) if head else b""
    except (OSError, ValueError) as exc:
        raise TransferError(f"{http.redact(url)}: {http.describe_network_error(exc)}") from None
    if head:
        pwrite_all(fd, head, pos)
        hasher.update(head)
        pos += len(head)
        left = None if left is None else left - len(head)
        yield len(head)
    hashed = pos
    try:
        for n in zerocopy.splice_into(sock, fd, pos, left, probe):
            pos += n
            if pos - hashed >= HASH_STEP:
                # The hashing thread also starts the region's writeback once it has read
                # it: that work leaves the thread moving the bytes.
                hasher.update_from_fd(fd, hashed, pos, then=flusher.written)
                hashed = pos
            yield n
            if left is not None:
                left -= n
    except zerocopy.SpliceRefused:
        return pos, (fp, left)  # nothing more consumed: the ordinary path reads the rest
    except zerocopy.SocketError as exc:
        raise TransferError(f"{http.redact(url)}: {http.describe_network_error(exc.error)}") from None
    hasher.update_from_fd(fd, hashed, pos)
    if left == 0:
        finish(resp)
    return None
