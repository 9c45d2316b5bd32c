"""snapshot(): resolve the revision, list or recall the files, fetch what is missing, record it."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

from ..errors import UsageError
from ..http import check_url
from ..redaction import redact
from ..scratch import scratch_for
from ..state import read_json
from .api import HubAPI
from .common import COMMIT, RemoteFile, SnapshotError, SnapshotResult
from .files import download_all, verified_on_disk
from .manifest import MANIFEST, manifest_tree, safe_dest, select_files, write_manifest

_TRUE = {"1", "on", "yes", "true"}


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
    _check_args(repo_id, revision, repo_type, max_workers, endpoint)
    plan = plan_snapshot(repo_id, revision=revision, dest_root=dest_root, include=include, exclude=exclude,
                         endpoint=endpoint, token=token, offline=offline, repo_type=repo_type)
    return complete_snapshot(plan, max_workers=max_workers, progress=progress)


@dataclass
class SnapshotPlan:
    """A snapshot resolved and listed, nothing fetched yet: the commit and the files it will hold
    (what a caller checks before any transfer)."""

    repo_id: str
    repo_type: str
    revision: str
    commit: str
    repo_dir: Path
    hub: HubAPI | None  # None: offline
    tree: list[RemoteFile]
    wanted: list[RemoteFile]
    started: float = field(default_factory=time.monotonic)

    @property
    def path(self) -> Path:
        return self.repo_dir / self.commit


def plan_snapshot(repo_id: str, *, revision: str = "main", dest_root: str | Path = "./models_cache",
                  include: str | Iterable[str] | None = None, exclude: str | Iterable[str] | None = None,
                  endpoint: str | None = None, token: str | bool | None = None, offline: bool | None = None,
                  repo_type: str = "model") -> SnapshotPlan:
    """The revision resolved to a commit and the selected files listed (one or two metadata requests,
    none offline or from the manifest); nothing is downloaded."""
    _check_args(repo_id, revision, repo_type, 1, endpoint)
    t0 = time.monotonic()
    include, exclude = _patterns(include), _patterns(exclude)
    offline = _env_offline() if offline is None else offline
    repo_dir = repo_folder(dest_root, repo_id, repo_type)
    hub = None if offline else HubAPI(repo_id, repo_type, endpoint, token)

    commit = _resolve_commit(hub, repo_dir, repo_id, repo_type, revision)
    tree = manifest_tree(read_json(repo_dir / commit / MANIFEST), repo_id, commit)
    if tree is None:
        if hub is None:
            raise SnapshotError(
                f"offline: no snapshot of {repo_type} '{repo_id}' at '{revision}' (commit {commit[:12]}) in "
                f"{repo_dir}; run once online (with HF_HUB_OFFLINE unset)", "offline")
        tree = hub.list_files(commit, revision)
    wanted = select_files(tree, include, exclude, repo_id, revision)
    return SnapshotPlan(repo_id, repo_type, revision, commit, repo_dir, hub, tree, wanted, t0)


def complete_snapshot(plan: SnapshotPlan, *, max_workers: int = 4, progress=None) -> SnapshotResult:
    """Fetch (or, offline, check) the files ``plan`` selected; record them in the manifest."""
    if not isinstance(max_workers, int) or max_workers < 1:
        raise UsageError(f"max_workers {max_workers!r}: use 1 or more")
    snap_dir, hub, wanted = plan.path, plan.hub, plan.wanted
    if hub is None:
        return replace(_offline_result(snap_dir, plan.repo_id, plan.repo_type, plan.revision, plan.commit, wanted),
                       seconds=time.monotonic() - plan.started)
    _write_ref(plan.repo_dir, plan.revision, plan.commit)
    results = download_all(hub, snap_dir, plan.commit, wanted, max_workers, progress)
    write_manifest(snap_dir, hub, plan.revision, plan.commit, plan.tree, {f.path for f in wanted})
    statuses = {r.status for r in results}
    status = "resumed" if "resumed" in statuses else "downloaded" if "downloaded" in statuses else "cached"
    return SnapshotResult(snap_dir, plan.repo_id, plan.revision, plan.commit, len(wanted), sum(f.size for f in wanted),
                          sum(r.bytes_transferred for r in results), status, time.monotonic() - plan.started)


def _check_args(repo_id: str, revision: str, repo_type: str, max_workers: int, endpoint: str | None = None) -> None:
    check_repo_id(repo_id)
    if repo_type not in ("model", "dataset"):
        raise UsageError(f"repo type {repo_type!r}: use 'model' or 'dataset'")
    check_revision(revision)
    if not isinstance(max_workers, int) or max_workers < 1:
        raise UsageError(f"max_workers {max_workers!r}: use 1 or more")
    if endpoint is not None:
        check_endpoint(endpoint)


# The rules below are shared with the pipeline config (train_pipeline.config), so `--check`
# rejects exactly what a snapshot would refuse at run time.

# ORG/NAME in plain ASCII, each part starting and ending with a letter or digit: a subset of what
# huggingface_hub's validate_repo_id accepts, checked here without importing it (~45 ms, most of a
# registry's validation; every `datasets` command validates the registry's hf:// entries).
_PLAIN_REPO_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9])?/[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9])?")


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` when the Hub can have such a repository (huggingface_hub's own rule), else a UsageError."""
    if (isinstance(repo_id, str) and _PLAIN_REPO_ID.fullmatch(repo_id) and "--" not in repo_id
            and ".." not in repo_id and not repo_id.endswith(".git")):
        return repo_id
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise UsageError(f"repo id {repo_id!r}: expected ORG/NAME (letters, digits, '-', '_', '.'; no '--' or '..', "
                         "at most 96 characters), e.g. Qwen/Qwen2-VL-2B-Instruct") from None
    return repo_id


_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
NAME_MAX = 255  # bytes in one path component: refs/<revision> is written to disk


def check_revision(revision: str) -> str:
    """``revision`` when it can name a commit on the Hub, else a one-line UsageError.

    A commit sha, or a branch or tag name as git allows them (``git check-ref-format``): no
    ``..``, no control characters, spaces or ``~^:?*[\\``, no ``@{``, no leading, trailing or
    double ``/``, no component starting with ``.`` or ending with ``.lock``. Each ``/``-separated
    component is also a file name under ``refs/`` in the cache, so at most 255 bytes.
    """
    why = _revision_problem(revision)
    if why:
        raise UsageError(f"revision {revision!r}: {why}; give a branch, tag or 40-hex commit sha, e.g. main")
    return revision


def _revision_problem(revision: object) -> str | None:
    if not isinstance(revision, str):
        return "expected text"
    if not revision:
        return "empty"
    if COMMIT.fullmatch(revision):
        return None
    bad = _REF_FORBIDDEN.search(revision)
    if bad:
        char = bad.group()
        return "contains a space" if char == " " else f"contains {char!r}, which git refuses in a branch or tag name"
    if ".." in revision:
        return "contains '..'"
    if "@{" in revision or revision == "@":
        return "contains '@{' or is '@'"
    if revision.startswith("/") or revision.endswith("/") or "//" in revision:
        return "starts or ends with '/' or has an empty component ('//')"
    if revision.endswith("."):
        return "ends with '.'"
    for part in revision.split("/"):
        if part.startswith("."):
            return f"a component ({part!r}) starts with '.'"
        if part.endswith(".lock"):
            return f"a component ({part!r}) ends with '.lock'"
        if len(part.encode("utf-8", "surrogatepass")) > NAME_MAX:
            return f"a component is longer than {NAME_MAX} bytes"
    return None


def check_endpoint(endpoint: str) -> str:
    """The Hub endpoint without a trailing '/', when requests can be built on it, else a UsageError.

    huggingface_hub appends ``/api/...`` to the endpoint: a path prefix works (a proxy), a query or
    a fragment would end up in the middle of every URL."""
    if endpoint == "":
        raise UsageError("endpoint '': give the Hub's address, e.g. https://huggingface.co, or leave it out")
    check_url(endpoint)
    parts = urlsplit(endpoint)
    if parts.query or parts.fragment or endpoint.endswith(("?", "#")):
        raise UsageError(f"endpoint {redact(endpoint)!r}: a Hub endpoint takes no '?query' or '#fragment'; "
                         "write it as https://host[:port][/path]")
    return endpoint.rstrip("/")


def _patterns(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value) or None


def _env_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def repo_folder(dest_root: str | os.PathLike, repo_id: str, repo_type: str = "model") -> Path:
    """The folder of a repository's snapshots under ``dest_root`` (one sub-folder per commit)."""
    return Path(dest_root).expanduser().absolute() / _folder_name(repo_id, repo_type)


def _folder_name(repo_id: str, repo_type: str) -> str:
    name = repo_id.replace("/", "--")
    return name if repo_type == "model" else f"{repo_type}s--{name}"


def _resolve_commit(hub: "HubAPI | None", repo_dir: Path, repo_id: str, repo_type: str, revision: str) -> str:
    """A commit sha: the revision itself, else one request (online) or the saved ref (offline)."""
    if COMMIT.match(revision):
        return revision
    if hub is not None:
        return hub.commit_of(revision)
    ref = _ref_path(repo_dir, revision)
    commit = ref.read_text().strip() if ref.is_file() else ""
    if not COMMIT.match(commit):
        raise SnapshotError(f"offline: no snapshot of {repo_type} '{repo_id}' at '{revision}' in {repo_dir.parent}; "
                            "run once online (with HF_HUB_OFFLINE unset)", "offline")
    return commit


def _ref_path(repo_dir: Path, revision: str) -> Path:
    return repo_dir / "refs" / revision  # a/b branch names become sub-folders, like git


def _write_ref(repo_dir: Path, revision: str, commit: str) -> None:
    if revision == commit:
        return
    ref = _ref_path(repo_dir, revision)
    ref.parent.mkdir(parents=True, exist_ok=True)
    with scratch_for(ref) as (fd, tmp):  # unique per thread and process; a killed writer's is swept
        os.write(fd, commit.encode())
        os.replace(tmp, ref)


def _offline_result(snap_dir: Path, repo_id: str, repo_type: str, revision: str, commit: str,
                    wanted: list[RemoteFile]) -> SnapshotResult:
    bad = [f.path for f in wanted if not verified_on_disk(safe_dest(snap_dir, f.path), f)]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise SnapshotError(f"offline: the snapshot of {repo_type} '{repo_id}' at '{revision}' in {snap_dir} is "
                            f"incomplete, missing or damaged {len(bad)} file(s): {shown}; run once online to "
                            "finish it", "offline")
    return SnapshotResult(snap_dir, repo_id, revision, commit, len(wanted), sum(f.size for f in wanted), 0, "cached")

