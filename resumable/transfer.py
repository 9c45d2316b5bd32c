"""The transfer engine: one file from one URL into ``dest``, resumable across process death.

Bytes go to a ``.part`` in the record folder ``.resumable/`` with a small state record (URL
digest, validator, total size) beside it. A later run resumes with ``Range`` + ``If-Range`` and
appends only when the server's ``Content-Range`` proves the bytes continue the same version;
anything else starts over (a few times per run at most). The hash is computed while downloading
on a second thread (over the bytes as read, or, where the kernel splices the body into the file,
over each region right behind it); the destination appears only complete and verified (fsync +
os.replace), and a record of it (source, validator, size, mtime, ctime, inode) is what later
runs trust: a file the engine did not publish from this URL is never reported as done.

This module: ``fetch`` (the arguments, the lock, a file already in place, mirrors in order) and
the publish. One download's attempts: attempt.py (one connection) and segments.py (several);
its part file and record: part.py; reading bodies: body.py; writing them: disk.py.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import Future
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path

import requests
from . import http, locks
from .attempt import NOT_MODIFIED, Download
from .commit import GroupCommit
from .disk import fsync_dir
from .errors import (
    DiskSpaceError,
    IntegrityError,
    LocalFileError,
    ResumableError,
    TransferError,
    UsageError,
)
from .hashes import ExpectedHash, file_digest, parse_hash
from .progress import human_size
from .ramp import AUTO
from .retry import DEFAULT_SPEED_LIMIT, DEFAULT_SPEED_TIME, MAX_FRESH_STARTS, FreshStarts, is_transient
from .state import (
    PartState,
    VerifiedRecord,
    check_destination,
    ensure_record_dir,
    local_error,
    remove_orphaned_private_parts,
    url_id,
)
from .verify import check, is_verified, verify_file

log = logging.getLogger("resumable")


@dataclass
class FetchResult:
    path: Path
    url: str
    size: int
    digest: str | None
    status: str  # "downloaded" | "resumed" | "cached"
    bytes_transferred: int
    seconds: float

    @property
    def speed(self) -> float:
        return self.bytes_transferred / self.seconds if self.seconds > 0 else 0.0


def fetch(url: str, dest: str | Path, *, size: int | None = None, hash: str | ExpectedHash | None = None,
          mirrors: tuple[str, ...] | list[str] = (), connections: int | str = AUTO, retries: int = 5,
          retry_delay: float = 1.0, headers: dict | None = None, timeout=(10, 60), progress=None,
          lock: bool = True, max_time: float | None = None, speed_limit: float = DEFAULT_SPEED_LIMIT,
          speed_time: float = DEFAULT_SPEED_TIME, session: requests.Session | None = None,
          sync_folder: bool = True, commit: GroupCommit | None = None) -> FetchResult | Future:
    """Download ``url`` to ``dest`` (resuming, verifying, atomically); mirrors are tried in order.

    A file already at ``dest`` counts as done only when it matches ``hash``, or when this engine
    published it from one of these URLs and nobody changed it since (then, without ``size``
    either, one conditional request asks the server whether it changed). A body slower than
    ``speed_limit`` bytes/s over ``speed_time`` seconds is a stall (0 disables the rule).
    ``lock=False`` is for file systems where locks silently do nothing: each process then writes
    its own part file (correct, but a killed process's bytes are not resumed).
    ``sync_folder=False`` leaves the fsync of ``dest``'s folder, which makes its name survive a power
    cut, to the caller (``fetch_many`` does it once per folder for the whole batch); the file itself
    is fsynced before it appears either way. ``commit`` (a batch's, see commit.py): a small file
    is made durable and published by it, with others; fetch then returns a Future of the result.
    """
    sources = [http.check_url(u) for u in (url, *mirrors)]
    expected = parse_hash(hash)
    if size is not None and (type(size) is not int or size < 0):
        raise UsageError(f"size {size!r}: expected a number of bytes >= 0")
    if connections != AUTO and (type(connections) is not int or connections < 1):
        raise UsageError(f"connections {connections!r}: use 1 or more, or 'auto'")
    if type(retries) is not int or retries < 0:
        raise UsageError(f"retries {retries!r}: use 0 or more")
    if not speed_limit >= 0 or not speed_time > 0:
        raise UsageError(f"speed limit {speed_limit!r} B/s over {speed_time!r} s: use a limit >= 0 (0: off) "
                         "and a time > 0")
    headers = check_headers(headers or {})
    options = dict(connections=connections, retries=retries, retry_delay=retry_delay, headers=headers,
                   timeout=timeout, progress=progress, max_time=max_time, speed_limit=speed_limit,
                   speed_time=speed_time, session=session, private=not lock)
    try:
        dest = _destination(dest)
        return _fetch(sources, dest, size, expected, lock, options, sync_folder, commit if lock else None)
    except OSError as exc:  # the network's errors are TransferErrors by now: this is the local disk
        raise local_error(exc, dest) from None


def check_headers(headers: dict) -> dict:
    """Request headers that can be sent as given: names are tokens, values one printable line."""
    for name, value in headers.items():
        if not isinstance(name, str) or not name or not all(c.isascii() and c.isprintable() and c not in " :"
                                                            for c in name):
            raise UsageError(f"header name {name!r}: use letters, digits and '-' (e.g. Authorization)")
        if not isinstance(value, str) or any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7f for c in value):
            raise UsageError(f"header {name}: its value must be one line of text (no CR, LF or NUL)")
    return dict(headers)


def _destination(dest: str | Path) -> Path:
    text = os.fspath(dest)
    if not text or "\0" in str(text):
        raise UsageError(f"destination {str(text)!r}: give a file path (e.g. -o data/file.zip)")
    path = Path(text).absolute()
    if path.is_dir():
        raise UsageError(f"destination {path} is a directory; pass a file path (or -d DIR to name it from the URL)")
    return path


def _fetch(sources: list[str], dest: Path, size: int | None, expected: ExpectedHash | None, lock: bool,
           options: dict, sync_folder: bool = True, commit: GroupCommit | None = None) -> FetchResult | Future:
    check_destination(dest)
    try:
        if not os.path.isdir(dest.parent):  # usually there: a mkdir that fails still waits for a lock
            dest.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise LocalFileError(f"{dest.parent}: a file stands where the destination's folder should be; "
                             "choose another path") from None
    ensure_record_dir(dest)
    t0 = time.monotonic()
    with ExitStack() as held:  # a file left to ``commit`` takes its lock along (held.pop_all)
        held.enter_context(_exclusive(dest, lock))
        present = check_destination(dest)
        cached = present and _existing(dest, size, expected, sources, t0)
        if cached:
            if sync_folder:  # it may be the file of a batch killed before its folder's fsync
                fsync_dir(dest.parent)
            return cached
        failures: list[ResumableError] = []
        fresh_starts = FreshStarts()  # shared by the mirrors: bad bytes from each do not buy more full copies
        for source in sources:
            revalidate = _revalidation(dest, source, size, expected) if present else None
            download = Download(source, dest, size, expected, revalidate=revalidate,
                                 fresh_starts=fresh_starts, defer_sync=commit is not None, **options)
            try:
                return _run(download, t0, sync_folder, commit, held)
            except (UsageError, DiskSpaceError, LocalFileError):
                raise
            except ResumableError as exc:
                failures.append(exc)
                if source != sources[-1]:
                    log.warning("%s; trying the next mirror", exc)
        if len(failures) == 1:
            raise failures[0]
        err = TransferError("all sources failed: " + " | ".join(str(f) for f in failures))
        err.transient = any(is_transient(f) for f in failures)  # worth a re-run only if one of them is
        raise err


def _exclusive(dest: Path, enabled: bool):
    """One process transfers, the others wait, then find the result in place.

    Without the lock (``enabled=False``) every writer uses a part file of its own (see PartFile),
    so writers never mix their bytes whatever the file system does with locks.
    """
    return locks.exclusive(dest) if enabled else nullcontext()


def _existing(dest: Path, size: int | None, expected: ExpectedHash | None, sources: list[str],
              t0: float) -> FetchResult | None:
    """The destination already in place, when it is known to be right without a transfer: it
    matches the expected hash (re-hashed only if it changed since it was checked), or the engine
    published it from one of ``sources`` with this size and nobody changed it since."""
    if not os.path.lexists(dest):
        return None
    if expected is not None:
        if not (is_verified(dest, size, expected) or verify_file(dest, size, expected)):
            log.warning("%s: existing file fails verification; fetching a fresh copy (the old one stays until the "
                        "new one verifies)", dest)
            return None
    elif size is None or not _published_from(dest, sources, size):
        return None  # without a hash: ask the server (conditional request) or fetch again
    record = VerifiedRecord.load(dest)
    digests = record.digests if record and record.matches(dest) else {}
    alg = expected.algorithm if expected else "sha256"
    digest = f"{alg}:{digests[alg]}" if alg in digests else None
    return FetchResult(dest, sources[0], os.lstat(dest).st_size, digest, "cached", 0, time.monotonic() - t0)


def _published_from(dest: Path, sources: list[str], size: int | None = None) -> VerifiedRecord | None:
    """The record of ``dest`` when the engine published it from one of ``sources`` (with ``size``)
    and it is unchanged since."""
    record = VerifiedRecord.load(dest)
    if record is None or not record.matches(dest) or record.source not in {url_id(s) for s in sources}:
        return None
    return record if size is None or record.size == size else None


def _revalidation(dest: Path, source: str, size: int | None, expected: ExpectedHash | None) -> VerifiedRecord | None:
    """The record whose validator a conditional request to ``source`` sends: only for a file without
    size and hash that the engine published from that very URL (an ETag means nothing for another URL)."""
    if size is not None or expected is not None:
        return None
    record = _published_from(dest, [source])
    return record if record and record.validator else None


def _run(d: Download, t0: float, sync_folder: bool = True, commit: GroupCommit | None = None,
         held: ExitStack | None = None) -> FetchResult | Future:
    """The download's attempts, as its retry policy allows, then the publish (by ``commit``, with
    the lock in ``held``, for a part the attempt left unsynced)."""
    if d.part.private:
        remove_orphaned_private_parts(d.dest)  # of lock-free writers killed earlier (a folder scan)
    state = d.part.load()
    if state and state.segments:
        # A preallocated .part has holes: only its segments know the progress, whatever
        # connection count this run asked for.
        d.segmented = True
    try:
        try:
            digests = d.policy.call(d.attempt)
        except TransferError as exc:
            if d.policy.gave_up_restarting:  # same error, same type: say why it is the last, and what to do
                exc.args = (f"{exc}; gave up after {MAX_FRESH_STARTS + 1} downloads from byte 0 in this run: "
                            + _why_no_download_completes(exc, d.policy.budget.bad_digests),)
                exc.transient = False
            raise
        if digests is NOT_MODIFIED:
            if sync_folder:  # as for a file found in place (see _fetch)
                fsync_dir(d.dest.parent)
            return _unchanged(d, t0)
        if d.unsynced:
            return commit.submit(d.part.path, lambda: _result(d, _publish(d, digests, sync_folder), t0),
                                 held.pop_all())
        digests = _publish(d, digests, sync_folder)
    except BaseException:
        if d.part.private:
            d.part.discard()  # nobody else can resume a private part
        raise
    finally:
        d.reporter.close()
    return _result(d, digests, t0)


def _result(d: Download, digests: dict[str, str], t0: float) -> FetchResult:
    seconds = time.monotonic() - t0
    result = FetchResult(d.dest, d.url, os.lstat(d.dest).st_size, f"{d.algorithm}:{digests[d.algorithm]}",
                         "resumed" if d.resumed else "downloaded", d.transferred, seconds)
    log.info("%s: %s, %s transferred in %.1fs (%s/s)", d.dest.name, result.status,
             human_size(result.bytes_transferred), seconds, human_size(result.speed))
    return result


def _why_no_download_completes(exc: TransferError, bad_digests: set[str]) -> str:
    """The likely cause, and the fix, when every download from byte 0 failed (a re-run of the same
    command would fail the same way)."""
    if isinstance(exc, IntegrityError) and len(bad_digests) == 1:
        return ("each download brought the same bytes, so the expected hash or size is wrong, or the file changed "
                "upstream: correct it (--hash/--size, or hash:/size: in the config or registry)")
    if isinstance(exc, IntegrityError) and len(bad_digests) > 1:
        return "the downloads differ from each other: the server or the network corrupts the bytes; try a mirror"
    return "the server cannot continue or complete the file; try a mirror, or later"


def _unchanged(d: Download, t0: float) -> FetchResult:
    """The server answered 304 to our conditional request: the file in place is current."""
    record = VerifiedRecord.load(d.dest)
    digest = record.digests.get("sha256") if record else None
    log.info("%s: unchanged on the server (304); kept", d.dest.name)
    return FetchResult(d.dest, d.url, os.lstat(d.dest).st_size, digest and f"sha256:{digest}",
                       "cached", 0, time.monotonic() - t0)


def _publish(d: Download, digests: dict[str, str], sync_folder: bool = True) -> dict[str, str]:
    """Put the verified part in place of the destination and record where it came from;
    returns the digests of the file now published."""
    part = d.part
    if not part.private:
        current = PartState.load(d.dest)
        if current is None and part.unrecorded():
            # Never recorded, so another writer (where locks do nothing) finds no record to resume
            # and starts the part afresh: then what is there is not the file this download verified.
            now = part.identity()  # None: gone, the other writer published first (checked below)
            if d.identity is not None and now is not None and now != d.identity:
                raise TransferError(f"{d.dest.name}: another process replaced the partial file before it was "
                                    "published (a lock that did nothing?); run again to fetch it")
        elif current is None or current.owner != part.owner:
            # Another writer touched the .part (a lock that did nothing): trust only the bytes on disk.
            log.warning("%s: another process wrote the same partial file; re-checking it before publishing",
                        d.dest.name)
            try:
                digests = part.digest(d.algorithm)
                problem = check(part.size(), digests, d.size, d.expected)
            except FileNotFoundError:
                problem = None  # already published by the other writer: checked below
            if problem:
                raise IntegrityError(f"{d.dest.name}: concurrent writers left a bad partial file ({problem})")
    check_destination(d.dest)
    try:
        os.replace(part.path, d.dest)
    except FileNotFoundError:
        if part.private:
            raise
        # The other writer published first: its file counts only if it verifies, with its own digest.
        digests = {d.algorithm: file_digest(d.dest, d.algorithm)}
        problem = check(os.lstat(d.dest).st_size, digests, d.size, d.expected)
        if problem:
            raise IntegrityError(f"{d.dest.name}: published by another process but {problem}") from None
        return digests
    if sync_folder:
        fsync_dir(d.dest.parent)
    VerifiedRecord.of(d.dest, digests, url_id(d.url), d.validator).save(d.dest)
    part.discard()
    return digests
