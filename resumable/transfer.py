"""The transfer engine: one file from one URL into ``dest``, resumable across process death.

Bytes go to a ``.part`` in the record folder ``.resumable/`` with a small state record (URL
digest, validator, total size) beside it. A later run resumes with ``Range`` + ``If-Range`` and
appends only when the server's ``Content-Range`` proves the bytes continue the same version;
anything else starts over (a few times per run at most). The hash is computed while downloading
on a second thread (over the bytes as read, or, where the kernel splices the body into the file,
over each region right behind it); the destination appears only complete and verified (fsync +
os.replace), and a record of it (source, validator, size, mtime, ctime, inode) is what later
runs trust: a file the engine did not publish from this URL is never reported as done.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import sys
import time
import uuid
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
import threading
from pathlib import Path
from typing import Iterator

import requests
import urllib3
from filelock import FileLock, Timeout

from . import http, zerocopy
from .errors import (
    DiskSpaceError,
    IntegrityError,
    LocalFileError,
    ProtocolViolation,
    ResumableError,
    TransferError,
    UsageError,
)
from .hashes import BackgroundHasher, ExpectedHash, file_digest, parse_hash, update_from_fd
from .progress import Reporter, human_size
from .retry import (
    DEFAULT_SPEED_LIMIT,
    DEFAULT_SPEED_TIME,
    MAX_FRESH_STARTS,
    WATCHDOG,
    FreshStarts,
    RetryPolicy,
    SpeedGuard,
)
from .state import (
    PartState,
    VerifiedRecord,
    check_destination,
    corrupt_path,
    ensure_record_dir,
    local_error,
    lock_path,
    open_regular,
    part_path,
    private_part_path,
    remove_orphaned_private_parts,
    state_path,
    url_id,
)
from .verify import check, is_verified, verify_file

log = logging.getLogger("resumable")

READ_SIZE = 1 << 20  # socket read size, whatever chunk size a caller asks for: small reads cost 2x
MIN_SEGMENT = 32 << 20  # smaller segments gain nothing and lose to per-request overhead
STATE_SAVE_INTERVAL = 0.1  # seconds of segment progress a SIGKILL may cost
HASH_BUFFERS = 16  # reads waiting for the hashing thread at most (memory stays flat: 17 x READ_SIZE)
HASH_STEP = 4 << 20  # spliced bytes are handed to the hashing thread in regions of this size
WRITEBACK_STEP = 32 << 20  # start writing dirty pages to disk every this many bytes, so the final fsync is short
_NOT_MODIFIED: dict[str, str] = {}  # the attempt's answer when a conditional request got 304


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
          mirrors: tuple[str, ...] | list[str] = (), connections: int = 1, retries: int = 5,
          retry_delay: float = 1.0, headers: dict | None = None, timeout=(10, 60), progress=None,
          lock: bool = True, max_time: float | None = None, speed_limit: float = DEFAULT_SPEED_LIMIT,
          speed_time: float = DEFAULT_SPEED_TIME, session: requests.Session | None = None) -> FetchResult:
    """Download ``url`` to ``dest`` (resuming, verifying, atomically); mirrors are tried in order.

    A file already at ``dest`` counts as done only when it matches ``hash``, or when this engine
    published it from one of these URLs and nobody changed it since (then, without ``size``
    either, one conditional request asks the server whether it changed). A body slower than
    ``speed_limit`` bytes/s over ``speed_time`` seconds is a stall (0 disables the rule).
    ``lock=False`` is for file systems where locks silently do nothing: each process then writes
    its own part file (correct, but a killed process's bytes are not resumed).
    """
    sources = [http.check_url(u) for u in (url, *mirrors)]
    expected = parse_hash(hash)
    if size is not None and (type(size) is not int or size < 0):
        raise UsageError(f"size {size!r}: expected a number of bytes >= 0")
    if type(connections) is not int or connections < 1:
        raise UsageError(f"connections {connections!r}: use 1 or more")
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
        return _fetch(sources, dest, size, expected, lock, options)
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
           options: dict) -> FetchResult:
    check_destination(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise LocalFileError(f"{dest.parent}: a file stands where the destination's folder should be; "
                             "choose another path") from None
    ensure_record_dir(dest)
    t0 = time.monotonic()
    with _exclusive(dest, lock):
        check_destination(dest)
        cached = _existing(dest, size, expected, sources, t0)
        if cached:
            return cached
        failures: list[ResumableError] = []
        fresh_starts = FreshStarts()  # shared by the mirrors: bad bytes from each do not buy more full copies
        for source in sources:
            job = _Transfer(source, dest, size, expected, revalidate=_revalidation(dest, source, size, expected),
                            fresh_starts=fresh_starts, **options)
            try:
                return job.run(t0)
            except (UsageError, DiskSpaceError, LocalFileError):
                raise
            except ResumableError as exc:
                failures.append(exc)
                if source != sources[-1]:
                    log.warning("%s; trying the next mirror", exc)
        if len(failures) == 1:
            raise failures[0]
        raise TransferError("all sources failed: " + " | ".join(str(f) for f in failures))


@contextmanager
def _exclusive(dest: Path, enabled: bool):
    """One process transfers, the others wait, then find the result in place.

    Without the lock (``enabled=False``) every writer uses a part file of its own (see _Transfer),
    so writers never mix their bytes whatever the file system does with locks.
    """
    if not enabled:
        yield
        return
    # An explicit mode without group/other write: filelock then skips probing the directory for
    # flock support with a scratch file on every lock (a third of a small file's cost); a file
    # system without flock is still detected when locking. filelock opens with O_NOFOLLOW.
    path = lock_path(dest)
    flock = FileLock(str(path), mode=0o644)
    try:
        try:
            flock.acquire(timeout=0.05)
        except Timeout:
            log.info("%s: another process is fetching it; waiting", dest.name)
            flock.acquire()
    except OSError as exc:
        raise local_error(exc, path) from None
    try:
        yield
    finally:
        flock.release()


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


class _RestartFromZero(ProtocolViolation):
    """The server's answer cannot continue our bytes (new version, no Range): start over."""


class _Transfer:
    def __init__(self, url: str, dest: Path, size: int | None, expected: ExpectedHash | None, *, connections: int,
                 retries: int, retry_delay: float, headers: dict, timeout, progress, max_time: float | None,
                 speed_limit: float, speed_time: float, session: requests.Session | None, private: bool,
                 revalidate: VerifiedRecord | None, fresh_starts: FreshStarts):
        self.url, self.dest = url, dest
        self.owner = uuid.uuid4().hex
        self.private = private
        self.part = private_part_path(dest, self.owner) if private else part_path(dest)
        self.size, self.expected = size, expected
        self.algorithm = expected.algorithm if expected else "sha256"
        self.connections, self.retries, self.retry_delay = connections, retries, retry_delay
        self.headers = {**headers, "Accept-Encoding": "identity"}
        self.timeout = timeout
        self.speed_limit, self.speed_time = speed_limit, speed_time
        self.session = session or http.new_session()
        self.policy = RetryPolicy(retries=retries, delay=retry_delay, max_time=max_time,
                                  min_progress=speed_limit * speed_time, fresh_starts=fresh_starts)
        self.reporter = Reporter(dest.name, progress, size)
        self.state: PartState | None = None
        self.revalidate = revalidate  # the record of the file in place: ask the server if it changed
        self.validator: str | None = None  # ETag or Last-Modified of what we publish, for the next re-check
        self.transferred = 0
        self.resumed = False
        self.segmented = connections > 1

    # -- the whole job -----------------------------------------------------------------------
    def run(self, t0: float) -> FetchResult:
        if self.private:
            remove_orphaned_private_parts(self.dest)  # of lock-free writers killed earlier (a folder scan)
        self.state = self._load_state()
        if self.state and self.state.segments:
            # A preallocated .part has holes: only its segments know the progress, whatever
            # connection count this run asked for.
            self.segmented = True
        try:
            try:
                digests = self.policy.call(self._attempt)
            except TransferError as exc:
                if self.policy.gave_up_restarting:  # same error, same type: say why it is the last
                    exc.args = (f"{exc}; gave up after {MAX_FRESH_STARTS + 1} downloads from byte 0 in this run "
                                "(the server keeps sending bytes that cannot complete the file)",)
                    exc.transient = False
                raise
            if digests is _NOT_MODIFIED:
                return self._unchanged(t0)
            digests = self._publish(digests)
        except BaseException:
            if self.private:
                self._discard()  # nobody else can resume a private part
            raise
        finally:
            self.reporter.close()
        seconds = time.monotonic() - t0
        result = FetchResult(self.dest, self.url, os.lstat(self.dest).st_size,
                             f"{self.algorithm}:{digests[self.algorithm]}",
                             "resumed" if self.resumed else "downloaded", self.transferred, seconds)
        log.info("%s: %s, %s transferred in %.1fs (%s/s)", self.dest.name, result.status,
                 human_size(result.bytes_transferred), seconds, human_size(result.speed))
        return result

    def _unchanged_or_retry(self, resp: requests.Response) -> dict[str, str]:
        """The answer to a conditional request: 304, or the 1-byte 206 of a matching If-Range (which
        must also agree on the size)."""
        if resp.status_code == 304:
            return _NOT_MODIFIED
        cr = http.parse_content_range(resp.headers.get("Content-Range"))
        if cr is not None and cr.total == self.revalidate.size:
            return _NOT_MODIFIED
        self.revalidate = None  # a server that keeps the date but not the size: download it again
        raise ProtocolViolation(f"{http.redact(self.url)}: same Last-Modified, another size "
                                f"({resp.headers.get('Content-Range')!r}); downloading it again")

    def _unchanged(self, t0: float) -> FetchResult:
        """The server answered 304 to our conditional request: the file in place is current."""
        record = VerifiedRecord.load(self.dest)
        digest = record.digests.get("sha256") if record else None
        log.info("%s: unchanged on the server (304); kept", self.dest.name)
        return FetchResult(self.dest, self.url, os.lstat(self.dest).st_size, digest and f"sha256:{digest}",
                           "cached", 0, time.monotonic() - t0)

    def _attempt(self) -> dict[str, str]:
        try:
            return self._attempt_and_check()
        except FileNotFoundError:
            # Only another writer that ignored (or never saw) our lock removes the .part.
            self.state = None
            raise TransferError(f"{self.dest.name}: the partial file vanished while fetching (another process?); "
                                "trying again") from None

    def _attempt_and_check(self) -> dict[str, str]:
        if self.segmented:
            digests = self._attempt_segmented()
        else:
            digests = self._attempt_sequential()
        if digests is _NOT_MODIFIED:
            return digests
        problem = check(os.lstat(self.part).st_size, digests, self.size, self.expected)
        if problem:
            corrupt = corrupt_path(self.dest)
            os.replace(self.part, corrupt)
            self._discard()
            self.state = None
            self.policy.fresh_start()
            raise IntegrityError(f"{self.dest.name} from {http.redact(self.url)}: {problem}; "
                                 f"the bad bytes are kept in {corrupt}")
        return digests

    # -- state ------------------------------------------------------------------------------------
    def _load_state(self) -> PartState | None:
        if self.private:
            return None
        state = PartState.load(self.dest)
        if state is None or not _regular(self.part):
            self._discard()
            return None
        if state.expected_hash and self.expected and state.expected_hash != str(self.expected):
            self._discard()  # bytes of another file
            return None
        if state.total is not None and not state.segments and os.lstat(self.part).st_size > state.total:
            self._discard()  # more bytes than the file has: not ours to trust
            return None
        if state.source != url_id(self.url):
            if not (self.expected and state.expected_hash == str(self.expected)):
                self._discard()  # another source, nothing to prove the bytes match
                return None
            # Same expected hash from a mirror: keep the bytes, its validator means nothing here.
            state.source, state.url, state.validator = url_id(self.url), http.redact(self.url), None
        state.owner = self.owner
        state.save(self.dest)
        return state

    def _new_state(self, resp: requests.Response, total: int | None, segments=()) -> PartState:
        self.state = PartState(url_id(self.url), http.redact(self.url), http.strong_validator(resp), total,
                               str(self.expected) if self.expected else None, self.owner,
                               [list(s) for s in segments])
        self.validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
        self._save_state()
        return self.state

    def _save_state(self) -> None:
        if not self.private and not self._unrecorded():
            self.state.save(self.dest)

    def _unrecorded(self) -> bool:
        """A body that arrives in one read gains nothing from a resume record (a kill costs at
        most that read), and writing one is a file creation per small file."""
        s = self.state
        return s is not None and not s.segments and s.total is not None and s.total <= READ_SIZE

    def _discard(self) -> None:
        paths = (self.part,) if self.private else (self.part, state_path(self.dest))
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def _restart(self, why: str) -> _RestartFromZero:
        log.warning("%s: %s; starting over from byte 0", self.dest.name, why)
        self._discard()
        self.state = None
        self.policy.fresh_start()
        return _RestartFromZero(f"{self.dest.name}: {why}")

    def _check_total(self, total: int | None, have: int) -> None:
        if total is not None and self.size is not None and total != self.size:
            err = IntegrityError(f"{http.redact(self.url)}: server reports {total} bytes, expected {self.size}; "
                                 "the file changed upstream or the expected size is wrong")
            err.transient = False
            raise err
        if total is not None:
            need = total - have
            free = shutil.disk_usage(self.dest.parent).free
            if need > free:
                raise DiskSpaceError(f"{self.dest}: needs {human_size(need)} more but {self.dest.parent} has "
                                     f"{human_size(free)} free; free some space or choose another directory")

    def _request(self, method: str, headers: dict, session: requests.Session | None = None) -> requests.Response:
        return http.request(session or self.session, method, self.url, {**self.headers, **headers}, self.timeout,
                            SpeedGuard(self.speed_limit, self.speed_time, http.redact(self.url)))

    # -- one connection ---------------------------------------------------------------------------
    def _attempt_sequential(self) -> dict[str, str]:
        offset = os.lstat(self.part).st_size if self.state and _regular(self.part) else 0
        if offset and not (self.state.validator or self.expected):
            offset = 0  # nothing could prove the server still has the same bytes: start over
            self.policy.fresh_start()
        extra = {}
        if offset:
            extra["Range"] = f"bytes={offset}-"
            if self.state.validator:
                extra["If-Range"] = self.state.validator
        elif self.revalidate:
            extra.update(_conditional(self.revalidate.validator))
        resp = self._request("GET", extra)
        with resp:
            if self.revalidate and not offset and resp.status_code in (206, 304):
                return self._unchanged_or_retry(resp)
            if resp.status_code == 416:
                total = http.parse_unsatisfied_range(resp.headers.get("Content-Range"))
                # Every byte is here already, if the server's size is ours (or the hash will say so).
                if offset and total == offset and (self.state.total in (None, offset) or self.expected):
                    self._check_total(total, offset)
                    self.state.total = total
                    self.validator = self.state.validator
                    self.reporter.set_total(total, offset)
                    return self._hash_file()
                raise self._restart(f"server refused the range {offset}- (416)")
            if resp.status_code not in (200, 206):
                raise http.status_error(resp, self.url)
            self.revalidate = None  # answered: from here on a plain download
            if resp.status_code == 206:
                cr = http.parse_content_range(resp.headers.get("Content-Range"))
                known = self.state.total if self.state else None
                length = http.body_length(resp)
                if not offset or cr is None or cr.start != offset or cr.total is None \
                        or cr.end != cr.total - 1 or (known is not None and cr.total != known):
                    raise self._restart(f"server answered range {offset}- with "
                                        f"{resp.headers.get('Content-Range')!r}")
                if length is not None and length != cr.end - cr.start + 1:
                    raise ProtocolViolation(f"{http.redact(self.url)}: Content-Length {length} disagrees with "
                                            f"Content-Range {resp.headers.get('Content-Range')!r}")
                total = cr.total
                self.state.total = total
                self.validator = self.state.validator
                self.resumed = True
            else:
                if offset:
                    log.info("%s: server sent the whole file (new version or no Range support); starting over",
                             self.dest.name)
                    self.policy.fresh_start()
                offset, total = 0, http.body_length(resp)
                self._new_state(resp, total)
            self._check_total(total, offset)
            self.reporter.set_total(total, offset)
            return self._stream(resp, offset, total)

    def _stream(self, resp: requests.Response, offset: int, total: int | None) -> dict[str, str]:
        # Read and written through one descriptor: the hashing thread reads back the regions the
        # kernel spliced in (see zerocopy), and must be done before the descriptor closes.
        fd = open_regular(self.part, os.O_RDWR | os.O_CREAT)
        hasher = BackgroundHasher(self.algorithm, max_pending=HASH_BUFFERS)
        pos = offset
        try:
            if offset:
                hasher.update_from_fd(fd, 0, offset)  # the prefix, hashed once
            else:
                os.ftruncate(fd, 0)
            try:
                for n in self._receive(resp, fd, pos, total, hasher):
                    pos += n
                    self._count(n)
            except BaseException as exc:
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    os.ftruncate(fd, pos)  # a piece half written: keep exactly the bytes we count
                    self._record_partial(pos)
                    raise local_error(exc, self.dest) from None
                self._record_partial(pos)
                raise
            os.fsync(fd)
            digest = hasher.hexdigest()
        finally:
            hasher.close()
            os.close(fd)
        if total is not None and pos != total:
            self._record_partial(pos)
            raise ProtocolViolation(f"{http.redact(self.url)}: body ended at byte {pos} of {total}")
        if total is None:
            self.state.total = pos
            self._save_state()
        return {self.algorithm: digest}

    def _receive(self, resp: requests.Response, fd: int, pos: int, total: int | None,
                 hasher: BackgroundHasher) -> Iterator[int]:
        """Write the body into ``fd`` from ``pos`` on, feeding ``hasher``; yields each piece's size.

        Spliced by the kernel where it pays (plain HTTP on Linux, bodies larger than one read: no
        copy through Python), else read into pooled buffers that the hasher hands back once hashed.
        A body longer than the expected size stops at once; a trickle ends by the speed rule.
        """
        guard = resp.guard
        cap = total if total is not None else self.size
        with WATCHDOG.watching(guard):
            try:
                for n in self._receive_body(resp, fd, pos, total, hasher):
                    pos += n
                    if cap is not None and pos > cap:
                        self._discard()
                        self.state = None
                        self.policy.fresh_start()
                        raise IntegrityError(f"{http.redact(self.url)}: the body runs past the expected {cap} "
                                             "bytes; the file changed upstream or the expected size is wrong")
                    guard.add(n)
                    yield n
            except TransferError:
                guard.raise_if_tripped()  # the watchdog cut it: say why
                raise
            guard.raise_if_tripped()  # a cut can look like the end of a body that has no length

    def _receive_body(self, resp: requests.Response, fd: int, pos: int, total: int | None,
                      hasher: BackgroundHasher) -> Iterator[int]:
        flusher = _Writeback(fd, pos)
        direct = _direct_reader(resp)
        sock = zerocopy.body_socket(direct[0]) if direct and (direct[1] is None or direct[1] > READ_SIZE) else None
        if sock is not None:
            fp, left = direct
            try:
                # Body bytes that http.client buffered along with the headers go first.
                head = fp.peek(1)[:left] if left is None or left > 0 else b""
                head = fp.read(len(head)) if head else b""
            except (OSError, ValueError) as exc:
                raise TransferError(f"{http.redact(self.url)}: {http.describe_network_error(exc)}") from None
            if head:
                _pwrite_all(fd, head, pos)
                hasher.update(head)
                pos += len(head)
                left = None if left is None else left - len(head)
                yield len(head)
            hashed = pos
            try:
                for n in zerocopy.splice_into(sock, fd, pos, left):
                    pos += n
                    if pos - hashed >= HASH_STEP:
                        # The hashing thread also starts the region's writeback once it has read
                        # it: that work leaves the thread moving the bytes.
                        hasher.update_from_fd(fd, hashed, pos, then=flusher.written)
                        hashed = pos
                    yield n
                    if left is not None:
                        left -= n
            except zerocopy.SpliceRefused:
                direct = (fp, left)  # nothing more consumed: the ordinary path below reads the rest
            except zerocopy.SocketError as exc:
                raise TransferError(f"{http.redact(self.url)}: {http.describe_network_error(exc.error)}") from None
            else:
                hasher.update_from_fd(fd, hashed, pos)
                if left == 0:
                    _body_done(resp)
                return
        # reused: fresh memory per read costs page faults; small files get small buffers
        pool = _BufferPool(HASH_BUFFERS + 1, READ_SIZE if total is None else min(READ_SIZE, max(1, total - pos)))
        for chunk, buf in _body_into(resp, self.url, pool, direct):
            _pwrite_all(fd, chunk, pos)
            hasher.update(chunk, buf.release)
            pos += len(chunk)
            flusher.written(pos)
            yield len(chunk)

    def _record_partial(self, pos: int) -> None:
        """A small body cut short after all: its bytes are worth resuming, so record them now."""
        if pos and not self.private and self._unrecorded() and not os.path.lexists(state_path(self.dest)):
            self.state.save(self.dest)

    def _count(self, n: int) -> None:
        self.transferred += n
        self.policy.progress.add(n)
        self.reporter.add(n)

    def _hash_file(self) -> dict[str, str]:
        import hashlib

        h = hashlib.new(self.algorithm)
        fd = open_regular(self.part, os.O_RDONLY)
        try:
            update_from_fd(h, fd)
        finally:
            os.close(fd)
        return {self.algorithm: h.hexdigest()}

    # -- several connections ----------------------------------------------------------------------
    def _attempt_segmented(self) -> dict[str, str]:
        state = self.state
        if self.revalidate:
            return self._attempt_sequential()  # one conditional GET decides; a 200 streams on it
        if not (state and state.segments and state.total and _regular(self.part)
                and os.lstat(self.part).st_size == state.total):
            if state and _regular(self.part) and not state.segments:
                return self._attempt_sequential()  # a sequential .part: keep appending to it
            state = self._plan_segments()
            if state is None:
                self.segmented = False
                return self._attempt_sequential()
        total = state.total
        self._check_total(total, sum(d - s for s, _, d in state.segments))
        done_before = sum(d - s for s, _, d in state.segments)
        if done_before:
            self.resumed = True
        self.validator = self.validator or state.validator
        self.reporter.set_total(total, done_before)
        return self._run_segments(state)

    def _plan_segments(self) -> PartState | None:
        resp = self._request("HEAD", {})
        with resp:
            if resp.status_code >= 400 and resp.status_code not in (405, 501):
                raise http.status_error(resp, self.url)
            total = http.body_length(resp) if resp.status_code == 200 else None
            ranges = resp.headers.get("Accept-Ranges", "").lower() == "bytes"
            if not (total and ranges and http.strong_validator(resp)) or total < 2 * MIN_SEGMENT:
                return None
            self._check_total(total, 0)
            n = min(self.connections, total // MIN_SEGMENT)
            # Sizes 1:2:...:n, so segments finish in file order and the hash follows the transfer
            # (equal segments all end together and leave (n-1)/n of the file to hash afterwards);
            # idle connections then split the earliest unfinished segment (see _Segments.claim).
            bounds = plan_bounds(total, n)
            self._discard()
            fd = open_regular(self.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                os.ftruncate(fd, total)  # sparse: each segment writes its own region
            finally:
                os.close(fd)
            return self._new_state(resp, total, [(a, b, a) for a, b in zip(bounds, bounds[1:])])

    def _run_segments(self, state: PartState) -> dict[str, str]:
        import hashlib

        stop = threading.Event()
        guard = threading.Lock()
        plan = _Segments(state.segments, guard)
        fd = open_regular(self.part, os.O_RDWR)
        hasher, hashed = hashlib.new(self.algorithm), 0
        last_save = time.monotonic()
        workers = max(1, min(self.connections, len([s for s in state.segments if s[2] < s[1]])))
        try:
            with ThreadPoolExecutor(workers, thread_name_prefix="segment") as pool:
                futures = [pool.submit(self._segment_worker, plan, fd, stop) for _ in range(workers)]
                pending = set(futures)
                while pending:
                    finished, pending = wait(pending, timeout=0.05, return_when=FIRST_EXCEPTION)
                    if any(f.exception() for f in finished):
                        stop.set()
                        break
                    # Hash the contiguous prefix as it grows (from the page cache, overlapping the transfer).
                    frontier = _frontier(state.segments, guard)
                    if frontier > hashed:
                        update_from_fd(hasher, fd, hashed, frontier)
                        hashed = frontier
                    if time.monotonic() - last_save > STATE_SAVE_INTERVAL:
                        self._save_segments(state, guard)
                        last_save = time.monotonic()
                for f in futures:
                    if f.done() and f.exception():
                        exc = f.exception()
                        if isinstance(exc, _RestartFromZero):
                            self.segmented = False
                            raise self._restart(str(exc))
                        raise exc
            os.fsync(fd)
            update_from_fd(hasher, fd, hashed, state.total)
        finally:
            os.close(fd)
            if self.state is not None:
                self._save_segments(state, guard)
        return {self.algorithm: hasher.hexdigest()}

    def _save_segments(self, state: PartState, guard: threading.Lock) -> None:
        with guard:
            self._save_state()

    def _segment_worker(self, plan: "_Segments", fd: int, stop: threading.Event) -> None:
        """Fetch unfinished segments one after another (one connection), then help the others."""
        session = http.new_session(1)
        try:
            while not stop.is_set():
                seg = plan.claim()
                if seg is None:
                    return
                try:
                    self._fetch_segment(seg, plan, fd, stop, session)
                finally:
                    plan.release(seg)
        finally:
            session.close()

    def _fetch_segment(self, seg: list[int], plan: "_Segments", fd: int, stop: threading.Event,
                       session: requests.Session) -> None:
        guard = plan.guard
        pool = _BufferPool(1)
        policy = RetryPolicy(retries=self.retries, delay=self.retry_delay, min_progress=self.policy.min_progress,
                             fresh_starts=self.policy.budget)
        policy.progress = self.policy.progress  # any segment's bytes count as progress for all

        def one_try() -> None:
            with guard:
                start, end, done = seg
            if done >= end or stop.is_set():
                return
            # The request asks for the segment as planned now; a helper may later take its tail
            # (seg[1] shrinks), and then this connection stops there and is closed.
            headers = {"Range": f"bytes={done}-{end - 1}"}
            if self.state.validator:
                headers["If-Range"] = self.state.validator
            resp = self._request("GET", headers, session)
            with resp:
                if resp.status_code == 200:
                    raise _RestartFromZero(f"{self.dest.name}: server sent the whole file to a ranged request")
                if resp.status_code != 206:
                    raise http.status_error(resp, self.url)
                cr = http.parse_content_range(resp.headers.get("Content-Range"))
                if cr is None or (cr.start, cr.end, cr.total) != (done, end - 1, self.state.total):
                    raise _RestartFromZero(f"{self.dest.name}: server answered range {done}-{end - 1} with "
                                           f"{resp.headers.get('Content-Range')!r}")
                pos = done
                flusher = _Writeback(fd, pos)
                with WATCHDOG.watching(resp.guard):
                    try:
                        pos = self._segment_body(resp, seg, pos, fd, pool, flusher, stop, guard)
                    except TransferError:
                        resp.guard.raise_if_tripped()
                        raise
                    resp.guard.raise_if_tripped()
                if pos is not None and pos != end:
                    raise ProtocolViolation(f"{http.redact(self.url)}: segment ended at byte {pos} of {end}")

        policy.call(one_try)

    def _segment_body(self, resp: requests.Response, seg: list[int], pos: int, fd: int, pool: "_BufferPool",
                      flusher: "_Writeback", stop: threading.Event, lock: threading.Lock) -> int | None:
        """Write a segment's body from ``pos`` on; returns the position reached, or None when it stopped
        early on purpose (stopping, or a helper took the rest of the segment)."""
        for chunk, buf in _body_into(resp, self.url, pool):
            try:
                if stop.is_set():
                    return None
                with lock:
                    limit = seg[1]  # may have shrunk: a helper took the rest
                if pos + len(chunk) > limit:
                    chunk = chunk[:max(limit - pos, 0)]
                _pwrite_all(fd, chunk, pos)
            finally:
                buf.release()
            pos += len(chunk)
            with lock:
                seg[2] = pos
            self._count(len(chunk))
            flusher.written(pos)
            if pos >= limit:
                return None
            resp.guard.add(len(chunk))
        return pos

    # -- publishing ---------------------------------------------------------------------------------
    def _publish(self, digests: dict[str, str]) -> dict[str, str]:
        """Put the verified part in place of the destination and record where it came from;
        returns the digests of the file now published."""
        if not self.private:
            current = PartState.load(self.dest)
            if current is None and self._unrecorded():
                pass  # never recorded, so nobody could have taken it over
            elif current is None or current.owner != self.owner:
                # Another writer touched the .part (a lock that did nothing): trust only the bytes on disk.
                log.warning("%s: another process wrote the same partial file; re-checking it before publishing",
                            self.dest.name)
                try:
                    digests = self._hash_file()
                    problem = check(os.lstat(self.part).st_size, digests, self.size, self.expected)
                except FileNotFoundError:
                    problem = None  # already published by the other writer: checked below
                if problem:
                    raise IntegrityError(f"{self.dest.name}: concurrent writers left a bad partial file ({problem})")
        check_destination(self.dest)
        try:
            os.replace(self.part, self.dest)
        except FileNotFoundError:
            if self.private:
                raise
            # The other writer published first: its file counts only if it verifies, with its own digest.
            digests = {self.algorithm: file_digest(self.dest, self.algorithm)}
            problem = check(os.lstat(self.dest).st_size, digests, self.size, self.expected)
            if problem:
                raise IntegrityError(f"{self.dest.name}: published by another process but {problem}") from None
            return digests
        _fsync_dir(self.dest.parent)
        VerifiedRecord.of(self.dest, digests, url_id(self.url), self.validator).save(self.dest)
        self._discard()
        return digests


def _regular(path: Path) -> bool:
    """A regular file of its own (not a symlink, FIFO or device, nor a hard link to some other file,
    that someone put in its place)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1


def _conditional(validator: str) -> dict[str, str]:
    """Headers asking whether the server's file is still exactly the one ``validator`` names.

    An ETag: ``If-None-Match`` (304 when it still matches). A date: ``Range`` with ``If-Range``, which
    a server honours only for an exact match (a 1-byte 206); ``If-Modified-Since`` would take a
    file rolled back to an older date for unchanged. A server without Range support answers 200:
    the file is downloaded again, never wrongly kept."""
    if validator.startswith(('"', 'W/"')):
        return {"If-None-Match": validator}
    return {"Range": "bytes=0-0", "If-Range": validator}


def plan_bounds(total: int, n: int) -> list[int]:
    """Boundaries of ``n`` segments over ``total`` bytes, sized 1:2:...:n."""
    weights = n * (n + 1) // 2
    return [total * (i * (i + 1) // 2) // weights for i in range(n + 1)]


STEAL_MIN = 16 << 20  # a helper takes half of a segment's rest only if both halves are at least this big


class _Segments:
    """The segment list shared by the connections: sorted by start, each ``[start, end, done]``.

    ``claim`` hands out an unfinished segment nobody works on, else splits the earliest segment
    still in work (the one holding the hash back) and hands out its second half, so every
    connection stays busy to the end and the contiguous prefix, which is hashed as it grows,
    keeps up with the transfer. A split happens under the guard and more than a read ahead of
    the owner's position, so no byte is written by two connections.
    """

    def __init__(self, segments: list[list[int]], guard: threading.Lock):
        self.segments, self.guard = segments, guard
        self.busy: set[int] = set()

    def claim(self) -> list[int] | None:
        with self.guard:
            for seg in self.segments:
                if seg[2] < seg[1] and id(seg) not in self.busy:
                    self.busy.add(id(seg))
                    return seg
            for i, seg in enumerate(self.segments):
                rest = seg[1] - seg[2]
                if id(seg) in self.busy and rest >= 2 * STEAL_MIN:
                    mid = seg[2] + rest // 2
                    mid -= mid % READ_SIZE if mid - mid % READ_SIZE > seg[2] + READ_SIZE else 0
                    new = [mid, seg[1], mid]
                    seg[1] = mid
                    self.segments.insert(i + 1, new)
                    self.busy.add(id(new))
                    return new
            return None

    def release(self, seg: list[int]) -> None:
        with self.guard:
            self.busy.discard(id(seg))


def _frontier(segments: list[list[int]], guard: threading.Lock) -> int:
    with guard:
        for start, end, done in segments:
            if done < end:
                return done
        return segments[-1][1] if segments else 0


def _body(resp: requests.Response, url: str):
    """The raw body in reads of up to READ_SIZE; network errors become transient TransferErrors.

    ``read1`` returns what has arrived instead of waiting to fill the buffer, so a cut or
    stalled connection loses no received bytes.
    """
    raw = resp.raw
    while True:
        try:
            chunk = raw.read1(READ_SIZE, decode_content=False)
        except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, ConnectionError,
                TimeoutError) as exc:
            raise TransferError(f"{http.redact(url)}: {http.describe_network_error(exc)}") from None
        if not chunk:
            return
        yield chunk


class _Buffer:
    __slots__ = ("data", "pool")

    def __init__(self, pool: "_BufferPool", size: int):
        self.data, self.pool = bytearray(size), pool

    def release(self) -> None:
        self.pool.free.put(self)


class _BufferPool:
    """Up to ``count`` buffers of ``size`` bytes, made on first need and then reused: every read
    lands in memory that is already mapped.

    Allocating a fresh 1 MiB object per read makes the allocator map (and the kernel fault in)
    new pages for every chunk; on machines that hand freed memory back to their host that alone
    doubled the wall time. ``get`` blocks while all buffers are in use (bounded memory).
    """

    def __init__(self, count: int, size: int = READ_SIZE):
        import queue

        self.free: "queue.SimpleQueue[_Buffer]" = queue.SimpleQueue()
        self.size, self.left = max(1, size), count
        self._lock = threading.Lock()

    def get(self) -> _Buffer:
        try:
            return self.free.get_nowait()
        except Exception:  # queue.Empty
            with self._lock:
                if self.left > 0:
                    self.left -= 1
                    return _Buffer(self, self.size)
            return self.free.get()


class _Unpooled:
    @staticmethod
    def release() -> None:
        pass


_UNPOOLED = _Unpooled()


def _direct_reader(resp: requests.Response):
    """(socket file, body length or None) when the body can be read straight into our buffers.

    Only for a plain (not chunked, not decoded) body of http.client, read from its start;
    anything else goes through urllib3's ``read1`` (new bytes per read, same semantics).
    """
    raw = resp.raw
    hr = getattr(raw, "_fp", None)
    fp = getattr(hr, "fp", None)
    if (fp is None or getattr(hr, "chunked", True) or not hasattr(fp, "readinto1")
            or getattr(raw, "_fp_bytes_read", 0) != 0 or len(getattr(raw, "_decoded_buffer", b"") or b"")):
        return None
    length = getattr(hr, "length", 0)
    if length is not None and not isinstance(length, int):
        return None
    return fp, length


def _body_into(resp: requests.Response, url: str, pool: _BufferPool, direct=None):
    """The body as (memoryview, buffer) pairs, each view into a pooled buffer that the consumer
    releases when done with it. One ``readinto1`` per read: what has arrived, up to READ_SIZE, so
    a cut connection loses no received bytes (as ``_body``). ``direct``: the (socket file, bytes
    left) of ``_direct_reader``, when the caller already read part of it."""
    direct = direct or _direct_reader(resp)
    if direct is None:
        for chunk in _body(resp, url):
            yield memoryview(chunk), _UNPOOLED
        return
    fp, left = direct
    while left is None or left > 0:
        buf = pool.get()
        view = memoryview(buf.data)
        if left is not None and left < len(view):
            view = view[:left]
        try:
            n = fp.readinto1(view)
        except (OSError, ValueError) as exc:  # socket errors, timeouts, a closed file
            buf.release()
            raise TransferError(f"{http.redact(url)}: {http.describe_network_error(exc)}") from None
        if not n:
            buf.release()
            return
        if left is not None:
            left -= n
        yield view[:n], buf
    if left == 0:
        _body_done(resp)


def _body_done(resp: requests.Response) -> None:
    """The whole body went around http.client: end it as http.client would and hand the
    connection back to the pool for the next request (keep-alive); if that is not possible
    the connection is simply closed with the response."""
    guard = getattr(resp, "guard", None)
    if guard is not None:
        guard.attach(None)  # the connection goes back to the pool: no longer this response's to cut
    hr = resp.raw._fp
    try:
        hr.length = 0
        hr._close_conn()
        resp.raw.release_conn()
    except AttributeError:
        pass


class _Writeback:
    """Starts the kernel writing the file behind us (Linux ``sync_file_range``, through ctypes:
    the os module lacks it), so the fsync that makes the publish durable finds almost nothing
    left to write (2 GiB: fsync 0.6 s -> 0.02 s). A no-op where unavailable."""

    def __init__(self, fd: int, pos: int):
        self.fd, self.flushed = fd, pos
        self.call = _sync_file_range()

    def written(self, pos: int) -> None:
        if self.call is not None and pos - self.flushed >= WRITEBACK_STEP:
            if self.call(self.fd, self.flushed, pos - self.flushed, 2) != 0:  # SYNC_FILE_RANGE_WRITE
                self.call = None
            self.flushed = pos


_SYNC_FILE_RANGE: list = []


def _sync_file_range():
    if not _SYNC_FILE_RANGE:
        fn = None
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                fn = ctypes.CDLL(None, use_errno=True).sync_file_range
                fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
                fn.restype = ctypes.c_int
            except (OSError, AttributeError):
                fn = None
        _SYNC_FILE_RANGE.append(fn)
    return _SYNC_FILE_RANGE[0]


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
