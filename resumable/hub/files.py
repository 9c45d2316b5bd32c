"""Fetching and verifying a snapshot's files: bounded concurrency, LFS sha256 / git blob sha1,
reuse of identical files from other commits, one progress total."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Callable

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from .. import http, locks
from ..errors import HTTPStatusError, IntegrityError
from ..progress import byte_bar
from ..state import VerifiedRecord, ensure_record_dir, read_json, remove_stale_temps, temp_path
from ..transfer import FetchResult, fetch
from ..verify import verify_file
from .api import HubAPI
from .common import COMMIT, RemoteFile, SnapshotError
from .manifest import MANIFEST, safe_dest

log = logging.getLogger("resumable")

GIT_BLOB = "gitblob"  # our key for the git blob sha1 in a VerifiedRecord


def download_all(hub: HubAPI, snap_dir: Path, commit: str, wanted: list[RemoteFile], max_workers: int,
                 progress) -> list[FetchResult]:
    meter = _Meter(progress, sum(f.size for f in wanted), hub.repo_id)
    session = http.new_session(pool_size=max_workers, many=True)
    others = _files_of_other_commits(snap_dir)
    try:
        with ThreadPoolExecutor(max_workers, thread_name_prefix="snapshot") as pool:
            futures = [pool.submit(_one_file, hub, snap_dir, commit, f, session, meter, others) for f in wanted]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()  # files not started yet; running ones finish (their .part resumes later)
                raise
    finally:
        meter.close()
        session.close()


def _one_file(hub: HubAPI, snap_dir: Path, commit: str, f: RemoteFile, session, meter: "_Meter",
              others: dict[str, Path]) -> FetchResult:
    dest = safe_dest(snap_dir, f.path)
    if already_verified(dest, f) or _link_from_other_commit(dest, f, others):
        meter.update(f.path, f.size, f.size)
        return FetchResult(dest, "", f.size, f"sha256:{f.sha256}" if f.sha256 else None, "cached", 0, 0.0)
    url = hub.file_url(f.path, commit)

    def fetch_and_check() -> FetchResult:
        result = _fetch(hub, url, dest, f, session, meter)
        if f.sha256 or not f.blob or blob_matches(dest, f.blob):
            return result
        # Fetch checks size only for plain git files; a wrong blob sha1 means bad bytes on disk.
        dest.unlink(missing_ok=True)
        raise _BlobMismatch(f"{f.path} from {http.redact(url)}: content does not match its git blob sha1 {f.blob} "
                            "after a fresh download; the server's listing and file disagree")

    fetch_again = Retrying(retry=retry_if_exception_type(_BlobMismatch), stop=stop_after_attempt(2), reraise=True,
                           before_sleep=lambda _: log.warning("%s: git blob sha1 mismatch; fetching it again", f.path))
    return fetch_again(fetch_and_check)


class _BlobMismatch(IntegrityError):
    """A plain git file whose bytes do not match its blob sha1 (worth one fresh download)."""


def _fetch(hub: HubAPI, url: str, dest: Path, f: RemoteFile, session, meter: "_Meter") -> FetchResult:
    try:
        return fetch(url, dest, size=f.size, hash=f"sha256:{f.sha256}" if f.sha256 else None,
                     headers=hub.headers(), session=session, progress=meter.callback(f.path))
    except HTTPStatusError as exc:
        what = f"{hub.kind} '{hub.repo_id}'"
        if exc.status == 404:
            raise SnapshotError(f"file '{f.path}' of {what} at {dest.parent.name[:12]} is missing on "
                                f"{hub.endpoint} (HTTP 404): the repository changed; run again", "file") from None
        if exc.status in (401, 403):
            raise SnapshotError(f"{hub.endpoint} refused '{f.path}' of {what} (HTTP {exc.status}): pass a token "
                                "with read access (HF_TOKEN)", "auth") from None
        raise


def verified_on_disk(dest: Path, f: RemoteFile) -> bool:
    """Present with its size, and its hash checked (re-hashed only if it changed since we checked)."""
    if not dest.is_file() or dest.stat().st_size != f.size:
        return False
    if already_verified(dest, f):
        return True
    if f.sha256:
        return verify_file(dest, f.size, f"sha256:{f.sha256}")
    return f.blob is None or blob_matches(dest, f.blob)


def already_verified(dest: Path, f: RemoteFile) -> bool:
    """Unchanged since we verified it (a stat and a small JSON read; no hashing)."""
    record = VerifiedRecord.load(dest)
    if record is None or not record.matches(dest) or record.size != f.size:
        return False
    if f.sha256:
        return record.digests.get("sha256") == f.sha256
    return f.blob is None or record.digests.get(GIT_BLOB) == f.blob


def blob_matches(dest: Path, blob: str) -> bool:
    size = dest.stat().st_size
    h = hashlib.sha1(b"blob %d\0" % size)
    with open(dest, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    if h.hexdigest() != blob:
        return False
    record = VerifiedRecord.load(dest)
    kept = record if record and record.matches(dest) else None
    VerifiedRecord.of(dest, {**(kept.digests if kept else {}), GIT_BLOB: blob}, kept and kept.source,
                      kept and kept.validator).save(dest)
    return True


def _content_key(f: RemoteFile) -> str | None:
    return f"sha256:{f.sha256}" if f.sha256 else f"blob:{f.blob}" if f.blob else None


def _files_of_other_commits(snap_dir: Path) -> dict[str, Path]:
    """Content key -> a file of another snapshot of this repository (a new commit often changes
    only a README: its unchanged weights need not travel again)."""
    found: dict[str, Path] = {}
    if not snap_dir.parent.is_dir():
        return found
    for other in snap_dir.parent.iterdir():
        manifest = read_json(other / MANIFEST) if other != snap_dir and COMMIT.match(other.name) else None
        tree = (manifest or {}).get("tree")
        if not isinstance(tree, dict):
            continue
        for name in manifest.get("files", []):
            if name in tree:
                key = _content_key(RemoteFile.from_json(name, tree[name]))
                if key:
                    found.setdefault(key, other.joinpath(*PurePosixPath(name).parts))
    return found


def _link_from_other_commit(dest: Path, f: RemoteFile, others: dict[str, Path]) -> bool:
    """Hard-link (else copy) a verified identical file from another commit's snapshot."""
    source = others.get(_content_key(f) or "")
    record = VerifiedRecord.load(source) if source is not None else None
    if record is None or not already_verified(source, f):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    ensure_record_dir(dest)
    with locks.exclusive(dest):  # as a download of it would: its temp files are this lock holder's
        remove_stale_temps(dest)
        tmp = temp_path(dest)
        try:
            os.link(source, tmp, follow_symlinks=False)
            linked = True
        except OSError:
            shutil.copy2(source, tmp, follow_symlinks=False)  # another file system, or no hard links here
            linked = False
        os.replace(tmp, dest)
    if linked:  # a new link changes the shared inode's ctime: the source's record must follow
        VerifiedRecord.of(source, record.digests, record.source, record.validator).save(source)
    VerifiedRecord.of(dest, record.digests).save(dest)
    log.info("%s: same content as in %s; linked, not downloaded", f.path, source.parent.name[:12])
    return True


class _Meter:
    """One progress total over all files: a tqdm bar (TTY) and/or the caller's callback."""

    def __init__(self, progress, total: int, label: str):
        self._callback = progress if callable(progress) and progress is not True else None
        self._lock = threading.Lock()
        self._per_file: dict[str, int] = {}
        self.done, self.total = 0, total
        self._bar = None
        if progress is True or progress is None:
            self._bar = byte_bar(label, total, show=True if progress is True else None)

    def callback(self, path: str) -> Callable[[int, int | None], None]:
        return lambda done, total: self.update(path, done, total)

    def update(self, path: str, done: int, total: int | None) -> None:
        with self._lock:
            delta = done - self._per_file.get(path, 0)
            self._per_file[path] = done
            self.done += delta
            if self._bar is not None:
                self._bar.update(delta)
            now = self.done
        if self._callback is not None:
            self._callback(now, self.total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

