"""The Hub look-alike's HTTP side: which request gets which answer, and the bytes of files.

API routes (``/api/{models,datasets}/REPO[/revision/REV]``, ``.../tree/REV[/PATH]``, ``POST
.../paths-info/REV``) answer JSON; ``[/datasets]/REPO/resolve/REV/PATH`` serves a file (or, with
a CDN, redirects LFS files to a signed URL on the CDN port, which ``/cdn/...`` then serves), with
``Range``. Auth, gating, rate limits and the body faults come from the :class:`HubServer`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, unquote, urlsplit

from offline.file_server import QuietDisconnects
from offline.hub_repos import Entry, Repo

if TYPE_CHECKING:
    from offline.hub_server import HubServer

_CHUNK = 256 * 1024


@dataclass
class RequestRecord:
    """One request as a server saw it (``HubServer.log``)."""

    method: str
    path: str  # without the query
    query: str
    range: str | None
    status: int = 0
    bytes_sent: int = 0  # body bytes
    server: str = "hub"  # "hub" | "cdn"
    host: str = "127.0.0.1"
    port: int = 0
    authorization: bool = False
    done: bool = False  # the handler finished (bytes_sent is final)
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None  # time.monotonic() when the handler finished: overlaps show concurrency


class HubHTTPServer(QuietDisconnects, ThreadingHTTPServer):
    daemon_threads = True
    hub: HubServer
    role: str


class HubHandler(BaseHTTPRequestHandler):
    """Dispatch, then the API routes, file resolution and the CDN, auth and errors, bodies."""

    protocol_version = "HTTP/1.1"  # keep-alive, like the Hub
    server: HubHTTPServer

    def log_message(self, format: str, *args) -> None:  # quiet: the structured log is enough
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        self._record.status = code
        super().send_response(code, message)

    def do_GET(self) -> None:
        self._handle(body=True)

    def do_HEAD(self) -> None:
        self._handle(body=False)

    def do_POST(self) -> None:
        self._handle(body=True)

    # -- dispatch ----------------------------------------------------------------------------
    def _handle(self, body: bool) -> None:
        hub = self.server.hub
        url = urlsplit(self.path)
        self._record = RequestRecord(
            method=self.command,
            path=url.path,
            query=url.query,
            range=self.headers.get("Range"),
            server=self.server.role,
            host=self.headers.get("Host", ""),
            port=self.server.server_address[1],
            authorization="Authorization" in self.headers,
        )
        hub.log.append(self._record)
        self._body = body
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode()) if length else {}
        segments = [unquote(s) for s in url.path.split("/")[1:]]
        query = parse_qs(url.query)
        try:
            if self.server.role == "cdn":
                return self._cdn(segments, query)
            if hub._take_rate_limit():
                return self._rate_limited()
            if segments[:1] == ["api"] and len(segments) >= 4 and segments[1] in ("models", "datasets"):
                return self._api(segments[1][:-1], segments[2] + "/" + segments[3], segments[4:], query, form)
            repo_type = "model"
            if segments[:1] == ["datasets"]:
                repo_type, segments = "dataset", segments[1:]
            if len(segments) >= 5 and segments[2] == "resolve" and self.command in ("GET", "HEAD"):
                return self._resolve(repo_type, f"{segments[0]}/{segments[1]}", segments[3], "/".join(segments[4:]))
            self._error(404, "", "Not Found")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self._record.ended = time.monotonic()
            self._record.done = True

    def _api(self, repo_type: str, repo_id: str, rest: list[str], query: dict, form: dict) -> None:
        repo = self._authorized_repo(repo_type, repo_id)
        if repo is None:
            return
        if not rest or rest[0] == "revision":
            revision = rest[1] if len(rest) > 1 else "main"
            commit = self._commit(repo, revision)
            if commit:
                siblings = [{"rfilename": p} for p in sorted(repo.entries)]
                info = {"id": repo_id, "sha": commit, "private": repo.private, "gated": repo.gated, "siblings": siblings}
                self._json(info)
        elif rest[0] == "tree" and len(rest) >= 2:
            if self._commit(repo, rest[1]):
                recursive = query.get("recursive", ["false"])[0].lower() == "true"
                self._tree(repo, "/".join(rest[2:]), recursive, query)
        elif rest[0] == "paths-info" and len(rest) >= 2 and self.command == "POST":
            if self._commit(repo, rest[1]):
                wanted = form.get("paths", [])
                self._json([repo.entries[p].tree_json() for p in wanted if p in repo.entries])
        else:
            self._error(404, "", "Not Found")

    def _tree(self, repo: Repo, prefix: str, recursive: bool, query: dict) -> None:
        base = prefix.strip("/") + "/" if prefix.strip("/") else ""
        files = [e for p, e in sorted(repo.entries.items()) if p.startswith(base)]
        if base and not files:
            return self._error(404, "EntryNotFound", f"{prefix} does not exist on this revision")
        items: dict[str, dict] = {}
        for entry in files:
            rest = entry.path[len(base):]
            # directories between the prefix and the file (all of them when recursive)
            parts = rest.split("/")[:-1]
            for depth in range(1, (len(parts) if recursive else min(1, len(parts))) + 1):
                d = base + "/".join(parts[:depth])
                items.setdefault(d, {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d})
            if recursive or "/" not in rest:
                items[entry.path] = entry.tree_json()
        listing = sorted(items.values(), key=lambda i: i["path"])
        page_size = self.server.hub.tree_page_size
        headers = {}
        if page_size:
            start = int(query.get("cursor", ["0"])[0])
            if start + page_size < len(listing):
                nxt = f"{self.server.hub.endpoint}{urlsplit(self.path).path}?recursive={str(recursive).lower()}&cursor={start + page_size}"
                headers["Link"] = f'<{nxt}>; rel="next"'
            listing = listing[start : start + page_size]
        self._json(listing, headers)

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        repo = self._authorized_repo(repo_type, repo_id)
        if repo is None:
            return
        commit = self._commit(repo, revision)
        if commit is None:
            return
        entry = repo.entries.get(path)
        if entry is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist on \"{revision}\"")
        headers = {"X-Repo-Commit": commit, "ETag": f'"{entry.etag}"', "Accept-Ranges": "bytes"}
        hub = self.server.hub
        if hub.cdn and entry.sha256:
            expires = f"{time.time() + hub.cdn_ttl:.3f}"  # sub-second, so short test TTLs are exact
            cdn_path = f"/cdn/{repo_type}s/{repo_id}/{commit}/{quote(path)}"
            location = f"{hub.cdn_endpoint}{cdn_path}?expires={expires}&signature={hub._sign(cdn_path, expires)}"
            headers.update({"Location": location, "X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
            return self._send(302, b"", headers)
        self._file(entry, headers)

    def _cdn(self, segments: list[str], query: dict) -> None:
        # /cdn/{models|datasets}/{org}/{name}/{commit}/{path...}?expires=&signature=
        if len(segments) < 6 or segments[0] != "cdn" or segments[1] not in ("models", "datasets"):
            return self._send(404, b"NoSuchKey", {"Content-Type": "text/plain"})
        path = urlsplit(self.path).path
        expires = query.get("expires", ["0"])[0]
        signature = query.get("signature", [""])[0]
        if not hmac.compare_digest(signature, self.server.hub._sign(path, expires)):
            return self._send(403, b"SignatureDoesNotMatch", {"Content-Type": "text/plain"})
        if time.time() > float(expires):
            return self._send(403, b"Request has expired", {"Content-Type": "text/plain"})
        repo = self.server.hub.repo(f"{segments[2]}/{segments[3]}", segments[1][:-1])
        entry = repo.entries.get("/".join(segments[5:])) if repo and repo.commit == segments[4] else None
        if entry is None:
            return self._send(404, b"NoSuchKey", {"Content-Type": "text/plain"})
        self._file(entry, {"ETag": f'"{entry.etag}"', "Accept-Ranges": "bytes"})

    # -- auth, revisions, errors -------------------------------------------------------------
    def _authorized_repo(self, repo_type: str, repo_id: str) -> Repo | None:
        hub = self.server.hub
        auth = self.headers.get("Authorization", "")
        given = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        if given is not None and hub.token is not None and given != hub.token:
            self._error(401, "", "Invalid credentials in Authorization header")
            return None
        valid = given is not None and given == hub.token
        repo = hub.repo(repo_id, repo_type)
        if repo is None or (repo.private and not valid):
            # the Hub hides private repositories behind the same answer as missing ones
            self._error(401 if not valid else 404, "RepoNotFound", "Repository not found")
            return None
        if repo.gated and not valid:
            self._error(401, "GatedRepo", f"Access to {repo_type} {repo_id} is restricted. You must have access to it and be authenticated to access it. Please log in.")
            return None
        if repo.gated == "denied":
            self._error(403, "GatedRepo", f"Access to {repo_type} {repo_id} is restricted and you are not in the authorized list. Visit the repository page to ask for access.")
            return None
        return repo

    def _commit(self, repo: Repo, revision: str) -> str | None:
        commit = repo.resolve(revision)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit

    def _error(self, status: int, code: str, message: str) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), headers)

    def _rate_limited(self) -> None:
        hub = self.server.hub
        headers = {
            "Retry-After": str(hub.retry_after),
            "RateLimit": f'"api";r=0;t={hub.retry_after}',
            "RateLimit-Policy": '"fixed window";"api";q=500;w=300',
            "Content-Type": "application/json",
        }
        self._send(429, json.dumps({"error": "rate limited"}).encode(), headers)

    # -- bodies ------------------------------------------------------------------------------
    def _json(self, value, headers: dict | None = None) -> None:
        self._send(200, json.dumps(value).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _send(self, status: int, body: bytes, headers: dict) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self._body and body:
            self.wfile.write(body)
            self._record.bytes_sent = len(body)

    def _file(self, entry: Entry, headers: dict) -> None:
        start, end, status = 0, entry.size, 200
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if wanted and (if_range is None or if_range.strip('W/"') == entry.etag):
            span = _parse_range(wanted, entry.size)
            if span is None:
                headers["Content-Range"] = f"bytes */{entry.size}"
                return self._send(416, b"", headers)
            if span is not _WHOLE:
                start, end, status = span[0], span[1], 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{entry.size}"
        self.send_response(status)
        for name, value in {"Content-Type": "application/octet-stream", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        if self._body:
            self._stream(entry.file, start, end)

    def _stream(self, file: Path, start: int, end: int) -> None:
        hub = self.server.hub
        cut = hub._take_cut()
        stop = end if cut is None else min(end, start + cut)
        began = time.monotonic()
        with open(file, "rb") as f:
            f.seek(start)
            pos = start
            while pos < stop:
                rate = hub.slow
                chunk = f.read(min(_CHUNK if not rate else max(1024, int(rate / 20)), stop - pos))
                if not chunk:
                    break
                flip = hub.corrupt_at
                if flip is not None and pos <= flip < pos + len(chunk):
                    chunk = bytearray(chunk)
                    chunk[flip - pos] ^= 0xFF
                    chunk = bytes(chunk)
                self.wfile.write(chunk)
                pos += len(chunk)
                self._record.bytes_sent = pos - start
                if rate:  # pace to the rate since the body began
                    ahead = (pos - start) / rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
        if cut is not None and stop < end:
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass



_WHOLE = (0, -1)  # a Range we do not support: serve the whole file with 200 (allowed by RFC 9110)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=N-``, ``bytes=N-M`` or ``bytes=-N`` as a half-open span; None when unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return _WHOLE
    first, _, last = spec.strip().partition("-")
    try:
        if not first:
            n = int(last)
            return (max(0, size - n), size) if n > 0 and size > 0 else None
        start = int(first)
        stop = min(size, int(last) + 1) if last else size
    except ValueError:
        return _WHOLE
    return (start, stop) if start < size and start < stop else None
