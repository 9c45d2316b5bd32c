"""hub_files: one hf:// source of a dataset, through the snapshot machinery, into its downloads folder.

The same path as the model snapshot (resumable.hub.snapshot: revision pinned to a commit, each
file fetched by the engine and verified by LFS sha256 / git blob sha1, a manifest, offline
re-runs), then the selected files hard-linked into ``<data_dir>/downloads/<dataset>/`` under
their repository paths (resumable.hub.sources.fetch_hf), where training reads them.
"""

from __future__ import annotations

from prefect import get_run_logger, task

from resumable.hub.sources import HubFiles, hub_files_current
from resumable.progress import human_size
from tasks.caching import StableInputs, transient_only
from tasks.results import DataOnlyJSON, result_type
from tasks.secrets import redacted_errors
from tasks.ui_progress import DownloadProgress, artifact_key

result_type(HubFiles)  # counts downstream by HubFiles.cache_identity: the source, its commit, the files

# Caching, as the model snapshot's: the key is the source (repository, revision, path or glob), the
# folder and any size/hash; where the Hub is (endpoint: a local server picks a random port) and how
# hard to pull do not change the files. The flow trusts a cached result only while
# hub_files_current (every published file still the snapshot's verified file: stats, no hashing).
HUB_FILES_CACHE = StableInputs(exclude=("endpoint", "max_workers"))


@task(cache_policy=HUB_FILES_CACHE, persist_result=True, result_serializer=DataOnlyJSON(), retries=2,
      retry_delay_seconds=[2, 10], retry_condition_fn=transient_only, task_run_name="hf {source}")
def hub_files(source: str, dest_dir: str, size: int | None = None, hash: str | None = None,
              endpoint: str | None = None, max_workers: int = 4, reserved: dict[str, str] | None = None) -> HubFiles:
    """The files ``source`` (hf://...) selects, in ``dest_dir`` under their repository paths; token from HF_TOKEN.
    ``reserved``: {path in dest_dir: whose} of the dataset's other files there, never this source's to publish."""
    from resumable.hub.sources import fetch_hf

    progress = DownloadProgress(source, key=artifact_key("hf", source))
    try:
        with redacted_errors():
            r = fetch_hf(source, dest_dir, size=size, hash=hash, endpoint=endpoint, max_workers=max_workers,
                         progress=progress, reserved=reserved)
    finally:
        progress.close()
    get_run_logger().info("%s (%s): %s, %d files, %s, %s transferred in %.1f s", source, r.commit[:12], r.status,
                          len(r.files), human_size(r.bytes_total), human_size(r.bytes_transferred), r.seconds)
    return r


__all__ = ["HUB_FILES_CACHE", "hub_files", "hub_files_current"]
