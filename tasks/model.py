"""model_snapshot: a Hub model repository at one commit, downloaded and verified into models_cache."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task

from resumable.progress import human_size
from tasks.caching import StableInputs, transient_only
from tasks.progress import DownloadProgress, artifact_key
from tasks.results import DataOnlyJSON, result_type
from tasks.secrets import redacted_errors


@result_type
@dataclass(frozen=True)
class SnapshotInfo:
    path: str
    repo_id: str
    revision: str
    commit: str
    files: int
    bytes_total: int
    bytes_transferred: int
    status: str
    seconds: float

    def cache_identity(self) -> tuple:
        return self.path, self.repo_id, self.commit, self.files, self.bytes_total


# Where the Hub is (endpoint: a local server picks a random port) and how hard to pull do not
# change the snapshot; repo, revision, filters and destination do.
SNAPSHOT_CACHE = StableInputs(exclude=("endpoint", "max_workers"))


@task(cache_policy=SNAPSHOT_CACHE, persist_result=True, result_serializer=DataOnlyJSON(), retries=2,
      retry_delay_seconds=[2, 10], retry_condition_fn=transient_only,
      task_run_name="snapshot {repo_id}@{revision}")
def model_snapshot(repo_id: str, revision: str = "main", dest_root: str = "./models_cache",
                   include: tuple[str, ...] | None = None, exclude: tuple[str, ...] | None = None,
                   endpoint: str | None = None, max_workers: int = 4) -> SnapshotInfo:
    """Snapshot the repository (resuming partial files) via the Hub API; token from HF_TOKEN."""
    import time

    from resumable.hub import snapshot

    t0 = time.monotonic()
    progress = DownloadProgress(repo_id, key=artifact_key("snapshot", repo_id))
    try:
        with redacted_errors():
            r = snapshot(repo_id, revision=revision, dest_root=dest_root, include=list(include) if include else None,
                         exclude=list(exclude) if exclude else None, endpoint=endpoint, max_workers=max_workers,
                         progress=progress)
    finally:
        progress.close()
    seconds = time.monotonic() - t0
    get_run_logger().info("%s@%s (%s): %s, %d files, %s, %s transferred in %.1f s", repo_id, revision, r.commit[:12],
                          r.status, _count(r.files), human_size(r.bytes_total), human_size(r.bytes_transferred), seconds)
    return SnapshotInfo(str(r.path), repo_id, revision, r.commit, _count(r.files), r.bytes_total,
                        r.bytes_transferred, r.status, seconds)


def _count(files) -> int:
    return files if isinstance(files, int) else len(files)


def snapshot_is_current(path: str | Path | None) -> bool:
    """Cheap: every file of the snapshot is still in place (no hashing)."""
    if path is None:
        return False
    from resumable.hub import snapshot_is_complete

    try:
        return snapshot_is_complete(path)
    except OSError:
        return False
