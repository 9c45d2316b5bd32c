"""fetch_with_resume: one file through the resumable engine (resume, mirrors, verified while it streams)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from prefect import get_run_logger, task

import resumable
from resumable.errors import TransferError, UsageError
from resumable.http import redact  # signed URLs carry tokens: never log or persist them
from resumable.progress import human_size
from tasks.caching import StableInputs, cache_identity, file_identity, run_name, transient_only
from tasks.ui_progress import DownloadProgress, artifact_key
from tasks.results import DataOnlyJSON, result_type
from tasks.secrets import redacted_errors
from train_pipeline.config import FileSpec


result_type(resumable.FetchResult)  # stored as data (tasks.results), with the URL redacted


@cache_identity.register
def _(r: resumable.FetchResult) -> tuple:
    # Downstream steps see this exact file (path, bytes, inode now), not how it was transferred.
    return str(r.path), r.size, r.digest, file_identity(r.path)


# Caching: the key is dest + size + hash (the bytes); where they come from (URL, mirrors, a
# server on a random port) and how (connections, retries) do not change the result. Without a
# hash the URL does name the content, so it stays in the key. The flow trusts a cached result
# only while fetch_is_current (the engine's verification record still matches the file).
DOWNLOAD_CACHE = StableInputs(exclude=("url", "mirrors", "connections", "retries"), pinned_by="hash",
                              unpinned_keep=("url",))


@task(cache_policy=DOWNLOAD_CACHE, persist_result=True, result_serializer=DataOnlyJSON(), retries=2,
      retry_delay_seconds=[2, 10], retry_condition_fn=transient_only,
      task_run_name=run_name("fetch", "dest"))
def fetch_with_resume(url: str, dest: str, size: int | None = None, hash: str | None = None,
                      mirrors: tuple[str, ...] = (), connections: int | str = "auto", retries: int = 5) -> resumable.FetchResult:
    """Download ``url`` to ``dest``; resumes a ``.part`` left by an earlier run, tries mirrors in order."""
    logger = get_run_logger()
    name = Path(dest).name
    check_not_redacted(url, *mirrors)
    progress = DownloadProgress(name, key=artifact_key("download", name))
    try:
        with redacted_errors():
            r = resumable.fetch(url, dest, size=size, hash=hash, mirrors=tuple(mirrors), connections=connections,
                                retries=retries, progress=progress)
    finally:
        progress.close()
    logger.info("%s: %s, %s transferred in %.1f s (%s/s) from %s, %s", name, r.status, human_size(r.bytes_transferred),
                r.seconds, human_size(r.speed), redact(r.url), r.digest or "no hash")
    return replace(r, url=redact(r.url))


BATCH_CACHE = StableInputs(exclude=("jobs", "connections", "retries"))  # files count by cache_identity()


@task(cache_policy=BATCH_CACHE, persist_result=True, result_serializer=DataOnlyJSON(), retries=2,
      retry_delay_seconds=[2, 10], retry_condition_fn=transient_only,
      task_run_name=run_name("fetch-batch", "dest_dir"))
def fetch_batch(files: tuple[FileSpec, ...], dest_dir: str, jobs: int = 8, connections: int | str = "auto",
                retries: int = 5) -> list[resumable.FetchResult]:
    """Many small files in one task: bounded concurrency over one connection pool, each verified
    (size, hash) as it streams. A failure fails the task after the others finished; a re-run
    transfers only what is still missing."""
    logger = get_run_logger()
    for f in files:
        check_not_redacted(f.url, *f.mirrors)
    items = [resumable.FetchItem(f.url, Path(dest_dir) / f.filename, f.size, f.hash, tuple(f.mirrors)) for f in files]
    with redacted_errors():
        results = resumable.fetch_many(items, jobs=jobs, progress=False, connections=connections, retries=retries)
    failures = [(item, r) for item, r in zip(items, results) if isinstance(r, Exception)]
    done = [r for r in results if not isinstance(r, Exception)]
    moved = sum(r.bytes_transferred for r in done)
    seconds = max((r.seconds for r in done), default=0.0)
    logger.info("%d of %d files fetched, %s transferred in %.1f s (%s/s)", len(done), len(items), human_size(moved),
                seconds, human_size(moved / seconds if seconds > 0 else 0))
    if failures:
        transient = all(getattr(r, "transient", False) for _, r in failures)
        more = f" | and {len(failures) - 5} more" if len(failures) > 5 else ""
        # A re-run fetches only the failed files; it can fix them only when every failure was transient.
        error = TransferError(f"{len(failures)} of {len(items)} files failed: "
                              + " | ".join(f"{Path(i.dest).name}: {r}" for i, r in failures[:5]) + more
                              + ("; run again to fetch only those" if transient
                                 else "; fix the files' url, mirrors or hash, then run again to fetch only those"))
        error.transient = transient
        raise error
    return [replace(r, url=redact(r.url)) for r in done]


def check_not_redacted(*urls: str) -> None:
    """A URL whose query Prefect only has redacted (a retry of a run started from Python gets its
    parameters back from Prefect, which stores them without secrets) cannot be downloaded: say so."""
    for url in urls:
        if urlsplit(url).query == "…":  # what resumable.redaction.redact leaves of a query
            raise UsageError(f"{url}: the URL's query (a signature or token) is not kept in Prefect's stored "
                             "parameters, so this retried run cannot download it; run the flow again with its "
                             "config (python flows/pipeline.py --config FILE, or a deployment's config_file)")


def fetch_is_current(dest: str | Path, size: int | None, hash: str | None) -> bool:
    """Cheap: the file is still the one a verification accepted (no hashing)."""
    return resumable.is_verified(dest, size, hash)
