"""A Hugging Face Hub-compatible HTTP server over a folder of repositories (standard library only).

``repos_root/<org>/<name>/...`` is a model repository, ``repos_root/datasets/<org>/<name>/...`` a
dataset repository: plain folders of files. A repository has exactly one commit, whose sha is
derived from its content, so editing a file gives a new commit. ``main`` resolves to it; an
optional ``.hub.json`` in the repository folder (never served) adds
``{"branches": [...], "tags": [...], "private": true, "gated": true | "denied"}``
(:mod:`offline.hub_repos`).

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

import hashlib
import hmac
import os
import threading
import time
from pathlib import Path

from offline.hub_repos import LFS_PATTERNS, LFS_THRESHOLD, Digests, Repo, load_repo
from offline.hub_routes import HubHandler, HubHTTPServer, RequestRecord

__all__ = ["HubServer", "RequestRecord", "Repo", "main"]


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
        self._digests = Digests()
        self._secret = os.urandom(16)
        self._servers: list[HubHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self.endpoint = ""
        self.cdn_endpoint = ""

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "HubServer":
        for role in ("hub", "cdn") if self.cdn else ("hub",):
            httpd = HubHTTPServer(("127.0.0.1", 0), HubHandler)
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

    # -- repositories and the log (also for tests) ------------------------------------------
    def repo(self, repo_id: str, repo_type: str = "model") -> Repo | None:
        """The repository as it is on disk now (re-read on every request; None: no such repository)."""
        return load_repo(self.repos_root, repo_type, repo_id, lfs_threshold=self.lfs_threshold,
                         lfs_patterns=self.lfs_patterns, digests=self._digests)

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

    # -- signing and faults ------------------------------------------------------------------
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
