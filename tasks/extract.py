"""extract: unpack a verified archive into its target folder (atomically, once per archive version)."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from resumable.progress import human_size
from resumable import FetchResult
from resumable.extract import ExtractResult
from tasks.caching import STABLE_INPUTS, cache_identity, run_name
from tasks.results import DataOnlyJSON, result_type


result_type(ExtractResult)


@cache_identity.register
def _(r: ExtractResult) -> tuple:
    # Training sees the extracted tree (where, which archive, how much), not whether this run extracted it.
    return str(r.target), r.archive_digest, r.format, r.files, r.bytes


# Caching: the key is the archive (by path, bytes and inode), its digest, the target and unwrap;
# the flow trusts a cached result only while extraction_is_current (the extraction record, every
# member stat'ed).
@task(cache_policy=STABLE_INPUTS, persist_result=True, result_serializer=DataOnlyJSON(),
      task_run_name=run_name("extract", "target"))
def extract(archive: FetchResult, digest: str, target: str, unwrap: str | None = None) -> ExtractResult:
    """Unpack ``archive`` (already verified, ``digest`` 'alg:hex') into ``target``; an archive holding
    nothing but a folder named ``unwrap`` fills the target with that folder's content."""
    from resumable.errors import CorruptArchiveError
    from resumable.extract import extract as extract_archive

    try:
        r = extract_archive(archive.path, target, archive_digest=digest or None, unwrap=unwrap)
    except CorruptArchiveError as exc:  # bytes that do not decode: a new download can help (a bomb cannot)
        raise CorruptArchiveError(exc.problem, f"moved aside to {quarantine(archive.path).name}, so the next run "
                                  "downloads it again (check the source or its hash first)") from None
    get_run_logger().info("%s -> %s: %s, %d files, %s", Path(archive.path).name, r.target, r.status, r.files,
                          human_size(r.bytes))
    return r


def quarantine(path: str | Path) -> Path:
    """Move a corrupt archive out of the way (kept for inspection): the next fetch starts afresh."""
    from resumable.state import corrupt_path

    dest = corrupt_path(Path(path))
    Path(path).replace(dest)
    return dest


def extraction_is_current(archive: str | Path, target: str | Path, unwrap: str | None = None) -> bool:
    """Cheap: ``target`` still holds this archive's content, every extracted member present and
    unchanged (one stat each, no hashing; ~0.3 s for 100,000 files). ``unwrap`` as given to extract."""
    from resumable.extract import extraction_is_current as current

    try:
        return current(archive, target, unwrap=unwrap)
    except OSError:
        return False
