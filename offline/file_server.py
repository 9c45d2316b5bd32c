"""A static file server with switchable faults: the peer our transfer engine is tested against.

It serves a folder with strong ETags, Last-Modified, Range / If-Range and 416 like a real
server, keeps a log of every request, and on demand misbehaves the ways real networks and
servers do: cut connections, stalls, ignored Range, 429/503 with Retry-After, flipped
bytes, lying Content-Length, redirects, auth checks. A fault can also hold a body after N bytes
until the test says go (``hold_after``, ``Fault.wait_held``, ``Fault.release``): a client killed
while held is certainly mid-body, whatever the machine's load.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import re
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlsplit

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_BLOCK = 256 * 1024


@dataclass
class Fault:
    """One misbehaviour, applied to the next ``times`` matching requests (None = forever)."""

    times: int | None = 1
    status: int | None = None          # answer this status instead (e.g. 503, 429, 404)
    retry_after: str | Callable[[], str] | None = None  # Retry-After sent with ``status`` (a callable: made when sent)
    headers: dict | None = None        # extra headers sent with ``status`` (e.g. RateLimit)
    cut_after: int | None = None       # close the connection after this many body bytes
    stall: float = 0.0                 # sleep this long (after cut_after bytes, if set)
    ignore_range: bool = False         # answer 200 with the whole body to a ranged request
    corrupt_at: int | None = None      # flip the byte at this file offset
    length_delta: int = 0              # lie in Content-Length by this many bytes
    rate: int | None = None            # bytes per second
    content_range: str | None = None   # lie: send this Content-Range with a 206
    chunked: bool = False              # Transfer-Encoding: chunked, no Content-Length (generated content)
    close_delimited: bool = False      # no Content-Length, no chunking: the body ends when the server closes
    endless: bool = False              # the body never ends (chunked, or close-delimited): generated content gone wrong
    methods: tuple[str, ...] = ("GET",)
    hold_after: int | None = None      # send this many body bytes, then nothing until release() (the test's "go")
    held: threading.Event = field(default_factory=threading.Event, repr=False)  # set once a body reached hold_after
    holds: int = 0                     # how many bodies have reached hold_after
    _go: threading.Event = field(default_factory=threading.Event, repr=False)
    _count: threading.Lock = field(default_factory=threading.Lock, repr=False)

    _dropped: bool = field(default=False, repr=False)

    def release(self, drop: bool = False) -> None:
        """Held bodies go on (``drop``: their connections are closed instead), and later ones are no
        longer held."""
        self._dropped = self._dropped or drop
        self._go.set()

    def wait_held(self, timeout: float = 60.0) -> bool:
        """Block until a body is held (the client has every byte before ``hold_after`` and waits)."""
        return self.held.wait(timeout)

    def _hold(self) -> None:
        with self._count:
            self.holds += 1
        self.held.set()
        self._go.wait(HOLD_LIMIT)


HOLD_LIMIT = 600.0  # a hold nobody releases ends by itself (the server's stop() releases every hold)


@dataclass
class Request:
    method: str
    path: str
    status: int
    range: str | None
    if_range: str | None
    headers: dict
    bytes_sent: int = 0
    client: tuple = ()
    at: float = field(default_factory=time.time)  # when the request arrived (wall clock: Retry-After dates)


@dataclass
class _Route:
    faults: list[Fault] = field(default_factory=list)
    redirect: str | None = None
    auth: str | None = None
    disposition: str | None = None


class FileServer:
    """``with FileServer(root) as srv: srv.url("a.bin")`` — a threaded server on 127.0.0.1."""

    def __init__(self, root: str | Path, *, ranges: bool = True, validators: bool = True, etags: bool = True,
                 port: int = 0, tls: tuple[str, str] | None = None):
        self.root = Path(root).resolve()
        self.ranges = ranges
        self.validators = validators
        self.etags = etags  # False: Last-Modified is the only validator (many static and object stores)
        self.log: list[Request] = []
        self._routes: dict[str, _Route] = {}
        self._lock = threading.Lock()
        self._httpd = _HTTPServer(("127.0.0.1", port), _Handler)
        self._httpd.files = self
        self._httpd.tls = None
        if tls is not None:  # (certificate file, key file): HTTPS, the handshake in each handler thread
            self._httpd.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._httpd.tls.load_cert_chain(*tls)
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "FileServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()  # nothing listens any more; then held bodies end, their connections closed
        self.release_holds()

    def __enter__(self) -> "FileServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"{'https' if self._httpd.tls else 'http'}://127.0.0.1:{self.port}"

    def url(self, relpath: str) -> str:
        return f"{self.base_url}/{relpath.lstrip('/')}"

    # -- behaviour switches ------------------------------------------------------------------
    def _route(self, relpath: str) -> _Route:
        return self._routes.setdefault("/" + relpath.lstrip("/"), _Route())

    def fault(self, relpath: str, **kwargs) -> Fault:
        f = Fault(**kwargs)
        with self._lock:
            self._route(relpath).faults.append(f)
        return f

    def release_holds(self) -> None:
        """Every held body ends, its connection closed (a test that failed before its release must not
        leave threads waiting)."""
        with self._lock:
            for r in self._routes.values():
                for f in r.faults:
                    f.release(drop=True)

    def clear_faults(self) -> None:
        with self._lock:
            for r in self._routes.values():
                for f in r.faults:
                    f.release(drop=True)  # a body held by a fault that goes ends: its connection is closed
                r.faults.clear()

    def redirect(self, relpath: str, location: str) -> None:
        self._route(relpath).redirect = location

    def require_auth(self, relpath: str, authorization: str) -> None:
        self._route(relpath).auth = authorization

    def content_disposition(self, relpath: str, value: str) -> None:
        self._route(relpath).disposition = value

    # -- log helpers -------------------------------------------------------------------------
    def requests_for(self, relpath: str) -> list[Request]:
        path = "/" + relpath.lstrip("/")
        return [r for r in self.log if r.path == path]

    def bytes_sent_total(self, relpath: str | None = None) -> int:
        reqs = self.log if relpath is None else self.requests_for(relpath)
        return sum(r.bytes_sent for r in reqs)

    def _take_fault(self, path: str, method: str) -> Fault | None:
        with self._lock:
            route = self._routes.get(path)
            if not route:
                return None
            for f in route.faults:
                if method in f.methods and (f.times is None or f.times > 0):
                    if f.times is not None:
                        f.times -= 1
                    return f
        return None


def _not_modified(headers, etag: str, mtime: float) -> bool:
    """A conditional GET/HEAD that the file still satisfies (RFC 9110: If-None-Match wins)."""
    inm = headers.get("If-None-Match")
    if inm is not None:
        return any(tag.strip() in (etag, "*", "W/" + etag) for tag in inm.split(","))
    ims = headers.get("If-Modified-Since")
    try:
        when = email.utils.parsedate_to_datetime(ims) if ims else None
    except (TypeError, ValueError):
        return False
    return when is not None and int(mtime) <= when.timestamp()


def etag_of(st: os.stat_result) -> str:
    return '"' + hashlib.sha1(f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}".encode()).hexdigest()[:20] + '"'


class QuietDisconnects:
    """A client that drops its connection (a cut, a killed download; over TLS an EOF without
    close_notify) is ordinary here: no traceback on stderr for it; anything else is still printed."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, ssl.SSLEOFError)):
            super().handle_error(request, client_address)


class _HTTPServer(QuietDisconnects, ThreadingHTTPServer):
    daemon_threads = True
    files: FileServer
    tls: ssl.SSLContext | None

    def get_request(self):
        sock, addr = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr


class _Handler(BaseHTTPRequestHandler):
    """One request: refusals and faults first, then conditional requests, ranges, headers, body.

    A keep-alive connection reuses the handler; ``_serve`` sets the per-request state
    (``_rec``, ``_route``, ``_fault``) before anything reads it.
    """

    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    _rec: Request
    _route: _Route
    _fault: Fault | None

    def log_message(self, *args):  # keep test output clean
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    # -- the request, step by step -------------------------------------------------------------
    def _serve(self, head: bool) -> None:
        files = self.server.files
        path = unquote(urlsplit(self.path).path)
        self._rec = Request(self.command, path, 0, self.headers.get("Range"), self.headers.get("If-Range"),
                            dict(self.headers.items()), 0, self.client_address)
        files.log.append(self._rec)
        self._route = files._routes.get(path, _Route())
        self._fault = files._take_fault(path, self.command)
        if self._refused():
            return
        file = (files.root / path.lstrip("/")).resolve()
        if files.root not in file.parents or not file.is_file():
            return self._simple(404)
        fault = self._fault
        if fault and fault.stall and fault.cut_after is None:
            time.sleep(fault.stall)
            return self._drop()
        st = file.stat()
        etag = etag_of(st) if files.etags else "-"  # "-" matches no If-None-Match / If-Range value
        last_modified = email.utils.formatdate(st.st_mtime, usegmt=True)
        if files.validators and _not_modified(self.headers, etag, st.st_mtime):
            return self._send_head(304, {"ETag": etag, "Last-Modified": last_modified})
        span = self._span(st.st_size, etag, last_modified)
        if span is None:
            return self._simple(416, extra={"Content-Range": f"bytes */{st.st_size}"})
        start, end, status = span
        self._send_head(status, self._headers(status, start, end, st.st_size, etag, last_modified))
        if not head:
            self._body(file, start, end + 1)

    def _refused(self) -> bool:
        """Answer instead of serving the file: a redirect, a failed auth check, a fault's status."""
        route, fault = self._route, self._fault
        if route.redirect:
            self._simple(302, extra={"Location": route.redirect})
        elif route.auth and self.headers.get("Authorization") != route.auth:
            self._simple(401, extra={"WWW-Authenticate": "Bearer"})
        elif fault and fault.status:
            value = fault.retry_after() if callable(fault.retry_after) else fault.retry_after
            extra = {"Retry-After": value} if value else {}
            extra.update(fault.headers or {})
            self._simple(fault.status, extra=extra)
        else:
            return False
        return True

    def _span(self, size: int, etag: str, last_modified: str) -> tuple[int, int, int] | None:
        """(start, end inclusive, status) to send; None when the Range is unsatisfiable (416)."""
        whole = (0, size - 1, 200)
        rng = self.headers.get("Range")
        if not rng or not self.server.files.ranges or (self._fault and self._fault.ignore_range):
            return whole
        if_range = self.headers.get("If-Range")
        if if_range is not None and if_range not in (etag, last_modified):
            return whole  # the file changed: the whole new one
        m = _RANGE.match(rng.strip())
        if not m or not (m.group(1) or m.group(2)):
            return whole  # a Range we do not support (RFC 9110 allows ignoring it)
        a, b = m.group(1), m.group(2)
        if a:
            start, end = int(a), min(int(b), size - 1) if b else size - 1
        else:
            start, end = max(0, size - int(b)), size - 1
        if start >= size or start > end:
            return None
        return start, end, 206

    def _headers(self, status: int, start: int, end: int, size: int, etag: str, last_modified: str) -> dict:
        """The response headers for a body of bytes ``start..end``, with the fault's lies in them."""
        files, fault = self.server.files, self._fault
        if fault and fault.chunked:
            headers = {"Transfer-Encoding": "chunked"}
        elif fault and fault.close_delimited:
            headers = {"Connection": "close"}
            self.close_connection = True  # the body ends when we close
        else:
            headers = {"Content-Length": str(end - start + 1 + (fault.length_delta if fault else 0))}
        if files.ranges:
            headers["Accept-Ranges"] = "bytes"
        if files.validators:
            if files.etags:
                headers["ETag"] = etag
            headers["Last-Modified"] = last_modified
        if status == 206:
            headers["Content-Range"] = (fault.content_range if fault and fault.content_range
                                        else f"bytes {start}-{end}/{size}")
        if self._route.disposition:
            headers["Content-Disposition"] = self._route.disposition
        headers.setdefault("Content-Type", "application/octet-stream")
        return headers

    # -- bodies ----------------------------------------------------------------------------------
    def _body(self, file: Path, start: int, stop: int) -> None:
        fault = self._fault
        plain = fault is None or (fault.corrupt_at is None and fault.rate is None and fault.cut_after is None
                                  and fault.length_delta <= 0 and not fault.chunked and not fault.endless
                                  and fault.hold_after is None)
        if not plain:
            return self._faulty_body(file, start, stop, fault)
        with open(file, "rb") as f:
            try:
                self._rec.bytes_sent = self.connection.sendfile(f, offset=start, count=stop - start)
            except (BrokenPipeError, ConnectionResetError):
                pass

    def _faulty_body(self, file: Path, start: int, stop: int, fault: Fault) -> None:
        """Bytes ``start..stop`` block by block, paced, cut, flipped or chunked as the fault says."""
        if fault.endless:
            return self._endless(fault.chunked)
        rec, cut, hold = self._rec, fault.cut_after, fault.hold_after
        with open(file, "rb") as f:
            f.seek(start)
            pos, t0 = start, time.monotonic()
            while pos < stop:
                if hold is not None and rec.bytes_sent >= hold:
                    fault._hold()  # every byte so far is sent (the socket writer is unbuffered): wait for "go"
                    if fault._dropped:
                        return self._drop()
                    hold = None
                    t0 = time.monotonic() - rec.bytes_sent / fault.rate if fault.rate else t0
                n = min(_BLOCK, stop - pos)
                if hold is not None:
                    n = min(n, hold - rec.bytes_sent)
                if fault.rate:
                    n = min(n, max(1, fault.rate // 20))
                if cut is not None:
                    n = min(n, cut - rec.bytes_sent)
                    if n <= 0:
                        if fault.stall:
                            time.sleep(fault.stall)
                        return self._drop()
                chunk = bytearray(f.read(n))
                if fault.corrupt_at is not None and pos <= fault.corrupt_at < pos + len(chunk):
                    chunk[fault.corrupt_at - pos] ^= 0xFF
                try:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if fault.chunked else chunk)
                except (BrokenPipeError, ConnectionResetError):
                    return
                rec.bytes_sent += len(chunk)
                pos += len(chunk)
                if fault.rate:
                    ahead = rec.bytes_sent / fault.rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
        if fault.chunked:
            self.wfile.write(b"0\r\n\r\n")
        if fault.length_delta > 0:  # we promised more than we have: hang up like a broken server
            self._drop()

    def _endless(self, chunked: bool) -> None:
        block = b"\x5a" * _BLOCK
        frame = b"%x\r\n%s\r\n" % (len(block), block) if chunked else block
        while True:
            try:
                self.wfile.write(frame)
            except (BrokenPipeError, ConnectionResetError, OSError):
                return
            self._rec.bytes_sent += len(block)

    # -- answers ---------------------------------------------------------------------------------
    def _send_head(self, status: int, headers: dict, length: int | None = None) -> None:
        """Status line and headers (then ``Content-Length: length`` when given)."""
        self._rec.status = status
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _simple(self, status: int, extra: dict | None = None) -> None:
        body = f"{status}\n".encode()
        self._send_head(status, extra or {}, length=len(body))
        if self.command != "HEAD":
            self.wfile.write(body)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
