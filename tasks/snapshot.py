"""model_snapshot: a Hub model repository at one commit, downloaded and verified into models_cache."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from resumable.hub import SnapshotResult
from resumable.progress import human_size
from tasks.caching import StableInputs, cache_identity, transient_only
from tasks.ui_progress import DownloadProgress, artifact_key
from tasks.results import DataOnlyJSON, result_type
from tasks.secrets import redacted_errors


result_type(SnapshotResult)


@cache_identity.register
def _(r: SnapshotResult) -> tuple:
    # Training sees which commit is where, not whether this run downloaded it.
    return str(r.path), r.repo_id, r.commit, r.files, r.bytes_total


# Caching: the key is repo, revision, filters and destination; where the Hub is (endpoint: a local
# server picks a random port) and how hard to pull do not change the snapshot. The flow trusts a
# cached result only while snapshot_is_current (its manifest's files all in place, no hashing).
SNAPSHOT_CACHE = StableInputs(exclude=("endpoint", "max_workers"))


@task(cache_policy=SNAPSHOT_CACHE, persist_result=True, result_serializer=DataOnlyJSON(), retries=2,
      retry_delay_seconds=[2, 10], retry_condition_fn=transient_only,
      task_run_name="snapshot {repo_id}@{revision}")
def model_snapshot(repo_id: str, revision: str = "main", dest_root: str = "./models_cache",
                   include: tuple[str, ...] | None = None, exclude: tuple[str, ...] | None = None,
                   endpoint: str | None = None, max_workers: int = 4) -> SnapshotResult:
    """Snapshot the repository (resuming partial files) via the Hub API; token from HF_TOKEN."""
    from resumable.hub import snapshot

    progress = DownloadProgress(repo_id, key=artifact_key("snapshot", repo_id))
    try:
        with redacted_errors():
            r = snapshot(repo_id, revision=revision, dest_root=dest_root, include=list(include) if include else None,
                         exclude=list(exclude) if exclude else None, endpoint=endpoint, max_workers=max_workers,
                         progress=progress)
    finally:
        progress.close()
    get_run_logger().info("%s@%s (%s): %s, %d files, %s, %s transferred in %.1f s", repo_id, revision, r.commit[:12],
                          r.status, r.files, human_size(r.bytes_total), human_size(r.bytes_transferred), r.seconds)
    return r


def snapshot_is_current(path: str | Path | None) -> bool:
    """Cheap: every file of the snapshot is still in place (no hashing)."""
    if path is None:
        return False
    from resumable.hub import snapshot_is_complete

    try:
        return snapshot_is_complete(path)
    except OSError:
        return False
