"""The transfer engine: one file from one URL into ``dest``, resumable across process death.

Bytes go to ``<dest>.part`` with a small state record (URL, validator, total size) beside
it. A later run resumes with ``Range`` + ``If-Range`` and appends only when the server's
``Content-Range`` proves the bytes continue the same version; anything else starts over.
The hash is computed while downloading on a second thread (over the bytes as read, or, where
the kernel splices the body into the file, over each region right behind it); the destination
appears only complete and verified (fsync + os.replace).
"""

from __future__ import annotations

import logging
import os
import shutil
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
from filelock import FileLock

from . import http, zerocopy
from .errors import DiskSpaceError, IntegrityError, ProtocolViolation, ResumableError, TransferError, UsageError
from .hashes import BackgroundHasher, ExpectedHash, parse_hash, update_from_file
from .progress import Reporter, human_size
from .retry import RetryPolicy
from .state import (
    PartState,
    VerifiedRecord,
    corrupt_path,
    discard_part,
    lock_path,
    part_path,
    record_dir,
    state_path,
)
from .verify import check, is_verified, verify_file

log = logging.getLogger("resumable")

READ_SIZE = 1 << 20  # socket read size, whatever chunk size a caller asks for: small reads cost 2x
MIN_SEGMENT = 32 << 20  # smaller segments gain nothing and lose to per-request overhead
STATE_SAVE_INTERVAL = 0.1  # seconds of segment progress a SIGKILL may cost
HASH_BUFFERS = 16  # reads waiting for the hashing thread at most (memory stays flat: 17 x READ_SIZE)
HASH_STEP = 4 << 20  # spliced bytes are handed to the hashing thread in regions of this size
WRITEBACK_STEP = 32 << 20  # start writing dirty pages to disk every this many bytes, so the final fsync is short


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
          lock: bool = True, max_time: float | None = None,
          session: requests.Session | None = None) -> FetchResult:
    """Download ``url`` to ``dest`` (resuming, verifying, atomically); mirrors are tried in order."""
    sources = [http.check_url(u) for u in (url, *mirrors)]
    expected = parse_hash(hash)
    if size is not None and (not isinstance(size, int) or size < 0):
        raise UsageError(f"size {size!r}: expected a number of bytes >= 0")
    if connections < 1:
        raise UsageError(f"connections {connections!r}: use 1 or more")
    dest = Path(dest).absolute()
    if dest.is_dir():
        raise UsageError(f"destination {dest} is a directory; pass a file path (or -d DIR to name it from the URL)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with _exclusive(dest, lock):
        cached = _existing(dest, size, expected, sources[0], t0)
        if cached:
            return cached
        failures: list[ResumableError] = []
        for source in sources:
            job = _Transfer(source, dest, size, expected, connections=connections, retries=retries,
                            retry_delay=retry_delay, headers=headers or {}, timeout=timeout, progress=progress,
                            max_time=max_time, session=session)
            try:
                return job.run(t0)
            except (UsageError, DiskSpaceError):
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

    The lock is an optimisation, not the guarantee: writers use positional writes of the
    same server bytes, and publishing re-checks ownership of the .part (see _publish).
    """
    if not enabled:
        yield
        return
    record_dir(dest).mkdir(parents=True, exist_ok=True)
    # An explicit mode without group/other write: filelock then skips probing the directory for
    # flock support with a scratch file on every lock (a third of a small file's cost); a file
    # system without flock is still detected when locking.
    flock = FileLock(str(lock_path(dest)), mode=0o644)
    try:
        flock.acquire(timeout=0.05)
    except Exception:
        log.info("%s: another process is fetching it; waiting", dest.name)
        flock.acquire()
    try:
        yield
    finally:
        flock.release()


def _existing(dest: Path, size: int | None, expected: ExpectedHash | None, url: str, t0: float) -> FetchResult | None:
    """A destination already in place that meets the expectations (re-hashed only if it changed)."""
    if not dest.is_file():
        return None
    if size is None and expected is None:
        good = True  # published by an atomic rename, so complete; nothing more to check
    else:
        good = is_verified(dest, size, expected) or verify_file(dest, size, expected)
    if not good:
        log.warning("%s: existing file fails verification; fetching a fresh copy (the old one stays until it verifies)",
                    dest)
        return None
    record = VerifiedRecord.load(dest)
    digests = record.digests if record and record.matches(dest) else {}
    alg = expected.algorithm if expected else "sha256"
    digest = f"{alg}:{digests[alg]}" if alg in digests else None
    return FetchResult(dest, url, dest.stat().st_size, digest, "cached", 0, time.monotonic() - t0)


class _RestartFromZero(ProtocolViolation):
    """The server's answer cannot continue our bytes (new version, no Range): start over."""


class _Transfer:
    def __init__(self, url: str, dest: Path, size: int | None, expected: ExpectedHash | None, *, connections: int,
                 retries: int, retry_delay: float, headers: dict, timeout, progress, max_time: float | None,
                 session: requests.Session | None):
        self.url, self.dest, self.part = url, dest, part_path(dest)
        self.size, self.expected = size, expected
        self.algorithm = expected.algorithm if expected else "sha256"
        self.connections, self.retries, self.retry_delay = connections, retries, retry_delay
        self.headers = {**headers, "Accept-Encoding": "identity"}
        self.timeout = timeout
        self.session = session or http.new_session()
        self.policy = RetryPolicy(retries=retries, delay=retry_delay, max_time=max_time)
        self.reporter = Reporter(dest.name, progress, size)
        self.owner = uuid.uuid4().hex
        self.state: PartState | None = None
        self.transferred = 0
        self.resumed = False
        self.segmented = connections > 1

    # -- the whole job -----------------------------------------------------------------------
    def run(self, t0: float) -> FetchResult:
        self.state = self._load_state()
        if self.state and self.state.segments:
            # A preallocated .part has holes: only its segments know the progress, whatever
            # connection count this run asked for.
            self.segmented = True
        try:
            digests = self.policy.retrying()(self._attempt)
            self._publish(digests)
        finally:
            self.reporter.close()
        seconds = time.monotonic() - t0
        result = FetchResult(self.dest, self.url, self.dest.stat().st_size,
                             f"{self.algorithm}:{digests[self.algorithm]}",
                             "resumed" if self.resumed else "downloaded", self.transferred, seconds)
        log.info("%s: %s, %s transferred in %.1fs (%s/s)", self.dest.name, result.status,
                 human_size(result.bytes_transferred), seconds, human_size(result.speed))
        return result

    def _attempt(self) -> dict[str, str]:
        try:
            return self._attempt_and_check()
        except FileNotFoundError:
            # Only another writer that ignored (or never saw) our lock removes the .part.
            self.state = None
            raise TransferError(f"{self.part.name} vanished while fetching (another process?); trying again") \
                from None

    def _attempt_and_check(self) -> dict[str, str]:
        if self.segmented:
            digests = self._attempt_segmented()
        else:
            digests = self._attempt_sequential()
        problem = check(self.part.stat().st_size, digests, self.size, self.expected)
        if problem:
            corrupt = corrupt_path(self.dest)
            os.replace(self.part, corrupt)
            discard_part(self.dest)
            self.state = None
            raise IntegrityError(f"{self.dest.name} from {http.redact(self.url)}: {problem}; "
                                 f"bad bytes kept in {corrupt.name}, downloading again")
        return digests

    # -- state ------------------------------------------------------------------------------------
    def _load_state(self) -> PartState | None:
        state = PartState.load(self.dest)
        if not self.part.exists() or state is None:
            discard_part(self.dest)
            return None
        if state.expected_hash and self.expected and state.expected_hash != str(self.expected):
            discard_part(self.dest)  # bytes of another file
            return None
        if state.url != self.url:
            if not (self.expected and state.expected_hash == str(self.expected)):
                discard_part(self.dest)  # another source, nothing to prove the bytes match
                return None
            # Same expected hash from a mirror: keep the bytes, its validator means nothing here.
            state.url, state.validator = self.url, None
        state.owner = self.owner
        state.save(self.dest)
        return state

    def _new_state(self, resp: requests.Response, total: int | None, segments=()) -> PartState:
        self.state = PartState(self.url, http.strong_validator(resp), total,
                               str(self.expected) if self.expected else None, self.owner,
                               [list(s) for s in segments])
        if not self._unrecorded():
            self.state.save(self.dest)
        return self.state

    def _unrecorded(self) -> bool:
        """A body that arrives in one read gains nothing from a resume record (a kill costs at
        most that read), and writing one is a file creation per small file."""
        s = self.state
        return s is not None and not s.segments and s.total is not None and s.total <= READ_SIZE

    def _restart(self, why: str) -> _RestartFromZero:
        log.warning("%s: %s; starting over from byte 0", self.dest.name, why)
        discard_part(self.dest)
        self.state = None
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

    def _request(self, method: str, headers: dict) -> requests.Response:
        return http.request(self.session, method, self.url, {**self.headers, **headers}, self.timeout)

    # -- one connection ---------------------------------------------------------------------------
    def _attempt_sequential(self) -> dict[str, str]:
        offset = self.part.stat().st_size if self.state and self.part.exists() else 0
        if offset and not (self.state.validator or self.expected):
            offset = 0  # nothing could prove the server still has the same bytes
        extra = {}
        if offset:
            extra["Range"] = f"bytes={offset}-"
            if self.state.validator:
                extra["If-Range"] = self.state.validator
        resp = self._request("GET", extra)
        with resp:
            if resp.status_code == 416:
                total = http.parse_unsatisfied_range(resp.headers.get("Content-Range"))
                if offset and total == offset and self.state.total in (None, offset):
                    self._check_total(total, offset)
                    self.reporter.set_total(total, offset)
                    return self._hash_file()  # we already hold every byte
                raise self._restart(f"server refused the range {offset}- (416)")
            if resp.status_code not in (200, 206):
                raise http.status_error(resp, self.url)
            if resp.status_code == 206:
                cr = http.parse_content_range(resp.headers.get("Content-Range"))
                known = self.state.total if self.state else None
                if not offset or cr is None or cr.start != offset or cr.total is None \
                        or cr.end != cr.total - 1 or (known is not None and cr.total != known):
                    raise self._restart(f"server answered range {offset}- with "
                                        f"{resp.headers.get('Content-Range')!r}")
                total = cr.total
                self.state.total = total
                self.resumed = True
            else:
                if offset:
                    log.info("%s: server sent the whole file (new version or no Range support); starting over",
                             self.dest.name)
                offset, total = 0, http.body_length(resp)
                self._new_state(resp, total)
            self._check_total(total, offset)
            self.reporter.set_total(total, offset)
            return self._stream(resp, offset, total)

    def _stream(self, resp: requests.Response, offset: int, total: int | None) -> dict[str, str]:
        # Read and written through one descriptor: the hashing thread reads back the regions the
        # kernel spliced in (see zerocopy), and must be done before the descriptor closes.
        fd = os.open(self.part, os.O_RDWR | os.O_CREAT, 0o644)
        hasher = BackgroundHasher(self.algorithm, max_pending=HASH_BUFFERS)
        pos = offset
        try:
            if offset:
                hasher.update_from_file(self.part, 0, offset)  # the prefix, hashed once
            else:
                os.ftruncate(fd, 0)
            try:
                for n in self._receive(resp, fd, pos, total, hasher):
                    pos += n
                    self._count(n)
            except BaseException:
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
            self.state.save(self.dest)
        return {self.algorithm: digest}

    def _receive(self, resp: requests.Response, fd: int, pos: int, total: int | None,
                 hasher: BackgroundHasher) -> Iterator[int]:
        """Write the body into ``fd`` from ``pos`` on, feeding ``hasher``; yields each piece's size.

        Spliced by the kernel where it pays (plain HTTP on Linux, bodies larger than one read: no
        copy through Python), else read into pooled buffers that the hasher hands back once hashed.
        """
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
        if pos and self._unrecorded() and not state_path(self.dest).exists():
            self.state.save(self.dest)

    def _count(self, n: int) -> None:
        self.transferred += n
        self.policy.progress.add(n)
        self.reporter.add(n)

    def _hash_file(self) -> dict[str, str]:
        import hashlib

        h = hashlib.new(self.algorithm)
        update_from_file(h, self.part)
        return {self.algorithm: h.hexdigest()}

    # -- several connections ----------------------------------------------------------------------
    def _attempt_segmented(self) -> dict[str, str]:
        state = self.state
        if not (state and state.segments and state.total and self.part.exists()
                and self.part.stat().st_size == state.total):
            if state and self.part.exists() and not state.segments:
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
            discard_part(self.dest)
            with open(self.part, "wb") as f:
                f.truncate(total)  # sparse: each segment writes its own region
            return self._new_state(resp, total, [(a, b, a) for a, b in zip(bounds, bounds[1:])])

    def _run_segments(self, state: PartState) -> dict[str, str]:
        import hashlib

        stop = threading.Event()
        guard = threading.Lock()
        plan = _Segments(state.segments, guard)
        fd = os.open(self.part, os.O_WRONLY)
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
                        update_from_file(hasher, self.part, hashed, frontier)
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
        finally:
            os.close(fd)
            if self.state is not None:
                self._save_segments(state, guard)
        update_from_file(hasher, self.part, hashed, state.total)
        return {self.algorithm: hasher.hexdigest()}

    def _save_segments(self, state: PartState, guard: threading.Lock) -> None:
        with guard:
            state.save(self.dest)

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
        policy = RetryPolicy(retries=self.retries, delay=self.retry_delay)
        policy.progress = self.policy.progress  # any segment's bytes count as progress for all

        def one_try() -> None:
            with guard:
                start, end, done = seg
            if done >= end or stop.is_set():
                return
            # The request asks for the segment as planned now; a helper may later take its tail
            # (seg[1] shrinks), and then this connection stops there and is closed.
            headers = {**self.headers, "Range": f"bytes={done}-{end - 1}"}
            if self.state.validator:
                headers["If-Range"] = self.state.validator
            resp = http.request(session, "GET", self.url, headers, self.timeout)
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
                for chunk, buf in _body_into(resp, self.url, pool):
                    try:
                        if stop.is_set():
                            return
                        with guard:
                            limit = seg[1]  # may have shrunk: a helper took the rest
                        if pos + len(chunk) > limit:
                            chunk = chunk[:max(limit - pos, 0)]
                        _pwrite_all(fd, chunk, pos)
                    finally:
                        buf.release()
                    pos += len(chunk)
                    with guard:
                        seg[2] = pos
                    self._count(len(chunk))
                    flusher.written(pos)
                    if pos >= limit:
                        return
                if pos != end:
                    raise ProtocolViolation(f"{http.redact(self.url)}: segment ended at byte {pos} of {end}")

        policy.retrying()(one_try)

    # -- publishing ---------------------------------------------------------------------------------
    def _publish(self, digests: dict[str, str]) -> None:
        current = PartState.load(self.dest)
        if current is None and self._unrecorded():
            pass  # never recorded, so nobody could have taken it over
        elif current is None or current.owner != self.owner:
            # Another writer touched the .part (a lock that did nothing, e.g. on NFS):
            # trust only the bytes on disk.
            log.warning("%s: another process wrote the same .part; re-checking it before publishing", self.dest.name)
            try:
                digests = self._hash_file()
                problem = check(self.part.stat().st_size, digests, self.size, self.expected)
            except FileNotFoundError:
                problem = None  # already published by the other writer: checked below
            if problem:
                raise IntegrityError(f"{self.dest.name}: concurrent writers left a bad .part ({problem})")
        try:
            os.replace(self.part, self.dest)
        except FileNotFoundError:
            # The other writer published first; accept its file only if it verifies.
            if not verify_file(self.dest, self.size, self.expected):
                raise IntegrityError(f"{self.dest.name}: published by another process but fails verification")
            return
        _fsync_dir(self.dest.parent)
        VerifiedRecord.of(self.dest, digests).save(self.dest)
        discard_part(self.dest)


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
