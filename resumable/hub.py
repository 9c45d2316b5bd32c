"""Hugging Face Hub snapshots that resume after a kill and verify every file.

huggingface_hub resolves the revision and lists the files (sizes, LFS sha256, git blob sha1);
our transfer engine fetches each file from its resolve URL into a plain folder, so a killed
process resumes where it stopped. Layout under ``dest_root``::

    <org>--<name>/refs/<revision>        the commit a branch or tag pointed to last time
    <org>--<name>/<commit>/...           the files: ``from_pretrained(<this folder>)`` loads it
    <org>--<name>/<commit>/.snapshot.json  the manifest (repo, revision, commit, tree, files)

A file that another commit's snapshot already holds, verified, with the same hash is hard-linked
(else copied), not downloaded again. huggingface_hub is imported inside functions only: the
engine must start fast.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

from tenacity import Retrying, retry_if_exception, wait_exponential_jitter

from . import http
from .errors import HTTPStatusError, IntegrityError, ResumableError, UsageError
from .state import RECORD_DIR, VerifiedRecord, read_json, write_json
from .transfer import FetchResult, fetch
from .verify import verify_file

log = logging.getLogger("resumable")

MANIFEST = ".snapshot.json"
MANIFEST_FORMAT = 1
DEFAULT_ENDPOINT = "https://huggingface.co"
GIT_BLOB = "gitblob"  # our key for the git blob sha1 in a VerifiedRecord
METADATA_ATTEMPTS = 6  # on 429/5xx: the server is there and says when to come back
NETWORK_ATTEMPTS = 3  # on connection errors: a wrong endpoint should fail in seconds, not minutes
RETRY_WAIT_CAP = 120.0  # never sleep longer than this on one 429, whatever the server asks
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "on", "yes", "true"}


class SnapshotError(ResumableError):
    """A snapshot cannot be made; ``reason`` is one of repo, revision, file, auth, gated, offline,
    network, filter, integrity."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class SnapshotResult:
    path: Path  # the folder a plain from_pretrained(path) loads
    repo_id: str
    revision: str
    commit: str
    files: int
    bytes_total: int
    bytes_transferred: int
    status: str  # "downloaded" | "resumed" | "cached"


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None  # LFS files
    blob: str | None  # git blob sha1 (of the content for non-LFS files)

    def to_json(self) -> dict:
        return {"size": self.size, "sha256": self.sha256, "blob": self.blob}

    @classmethod
    def from_json(cls, path: str, data: dict) -> "RemoteFile":
        return cls(path, int(data["size"]), data.get("sha256"), data.get("blob"))


# -- public API --------------------------------------------------------------------------------


def snapshot(
    repo_id: str,
    *,
    revision: str = "main",
    dest_root: str | Path = "./models_cache",
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    offline: bool | None = None,
    max_workers: int = 4,
    repo_type: str = "model",
    progress=None,
) -> SnapshotResult:
    """Download (or find) ``repo_id`` at ``revision``; every file verified, resumable after a kill.

    ``token=None`` uses HF_TOKEN or the saved login, ``False`` sends none; ``offline=None``
    follows HF_HUB_OFFLINE; ``progress`` is None (a bar on a TTY), False, or a callable
    ``(downloaded, total)`` over the whole snapshot.
    """
    _check_args(repo_id, revision, repo_type, max_workers)
    include, exclude = _patterns(include), _patterns(exclude)
    offline = _env_offline() if offline is None else offline
    repo_dir = Path(dest_root).expanduser().absolute() / _folder_name(repo_id, repo_type)
    hub = None if offline else _Hub(repo_id, repo_type, endpoint, token)

    commit = _resolve_commit(hub, repo_dir, repo_id, repo_type, revision)
    snap_dir = repo_dir / commit
    manifest = read_json(snap_dir / MANIFEST)
    tree = _manifest_tree(manifest, repo_id, commit)
    if tree is None:
        if hub is None:
            raise SnapshotError(
                f"offline: no snapshot of {repo_type} '{repo_id}' at '{revision}' (commit {commit[:12]}) in "
                f"{repo_dir}; run once online (without --offline / HF_HUB_OFFLINE=1)", "offline")
        tree = hub.list_files(commit, revision)
    wanted = _select(tree, include, exclude, repo_id, revision)

    if hub is None:
        return _offline_result(snap_dir, repo_id, repo_type, revision, commit, wanted)
    _write_ref(repo_dir, revision, commit)
    results = _download_all(hub, snap_dir, commit, wanted, max_workers, progress)
    _write_manifest(snap_dir, hub, revision, commit, tree, {f.path for f in wanted})
    statuses = {r.status for r in results}
    status = "resumed" if "resumed" in statuses else "downloaded" if "downloaded" in statuses else "cached"
    return SnapshotResult(snap_dir, repo_id, revision, commit, len(wanted), sum(f.size for f in wanted),
                          sum(r.bytes_transferred for r in results), status)


def snapshot_is_complete(path: str | Path) -> bool:
    """Cheap: the manifest is there and every file it lists exists with its size (no hashing)."""
    path = Path(path)
    manifest = read_json(path / MANIFEST)
    if not manifest or not isinstance(manifest.get("tree"), dict) or not manifest.get("files"):
        return False
    try:
        return all((path / name).stat().st_size == int(manifest["tree"][name]["size"]) for name in manifest["files"])
    except (OSError, KeyError, TypeError, ValueError):
        return False


# -- arguments and environment -----------------------------------------------------------------


def _check_args(repo_id: str, revision: str, repo_type: str, max_workers: int) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise UsageError(f"repo id {repo_id!r}: expected ORG/NAME (letters, digits, '-', '_', '.'), "
                         "e.g. Qwen/Qwen2-VL-2B-Instruct") from None
    if repo_type not in ("model", "dataset"):
        raise UsageError(f"repo type {repo_type!r}: use 'model' or 'dataset'")
    if not revision or not isinstance(revision, str) or ".." in revision or revision.startswith("/"):
        raise UsageError(f"revision {revision!r}: give a branch, tag or 40-hex commit sha, e.g. main")
    if not isinstance(max_workers, int) or max_workers < 1:
        raise UsageError(f"max_workers {max_workers!r}: use 1 or more")


def _patterns(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value) or None


def _env_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _folder_name(repo_id: str, repo_type: str) -> str:
    name = repo_id.replace("/", "--")
    return name if repo_type == "model" else f"{repo_type}s--{name}"


def _resolve_commit(hub: "_Hub | None", repo_dir: Path, repo_id: str, repo_type: str, revision: str) -> str:
    """A commit sha: the revision itself, else one request (online) or the saved ref (offline)."""
    if _COMMIT.match(revision):
        return revision
    if hub is not None:
        return hub.commit_of(revision)
    ref = _ref_path(repo_dir, revision)
    commit = ref.read_text().strip() if ref.is_file() else ""
    if not _COMMIT.match(commit):
        raise SnapshotError(f"offline: no snapshot of {repo_type} '{repo_id}' at '{revision}' in {repo_dir.parent}; "
                            "run once online (without --offline / HF_HUB_OFFLINE=1)", "offline")
    return commit


def _ref_path(repo_dir: Path, revision: str) -> Path:
    return repo_dir / "refs" / revision  # a/b branch names become sub-folders, like git


def _write_ref(repo_dir: Path, revision: str, commit: str) -> None:
    if revision == commit:
        return
    ref = _ref_path(repo_dir, revision)
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(f".{ref.name}.{uuid.uuid4().hex[:8]}.tmp")  # unique per thread and process
    tmp.write_text(commit)
    os.replace(tmp, ref)


# -- manifest and selection --------------------------------------------------------------------


def _manifest_tree(manifest: dict | None, repo_id: str, commit: str) -> list[RemoteFile] | None:
    if not manifest or manifest.get("format") != MANIFEST_FORMAT or manifest.get("commit") != commit \
            or manifest.get("repo_id") != repo_id or not isinstance(manifest.get("tree"), dict):
        return None
    return [RemoteFile.from_json(p, d) for p, d in manifest["tree"].items()]


def _write_manifest(snap_dir: Path, hub: "_Hub", revision: str, commit: str, tree: list[RemoteFile],
                    done: set[str]) -> None:
    """Adds ``done`` to the manifest's files; the lock keeps two runs with other filters from
    dropping each other's files."""
    from filelock import FileLock

    (snap_dir / RECORD_DIR).mkdir(parents=True, exist_ok=True)
    with FileLock(str(snap_dir / RECORD_DIR / "snapshot.lock")):
        current = read_json(snap_dir / MANIFEST)
        if _manifest_tree(current, hub.repo_id, commit) is not None:
            done = done | set(current.get("files", []))
        write_json(snap_dir / MANIFEST, {
            "format": MANIFEST_FORMAT,
            "repo_id": hub.repo_id,
            "repo_type": hub.repo_type,
            "endpoint": hub.endpoint,
            "revision": revision,
            "commit": commit,
            "tree": {f.path: f.to_json() for f in tree},
            "files": sorted(done),
        })


def _select(tree: list[RemoteFile], include: list[str] | None, exclude: list[str] | None, repo_id: str,
            revision: str) -> list[RemoteFile]:
    from huggingface_hub.utils import filter_repo_objects

    wanted = list(filter_repo_objects(tree, allow_patterns=include, ignore_patterns=exclude, key=lambda f: f.path))
    if include:  # a plain name that matches nothing is a missing file, not an empty snapshot
        names = {f.path for f in tree}
        missing = [p for p in include if not any(c in p for c in "*?[") and p not in names]
        if missing:
            raise SnapshotError(f"file {missing[0]!r} is not in '{repo_id}' at '{revision}'; "
                                "check the name (list the repository's files on the Hub)", "file")
    if not wanted:
        raise SnapshotError(f"no file of '{repo_id}' at '{revision}' matches include={include} exclude={exclude}; "
                            "check the patterns", "filter")
    return sorted(wanted, key=lambda f: f.path)


def _safe_dest(snap_dir: Path, name: str) -> Path:
    """The local path of a repository file; a listing must never write outside the snapshot."""
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or any(p in ("..", ".", "") for p in parts) or name == MANIFEST:
        raise SnapshotError(f"the server listed an unsafe file name {name!r}; refusing to write it", "integrity")
    return snap_dir.joinpath(*parts)


def _offline_result(snap_dir: Path, repo_id: str, repo_type: str, revision: str, commit: str,
                    wanted: list[RemoteFile]) -> SnapshotResult:
    bad = [f.path for f in wanted if not _verified_on_disk(_safe_dest(snap_dir, f.path), f)]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise SnapshotError(f"offline: the snapshot of {repo_type} '{repo_id}' at '{revision}' in {snap_dir} is "
                            f"incomplete, missing or damaged {len(bad)} file(s): {shown}; run once online to "
                            "finish it", "offline")
    return SnapshotResult(snap_dir, repo_id, revision, commit, len(wanted), sum(f.size for f in wanted), 0, "cached")


def _verified_on_disk(dest: Path, f: RemoteFile) -> bool:
    """Present with its size, and its hash checked (re-hashed only if it changed since we checked)."""
    if not dest.is_file() or dest.stat().st_size != f.size:
        return False
    if _already_verified(dest, f):
        return True
    if f.sha256:
        return verify_file(dest, f.size, f"sha256:{f.sha256}")
    return f.blob is None or _blob_matches(dest, f.blob)


# -- the Hub's metadata API ----------------------------------------------------------------------


class _Hub:
    """HfApi calls with retries on 429/5xx (honouring Retry-After and RateLimit) and one-line errors."""

    def __init__(self, repo_id: str, repo_type: str, endpoint: str | None, token: str | bool | None):
        from huggingface_hub import HfApi, get_token

        self.repo_id, self.repo_type = repo_id, repo_type
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        http.check_url(self.endpoint)
        self.token = (get_token() if token is None else token) or None
        self.api = HfApi(endpoint=self.endpoint, token=self.token or False)
        self.kind = "dataset" if repo_type == "dataset" else "model"

    def commit_of(self, revision: str) -> str:
        info = self._call(lambda: self.api.repo_info(self.repo_id, revision=revision, repo_type=self.repo_type),
                          revision)
        if not info.sha or not _COMMIT.match(info.sha):
            raise SnapshotError(f"{self.endpoint} answered no commit for '{self.repo_id}' at '{revision}'; "
                                "is this a Hugging Face Hub endpoint?", "network")
        return info.sha

    def list_files(self, commit: str, revision: str) -> list[RemoteFile]:
        from huggingface_hub.hf_api import RepoFile

        entries = self._call(lambda: list(self.api.list_repo_tree(
            self.repo_id, recursive=True, expand=False, revision=commit, repo_type=self.repo_type)), revision)
        return [RemoteFile(e.path, e.size, e.lfs.sha256 if e.lfs else None, None if e.lfs else e.blob_id)
                for e in entries if isinstance(e, RepoFile)]

    def file_url(self, path: str, commit: str) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.repo_id, path, repo_type=self.repo_type, revision=commit, endpoint=self.endpoint)

    def headers(self) -> dict:
        # Only for the endpoint's origin: the transfer engine drops it on a redirect elsewhere (the CDN).
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _call(self, fn: Callable, revision: str):
        retrying = Retrying(retry=retry_if_exception(_transient_hub_error), wait=_hub_wait,
                            stop=_hub_stop, reraise=True,
                            before_sleep=lambda s: log.warning("%s: %s; retrying", self.endpoint,
                                                               _first_line(s.outcome.exception())))
        try:
            return retrying(fn)
        except Exception as exc:
            raise self._explain(exc, revision) from None

    def _explain(self, exc: Exception, revision: str) -> Exception:
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        what = f"{self.kind} '{self.repo_id}'"
        if isinstance(exc, GatedRepoError):
            return SnapshotError(
                f"{what} is gated: accept its terms at {self.endpoint}/{_page(self)} with your account, then pass "
                "that account's token (--token or HF_TOKEN)", "gated")
        if isinstance(exc, RevisionNotFoundError):
            return SnapshotError(f"revision '{revision}' not found in {what}: use an existing branch, tag or "
                                 "commit sha", "revision")
        status = getattr(getattr(exc, "response", None), "status_code", None)
        message = getattr(getattr(exc, "response", None), "headers", {}).get("X-Error-Message", "")
        if status == 401 and "credentials" in message.lower():
            return SnapshotError(f"{self.endpoint} rejected the token: check --token / HF_TOKEN", "auth")
        if isinstance(exc, RepositoryNotFoundError):
            hint = "check the name" + ("" if self.token else "; if it is private, pass --token or set HF_TOKEN")
            return SnapshotError(f"{what} not found on {self.endpoint}: {hint}", "repo")
        if status == 403:
            return SnapshotError(f"access to {what} denied by {self.endpoint}: check that the token (--token or "
                                 "HF_TOKEN) has read access", "auth")
        if isinstance(exc, OfflineModeIsEnabled):
            return SnapshotError(f"offline mode is on (HF_HUB_OFFLINE) but {what} needs the network; pass "
                                 "--offline to use the local snapshot", "offline")
        if isinstance(exc, HfHubHTTPError):
            return SnapshotError(f"{self.endpoint}: {what}: HTTP {status}: {_first_line(exc)}", "network")
        if _is_network_error(exc):
            return SnapshotError(f"cannot reach {self.endpoint} ({_first_line(exc)}): check the network or the "
                                 "endpoint (--endpoint / HF_ENDPOINT), or use --offline with a complete snapshot",
                                 "network")
        return exc


def _page(hub: _Hub) -> str:
    return hub.repo_id if hub.repo_type == "model" else f"datasets/{hub.repo_id}"


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip()
    return next((line for line in text.splitlines() if line.strip()), type(exc).__name__)


def _is_network_error(exc: BaseException) -> bool:
    import httpx2

    return isinstance(exc, (httpx2.TransportError, OSError))


def _transient_hub_error(exc: BaseException) -> bool:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status in (408, 429, 500, 502, 503, 504) or (status is None and _is_network_error(exc))


def _hub_stop(state) -> bool:
    answered = getattr(state.outcome.exception(), "response", None) is not None
    return state.attempt_number >= (METADATA_ATTEMPTS if answered else NETWORK_ATTEMPTS)


def _hub_wait(state) -> float:
    """The server's word (RateLimit reset, else Retry-After) when it gives one, else backoff."""
    from huggingface_hub.utils import parse_ratelimit_headers

    headers = getattr(getattr(state.outcome.exception(), "response", None), "headers", None) or {}
    info = parse_ratelimit_headers(headers)
    if info is not None and info.remaining == 0:
        return min(float(info.reset_in_seconds), RETRY_WAIT_CAP)
    asked = http.parse_retry_after(headers.get("Retry-After"))
    if asked is not None:
        return min(asked, RETRY_WAIT_CAP)
    return wait_exponential_jitter(initial=1, max=30)(state)


# -- file transfers ------------------------------------------------------------------------------


def _download_all(hub: _Hub, snap_dir: Path, commit: str, wanted: list[RemoteFile], max_workers: int,
                  progress) -> list[FetchResult]:
    meter = _Meter(progress, sum(f.size for f in wanted), hub.repo_id)
    session = http.new_session(pool_size=max_workers)
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


def _one_file(hub: _Hub, snap_dir: Path, commit: str, f: RemoteFile, session, meter: "_Meter",
              others: dict[str, Path]) -> FetchResult:
    dest = _safe_dest(snap_dir, f.path)
    if _already_verified(dest, f) or _link_from_other_commit(dest, f, others):
        meter.update(f.path, f.size, f.size)
        return FetchResult(dest, "", f.size, f"sha256:{f.sha256}" if f.sha256 else None, "cached", 0, 0.0)
    url = hub.file_url(f.path, commit)
    for attempt in (1, 2):
        result = _fetch(hub, url, dest, f, session, meter)
        if f.sha256 or not f.blob or _blob_matches(dest, f.blob):
            return result
        # Fetch checks size only for plain git files; a wrong blob sha1 means bad bytes on disk.
        log.warning("%s: git blob sha1 mismatch; fetching it again", f.path)
        dest.unlink(missing_ok=True)
    raise IntegrityError(f"{f.path} from {http.redact(url)}: content does not match its git blob sha1 {f.blob} "
                         "after a fresh download; the server's listing and file disagree")


def _fetch(hub: _Hub, url: str, dest: Path, f: RemoteFile, session, meter: "_Meter") -> FetchResult:
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
                                "with read access (--token or HF_TOKEN)", "auth") from None
        raise


def _content_key(f: RemoteFile) -> str | None:
    return f"sha256:{f.sha256}" if f.sha256 else f"blob:{f.blob}" if f.blob else None


def _files_of_other_commits(snap_dir: Path) -> dict[str, Path]:
    """Content key -> a file of another snapshot of this repository (a new commit often changes
    only a README: its unchanged weights need not travel again)."""
    found: dict[str, Path] = {}
    if not snap_dir.parent.is_dir():
        return found
    for other in snap_dir.parent.iterdir():
        manifest = read_json(other / MANIFEST) if other != snap_dir and _COMMIT.match(other.name) else None
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
    if source is None or not _already_verified(source, f):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copy2(source, tmp)  # another file system, or no hard links here
    os.replace(tmp, dest)
    VerifiedRecord.of(dest, VerifiedRecord.load(source).digests).save(dest)
    log.info("%s: same content as in %s; linked, not downloaded", f.path, source.parent.name[:12])
    return True


def _already_verified(dest: Path, f: RemoteFile) -> bool:
    """Unchanged since we verified it (a stat and a small JSON read; no hashing)."""
    record = VerifiedRecord.load(dest)
    if record is None or not record.matches(dest) or record.size != f.size:
        return False
    if f.sha256:
        return record.digests.get("sha256") == f.sha256
    return f.blob is None or record.digests.get(GIT_BLOB) == f.blob


def _blob_matches(dest: Path, blob: str) -> bool:
    size = dest.stat().st_size
    h = hashlib.sha1(b"blob %d\0" % size)
    with open(dest, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    if h.hexdigest() != blob:
        return False
    record = VerifiedRecord.load(dest)
    digests = dict(record.digests) if record and record.matches(dest) else {}
    VerifiedRecord.of(dest, {**digests, GIT_BLOB: blob}).save(dest)
    return True


class _Meter:
    """One progress total over all files: a tqdm bar (TTY) and/or the caller's callback."""

    def __init__(self, progress, total: int, label: str):
        self._callback = progress if callable(progress) and progress is not True else None
        self._lock = threading.Lock()
        self._per_file: dict[str, int] = {}
        self.done, self.total = 0, total
        self._bar = None
        if progress is True or (progress is None and sys.stderr.isatty()):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024,
                             file=sys.stderr, dynamic_ncols=True, mininterval=0.2)

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
