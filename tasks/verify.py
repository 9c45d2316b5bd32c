"""verify: the file on disk is the one expected (size and hash)."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

import resumable
from resumable.errors import IntegrityError
from tasks.caching import STABLE_INPUTS, run_name
from tasks.results import DataOnlyJSON


@task(cache_policy=STABLE_INPUTS, persist_result=True, result_serializer=DataOnlyJSON(),
      task_run_name=run_name("verify", "path"))
def verify(path: str, fetched: resumable.FetchResult, size: int | None = None, hash: str | None = None) -> str:
    """Returns the verified digest ('alg:hex'). Cached on its inputs (the fetched file counts by
    path, bytes and inode); the flow trusts the cache only while fetch_is_current.

    The transfer hashed the bytes as they arrived and recorded it; a file unchanged since then
    is confirmed from that record (no re-hash). A changed file is hashed again, and rejected if
    it no longer matches.
    """
    expected = hash or fetched.digest
    path = Path(path)
    if resumable.is_verified(path, size, expected):
        how = "unchanged since its verification"
    elif resumable.verify_file(path, size, expected):
        how = "re-hashed"
    else:
        raise IntegrityError(
            f"{path}: does not match {'size ' + str(size) + ', ' if size is not None else ''}{expected or 'its download'}; "
            "delete it and run again to download a fresh copy, or fix the expected size/hash"
        )
    get_run_logger().info("%s: verified (%s), %s", path.name, how, expected or f"{fetched.size} bytes")
    return expected or ""
