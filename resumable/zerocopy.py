"""A response body moved from the socket into the file by the kernel (Linux ``splice(2)``).

For a plain-HTTP body read from its start, the bytes go socket -> pipe -> page cache without
ever being copied into Python: one copy in the kernel instead of two plus a trip through the
interpreter (2 GiB on loopback: 0.6 CPU seconds less). The hashing thread then reads each
region once, from the page cache, right behind the transfer. Anything else (TLS, chunked or
decoded bodies, other systems, a file system that refuses splice) uses the ordinary read path.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import sys
from typing import Iterator

from . import wire
from .disk import WRITE_PIECE

PIPE_SIZE = 1 << 20  # bytes per splice; the default pipe (64 KiB) would mean 16x the system calls
_F_SETPIPE_SZ = 1031
# The file system cannot take spliced pages: copy from the pipe instead (data already in it).
_NO_SPLICE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV}


def body_socket(fp) -> socket.socket | None:
    """The plain TCP socket under http.client's buffered reader ``fp``, when splice can read it."""
    if not hasattr(os, "splice") or not sys.platform.startswith("linux"):
        return None
    sock = wire.socket_of(fp)
    if type(sock) is not socket.socket or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None  # TLS sockets (ssl.SSLSocket) and anything unusual read the ordinary way
    return sock


class SpliceRefused(Exception):
    """The socket refused splice before any byte moved: read the body the ordinary way."""


class SocketError(Exception):
    """Reading the socket failed (reset, timeout, ...): ``error`` is the OSError behind it."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


def splice_into(sock: socket.socket, fd: int, pos: int, left: int | None, probe=None) -> Iterator[int]:
    """Move up to ``left`` bytes (None: until EOF) from ``sock`` into ``fd`` at ``pos``; yields the
    byte count of each piece once it is in the file. ``probe`` (ramp.LinkProbe) learns whether
    each read waited for data, and may stop the transfer between pieces.

    Socket errors and read timeouts raise SocketError; file errors (ENOSPC, ...) raise from the
    write side as ``os.pwrite`` would. Raises SpliceRefused when the first splice is refused,
    before anything was consumed.
    """
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            import fcntl

            fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size: the default pipe works, with smaller pieces
        sfd, timeout = sock.fileno(), sock.gettimeout()
        first, copy = True, False
        waited = False
        while left is None or left > 0:
            if probe is not None and not waited and probe.stop_here():
                return
            want = PIPE_SIZE if left is None else min(PIPE_SIZE, left)
            try:
                n = os.splice(sfd, w, want)
            except BlockingIOError:  # a socket with a timeout is non-blocking underneath
                waited = True
                _wait_readable(sfd, timeout)
                continue
            except OSError as exc:
                if first and exc.errno in _NO_SPLICE:
                    raise SpliceRefused(str(exc)) from None
                raise SocketError(exc) from None
            first = False
            if not n:
                return
            if probe is not None:
                probe.note(waited, n)
            waited = False
            copy = _drain(r, fd, n, pos, copy)
            pos += n
            if left is not None:
                left -= n
            yield n
    finally:
        os.close(r)
        os.close(w)


def _drain(r: int, fd: int, n: int, pos: int, copy: bool) -> bool:
    """Empty the pipe's ``n`` bytes into ``fd`` at ``pos``; returns whether to copy from now on."""
    done = 0
    while done < n:
        if not copy:
            try:
                done += os.splice(r, fd, min(n - done, WRITE_PIECE), offset_dst=pos + done)  # see disk.py
                continue
            except OSError as exc:
                if exc.errno not in _NO_SPLICE:
                    raise
                copy = True
        data = os.read(r, n - done)
        view = memoryview(data)
        while view:
            k = os.pwrite(fd, view, pos + done)
            view, done = view[k:], done + k
    return copy


def _wait_readable(fd: int, timeout: float | None) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    if not poller.poll(None if timeout is None else max(0, int(timeout * 1000))):
        raise SocketError(TimeoutError("timed out"))
