"""A fault-injecting HTTP proxy in front of one origin server on 127.0.0.1.

Each request is forwarded (method, path, headers, body) and its response streamed back, unless the
trial's fault draw for that request says otherwise: a reset (RST) or a clean close partway through
the body, a stall, a slow link, a 503/429 with Retry-After, or, from some moment on, a changed ETag
(the origin's bytes, announced as a new version). Absolute URLs the origin hands out for itself or
for another proxied origin (a Hub's CDN redirect, its pagination links) are rewritten to the proxy,
so every request of the run goes through one.

It counts the body bytes it sent, the number the trial reports as re-sent beyond the reference.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
BLOCK = 64 * 1024
KINDS = ("reset", "truncate", "stall", "slow", "busy")  # what a request's fault can be


@dataclass(frozen=True)
class FaultPolicy:
    """How often and how hard this proxy misbehaves (drawn per request from the trial's seed)."""

    rate: float = 0.0                # chance that a request gets a fault
    kinds: tuple[str, ...] = KINDS
    stall_s: tuple[float, float] = (0.5, 4.0)
    slow_bytes_per_s: int = 1 << 20  # a slow link's speed, for its first 1-4 s (then it recovers)
    etag_change_after: int | None = None  # from a path's n-th request on, its ETag names a new version (same bytes)


@dataclass
class Fault:
    kind: str
    at: float        # where in the body, as a fraction of it (reset, truncate, stall)
    stall_s: float
    status: int      # what "busy" answers


@dataclass
class Counters:
    requests: int = 0
    body_bytes: int = 0
    faults: dict[str, int] = field(default_factory=dict)


class FaultProxy:
    """``with FaultProxy(origin, policy, seed) as p: p.endpoint``; ``p.rewrite[origin] = endpoint`` of
    other proxies makes absolute URLs to those origins go through them."""

    def __init__(self, origin: str, policy: FaultPolicy, seed: int):
        self.origin = origin.rstrip("/")
        self.policy = policy
        self._seed = seed
        self._seen: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self.counters = Counters()
        self.rewrite: dict[str, str] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self
        self._server.handle_error = lambda request, address: None  # a client that hung up: no traceback
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.rewrite[self.origin] = self.endpoint
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def configure(self, policy: FaultPolicy, seed: int) -> None:
        """A new trial: its policy and seed, the counters from zero."""
        with self._lock:
            self.policy, self._seed = policy, seed
            self._seen.clear()
            self.counters = Counters()

    def draw(self, method: str, path: str) -> tuple[int, Fault | None]:
        """How many times this request was made before, and its fault. Each draw is seeded by the
        trial's seed, the request and that count, so the same requests meet the same faults whatever
        order concurrent ones arrive in (a replay of the seed repeats them)."""
        with self._lock:
            n = self._seen.get((method, path), 0)
            self._seen[(method, path)] = n + 1
            self.counters.requests += 1
            p = self.policy
            rng = random.Random(f"{self._seed}:{method}:{path}:{n}")
            if not p.kinds or rng.random() >= p.rate:
                return n, None
            fault = Fault(rng.choice(p.kinds), rng.random(), rng.uniform(*p.stall_s), rng.choice((503, 429)))
            self.counters.faults[fault.kind] = self.counters.faults.get(fault.kind, 0) + 1
            return n, fault

    def etag_changed(self, n: int) -> bool:
        return self.policy.etag_change_after is not None and n >= self.policy.etag_change_after

    def count(self, kind: str) -> None:
        """A fault that ``draw`` does not deal out (the ETag change), counted with the others."""
        with self._lock:
            self.counters.faults[kind] = self.counters.faults.get(kind, 0) + 1

    def sent(self, count: int) -> None:
        with self._lock:
            self.counters.body_bytes += count

    def rewrite_url(self, value: str) -> str:
        for origin, endpoint in self.rewrite.items():
            if value.startswith(origin):
                return endpoint + value[len(origin):]
        return value


def _new_etag(etag: str) -> str:
    """The ETag of the 'new version': the origin's, marked."""
    return etag[:-1] + '-chaos"' if etag.endswith('"') else etag + "-chaos"


def _old_etag(value: str) -> str | None:
    """The origin's ETag behind a marked one (None if ``value`` is not marked: a pre-change validator)."""
    return value.replace('-chaos"', '"') if '-chaos"' in value else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "chaos-proxy"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._relay()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def _relay(self) -> None:
        proxy: FaultProxy = self.server.proxy
        n, fault = proxy.draw(self.command, self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if self.command in ("POST", "PUT") else None
        if fault is not None and fault.kind == "busy":
            return self._reply_plain(fault.status, {"Retry-After": "1"})
        changed = proxy.etag_changed(n)
        if changed:
            proxy.count("etag-changed")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"}
        for name in ("If-Range", "If-None-Match", "If-Match"):
            if name in headers and changed:
                # the client's validator of the old version no longer matches; one of the new is the origin's
                headers[name] = _old_etag(headers[name]) or '"chaos-stale"'
        split = urlsplit(proxy.origin)
        conn = http.client.HTTPConnection(split.hostname, split.port, timeout=60)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
        except OSError:
            conn.close()
            return self._reply_plain(502, {})
        try:
            self._forward(proxy, resp, fault, changed)
        finally:
            conn.close()

    def _reply_plain(self, status: int, headers: dict) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _forward(self, proxy: FaultProxy, resp: http.client.HTTPResponse, fault: Fault | None, changed: bool) -> None:
        length = resp.getheader("Content-Length")
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            low = k.lower()
            if low in HOP_BY_HOP:
                continue
            if low in ("location", "link", "content-location"):
                v = proxy.rewrite_url(v) if low != "link" else _rewrite_link(proxy, v)
            elif low == "etag" and changed:
                v = _new_etag(v)
            self.send_header(k, v)
        if length is None:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command == "HEAD":
            return
        total = int(length) if length is not None else None
        if fault and fault.kind in ("reset", "truncate", "stall") and total:
            if not self._copy(proxy, resp, int(fault.at * total)):
                return
            if fault.kind != "stall":
                return self._break(fault.kind)
            time.sleep(fault.stall_s)
        slow = fault is not None and fault.kind == "slow"
        self._copy(proxy, resp, None, time.monotonic() + 1 + 3 * fault.at if slow else None)

    def _copy(self, proxy: FaultProxy, resp: http.client.HTTPResponse, count: int | None,
              slow_until: float | None = None) -> bool:
        """Up to ``count`` body bytes (None: the rest) to the client, at the slow link's speed until
        ``slow_until``; False if the client is gone."""
        while count is None or count > 0:
            chunk = resp.read(BLOCK if count is None else min(BLOCK, count))
            if not chunk:
                return True
            if slow_until is not None and time.monotonic() < slow_until:
                time.sleep(len(chunk) / proxy.policy.slow_bytes_per_s)
            try:
                self.wfile.write(chunk)
            except OSError:
                self.close_connection = True
                return False
            proxy.sent(len(chunk))
            if count is not None:
                count -= len(chunk)
        return True

    def _break(self, kind: str) -> None:
        """End the connection mid-body: an RST (``reset``) or a clean FIN (``truncate``)."""
        self.close_connection = True
        try:
            self.wfile.flush()
            if kind == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass


def _rewrite_link(proxy: FaultProxy, value: str) -> str:
    """Link: <URL>; rel="next", ... with each URL rewritten."""
    parts = []
    for piece in value.split(","):
        head, sep, tail = piece.partition(">")
        lead = head[: head.find("<") + 1]
        parts.append(lead + proxy.rewrite_url(head[len(lead):]) + sep + tail if "<" in head else piece)
    return ",".join(parts)
