"""A Hugging Face Hub-compatible HTTP server over a folder of repositories (standard library only).

``repos_root/<org>/<name>/...`` is a model repository, ``repos_root/datasets/<org>/<name>/...`` a
dataset repository: plain folders of files. A repository has exactly one commit, whose sha is
derived from its content, so editing a file gives a new commit. ``main`` resolves to it; an
optional ``.hub.json`` in the repository folder (never served) adds
``{"branches": [...], "tags": [...], "private": true, "gated": true | "denied"}``.

It answers what ``huggingface_hub`` and our snapshot engine ask (see the field notes):
``/api/{models,datasets}/REPO[/revision/REV]``, ``.../tree/REV[/PATH]`` (recursive, paged through
``Link`` when ``tree_page_size`` is set), ``POST .../paths-info/REV`` and ``HEAD``/``GET``
``[/datasets]/REPO/resolve/REV/PATH`` with ``Range``. Files over ``lfs_threshold`` bytes or
matching ``lfs_patterns`` are LFS (tree ``lfs.oid`` = sha256, ``ETag`` = sha256); others carry
their git blob sha1. With ``cdn=True`` LFS resolves redirect (302, absolute Location) to a second
port with a signed URL that expires after ``cdn_ttl`` seconds. ``X-Xet-Hash`` is never sent, so
clients stay on plain HTTP.

Fault switches (attributes, change them at any time): ``cut_after`` (the next ``cut_count`` file
bodies stop after that many bytes and the connection drops), ``rate_limit`` (the next N requests
to the hub port get 429 with ``Retry-After`` and ``RateLimit`` headers, waiting ``retry_after``
seconds), ``slow`` (file bodies throttled to that many bytes/s), ``corrupt_at`` (the byte at
that offset is flipped in every file body). Every request is appended to
``log`` as a :class:`RequestRecord`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub's own limit for plain git files
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.gguf", "*.onnx", "*.parquet", "*.arrow")
CONFIG_NAME = ".hub.json"
_CHUNK = 256 * 1024


@dataclass(frozen=True)
class Entry:
    """One file of a repository at its single commit."""

    path: str
    file: Path
    size: int
    blob: str  # git blob sha1: sha1(b"blob <size>\0" + content)
    sha256: str | None  # set for LFS files only

    @property
    def pointer(self) -> bytes:
        """The git-lfs pointer file that git stores in place of an LFS file."""
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    @property
    def oid(self) -> str:
        """Tree ``oid``: the blob sha1 of the content, or of the pointer for LFS files (as on the Hub)."""
        if not self.sha256:
            return self.blob
        pointer = self.pointer
        return hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()

    @property
    def etag(self) -> str:
        return self.sha256 or self.blob

    def tree_json(self) -> dict:
        item = {"type": "file", "oid": self.oid, "size": self.size, "path": self.path}
        if self.sha256:
            item["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": len(self.pointer)}
        return item


@dataclass(frozen=True)
class Repo:
    repo_type: str  # "model" | "dataset"
    repo_id: str
    commit: str
    entries: dict[str, Entry]
    refs: frozenset[str]  # branch and tag names
    private: bool
    gated: bool | str

    def resolve(self, revision: str) -> str | None:
        return self.commit if revision == self.commit or revision in self.refs else None


@dataclass
class RequestRecord:
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


class _Digests:
    """(path, size, mtime) -> (blob sha1, sha256): a repo is re-hashed only where files changed."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, int], tuple[str, str]] = {}
        self._lock = threading.Lock()

    def get(self, file: Path, st: os.stat_result) -> tuple[str, str]:
        key = (str(file), st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._cache.get(key)
        if hit:
            return hit
        blob = hashlib.sha1(b"blob %d\0" % st.st_size)
        sha = hashlib.sha256()
        with open(file, "rb") as f:
            while chunk := f.read(1 << 20):
                blob.update(chunk)
                sha.update(chunk)
        value = (blob.hexdigest(), sha.hexdigest())
        with self._lock:
            self._cache[key] = value
        return value


class HubServer:
    """Start with ``with HubServer(root) as hub:``; ``hub.endpoint`` is the base URL."""

    def __init__(
        self,
        repos_root: str | Path,
        *,
        cdn: bool = False,
        token: str | None = None,
        lfs_threshold: int = LFS_THRESHOLD,
        lfs_patterns: tuple[str, ...] = LFS_PATTERNS,
        cdn_ttl: float = 3600.0,
        tree_page_size: int | None = None,
    ) -> None:
        self.repos_root = Path(repos_root)
        self.cdn, self.token, self.cdn_ttl = cdn, token, cdn_ttl
        self.lfs_threshold, self.lfs_patterns = lfs_threshold, lfs_patterns
        self.tree_page_size = tree_page_size
        # fault switches
        self.cut_after: int | None = None
        self.cut_count: int = 1
        self.rate_limit: int = 0
        self.retry_after: int = 1
        self.slow: float | None = None
        self.corrupt_at: int | None = None  # flip the byte at this file offset in every body sent
        self.log: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._digests = _Digests()
        self._secret = os.urandom(16)
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self.endpoint = ""
        self.cdn_endpoint = ""

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "HubServer":
        for role in ("hub", "cdn") if self.cdn else ("hub",):
            httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
            httpd.hub, httpd.role = self, role
            thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), name=f"hub-server-{role}", daemon=True)
            thread.start()
            self._servers.append(httpd)
            self._threads.append(thread)
        self.endpoint = f"http://127.0.0.1:{self._servers[0].server_address[1]}"
        if self.cdn:
            self.cdn_endpoint = f"http://127.0.0.1:{self._servers[1].server_address[1]}"
        return self

    def stop(self) -> None:
        for httpd in self._servers:
            httpd.shutdown()
            httpd.server_close()
        for thread in self._threads:
            thread.join(5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers for tests -----------------------------------------------------------------
    def repo(self, repo_id: str, repo_type: str = "model") -> Repo | None:
        return self._load(repo_type, repo_id)

    def settle(self, timeout: float = 10.0) -> list[RequestRecord]:
        """Wait until every logged request has finished (the client may read before the log is final)."""
        deadline = time.monotonic() + timeout
        while any(not r.done for r in list(self.log)) and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.log)

    def requests(self, *, server: str | None = None, contains: str = "", method: str | None = None) -> list[RequestRecord]:
        """The log filtered by server role, a substring of the path and the method."""
        return [
            r
            for r in list(self.log)
            if (server is None or r.server == server) and contains in r.path and (method is None or r.method == method)
        ]

    # -- repository model ------------------------------------------------------------------
    def _load(self, repo_type: str, repo_id: str) -> Repo | None:
        parts = repo_id.split("/")
        if len(parts) != 2 or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            return None
        folder = self.repos_root / ("datasets" if repo_type == "dataset" else "") / parts[0] / parts[1]
        if not folder.is_dir() or (repo_type == "model" and parts[0] == "datasets"):
            return None
        config = json.loads((folder / CONFIG_NAME).read_text()) if (folder / CONFIG_NAME).is_file() else {}
        entries: dict[str, Entry] = {}
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if d != ".git")
            for name in sorted(filenames):
                file = Path(dirpath) / name
                rel = file.relative_to(folder).as_posix()
                if rel == CONFIG_NAME:
                    continue
                st = file.stat()
                blob, sha = self._digests.get(file, st)
                lfs = st.st_size > self.lfs_threshold or any(fnmatch.fnmatch(name, p) for p in self.lfs_patterns)
                entries[rel] = Entry(rel, file, st.st_size, blob, sha if lfs else None)
        commit = hashlib.sha1("".join(f"{p}\0{e.blob}\n" for p, e in sorted(entries.items())).encode()).hexdigest()
        refs = frozenset(["main", *config.get("branches", []), *config.get("tags", [])])
        return Repo(repo_type, repo_id, commit, entries, refs, bool(config.get("private")), config.get("gated", False))

    def _sign(self, path: str, expires: str) -> str:
        return hmac.new(self._secret, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def _take_cut(self) -> int | None:
        with self._lock:
            if self.cut_after is None:
                return None
            limit = self.cut_after
            self.cut_count -= 1
            if self.cut_count <= 0:
                self.cut_after, self.cut_count = None, 1
            return limit

    def _take_rate_limit(self) -> bool:
        with self._lock:
            if self.rate_limit > 0:
                self.rate_limit -= 1
                return True
            return False


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    hub: HubServer
    role: str


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the Hub
    server: _HTTPServer

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
        repo = self.server.hub._load(segments[1][:-1], f"{segments[2]}/{segments[3]}")
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
        repo = hub._load(repo_type, repo_id)
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


def main(argv: list[str] | None = None) -> None:
    """``python -m offline.hub_server ROOT [--cdn] [--token T]``: serve until interrupted."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--cdn", action="store_true")
    parser.add_argument("--token")
    parser.add_argument("--slow", type=float)
    args = parser.parse_args(argv)
    with HubServer(args.root, cdn=args.cdn, token=args.token) as hub:
        hub.slow = args.slow
        print(hub.endpoint, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
