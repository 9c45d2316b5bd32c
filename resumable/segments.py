"""Several connections for one file: the plan (segments sized 1:2:...:n in a sparse part file, or,
in auto mode, one segment that a streaming response joins: ``join_in``), work stealing (an idle
connection takes half of the earliest unfinished segment), one worker per connection, and the hash
of the contiguous prefix, computed as it grows. How many connections in auto mode: ramp.py."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

import requests

from . import http, wire
from .body import READ_SIZE, BufferPool, body_into
from .disk import Writeback, pwrite_all
from .errors import ProtocolViolation, RestartFromZero, TransferError
from .hashes import update_from_fd
from .ramp import Ramp
from .retry import WATCHDOG, RetryPolicy
from .state import PartState, open_regular

log = logging.getLogger("resumable")

if TYPE_CHECKING:
    from .attempt import Download

MIN_SEGMENT = 32 << 20  # smaller segments gain nothing and lose to per-request overhead
STATE_SAVE_INTERVAL = 0.1  # seconds of segment progress a SIGKILL may cost
# A helper takes half of a segment's rest only if both halves are at least ``steal_min``: what one
# connection moves in STEAL_SECONDS at the current speed, between these bounds. On a server that
# caps each connection, a fixed 16 MiB left the last connection alone for a second (20 MB/s).
STEAL_MIN = 16 << 20
STEAL_FLOOR = 1 << 20
STEAL_SECONDS = 0.25


def plan_bounds(total: int, n: int) -> list[int]:
    """Boundaries of ``n`` segments over ``total`` bytes, sized 1:2:...:n."""
    weights = n * (n + 1) // 2
    return [total * (i * (i + 1) // 2) // weights for i in range(n + 1)]


class SegmentPlan:
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
        self.steal_min = STEAL_MIN

    def claim(self) -> list[int] | None:
        with self.guard:
            for seg in self.segments:
                if seg[2] < seg[1] and id(seg) not in self.busy:
                    self.busy.add(id(seg))
                    return seg
            for i, seg in enumerate(self.segments):
                rest = seg[1] - seg[2]
                if id(seg) in self.busy and rest >= 2 * self.steal_min:
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

    def frontier(self) -> int:
        """The end of the contiguous prefix that is complete."""
        with self.guard:
            for start, end, done in self.segments:
                if done < end:
                    return done
            return self.segments[-1][1] if self.segments else 0


def attempt_segmented(d: Download) -> dict[str, str]:
    """One attempt over several connections, continuing a segmented part file or planning one;
    a download that cannot be segmented goes on over one connection."""
    state = d.part.state
    if d.revalidate:
        return d.attempt_sequential()  # one conditional GET decides; a 200 streams on it
    if not (state and state.segments and state.total and d.part.is_regular()
            and d.part.size() == state.total):
        if state and d.part.is_regular() and not state.segments:
            return d.attempt_sequential()  # a sequential .part: keep appending to it
        state = _plan(d)
        if state is None:
            d.segmented = False
            return d.attempt_sequential()
    total = state.total
    d.check_total(total, sum(done - start for start, _, done in state.segments))
    done_before = sum(done - start for start, _, done in state.segments)
    if done_before:
        d.resumed = True
    d.validator = d.validator or state.validator
    d.reporter.set_total(total, done_before)
    return _SegmentedRun(d, state).run()


def _plan(d: Download) -> PartState | None:
    """A new segmented part file (sparse, full size) and its record, when the server's HEAD
    says it serves ranges of a large enough file with a strong validator; else None."""
    resp = d.request("HEAD", {})
    with resp:
        if resp.status_code >= 400 and resp.status_code not in (405, 501):
            raise http.status_error(resp, d.url)
        total = http.body_length(resp) if resp.status_code == 200 else None
        ranges = resp.headers.get("Accept-Ranges", "").lower() == "bytes"
        if not (total and ranges and http.strong_validator(resp)) or total < 2 * MIN_SEGMENT:
            _one_connection(d, resp, total, ranges)
            return None
        d.check_total(total, 0)
        n = min(d.connections, total // MIN_SEGMENT)
        # Sizes 1:2:...:n, so segments finish in file order and the hash follows the transfer
        # (equal segments all end together and leave (n-1)/n of the file to hash afterwards);
        # idle connections then split the earliest unfinished segment (see SegmentPlan.claim).
        bounds = plan_bounds(total, n)
        d.part.discard()
        fd = open_regular(d.part.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            os.ftruncate(fd, total)  # sparse: each segment writes its own region
        finally:
            os.close(fd)
        return d.new_state(resp, total, [(a, b, a) for a, b in zip(bounds, bounds[1:])])


def _one_connection(d: Download, resp: requests.Response, total: int | None, ranges: bool) -> None:
    """Say why ``--connections N`` becomes one connection: on the default output when the server
    is the reason, at INFO when the file is too small to gain from more."""
    from .attempt import no_range_support

    if not ranges:
        no_range_support(d.dest.name, getattr(resp, "final_url", d.url), f"one connection instead of {d.connections}")
    elif total and total >= 2 * MIN_SEGMENT:
        log.warning("%s: the server names no strong validator (ETag) that would tie byte ranges to one version of "
                    "the file: one connection instead of %d", d.dest.name, d.connections)
    else:
        log.info("%s: %s: one connection instead of %d", d.dest.name,
                 "size unknown" if not total else f"smaller than {2 * MIN_SEGMENT >> 20} MiB", d.connections)


def worth_splitting(resp: requests.Response, total: int | None) -> bool:
    """A 200 that auto mode may split while it streams: a large file, ranges served, a strong
    validator to tie the ranges to this version."""
    return (total is not None and total >= 2 * MIN_SEGMENT
            and resp.headers.get("Accept-Ranges", "").lower() == "bytes" and bool(http.strong_validator(resp)))


def join_in(d: Download, resp: requests.Response, prefix_hash, pos: int, one_rate: float) -> dict[str, str]:
    """Auto mode, once the first connection has shown that it waits on the link (ramp.LinkProbe):
    the part file becomes one segment, done up to ``pos``, that this response goes on streaming,
    and more connections join while they raise the throughput. ``prefix_hash``: of bytes [0, pos)."""
    total = d.part.state.total
    # The record first, then the size: killed in between, a sequential record beside a full-size
    # sparse part would pass for a complete download (a 416 to "Range: bytes=total-"); a segmented
    # record beside a short part is only restarted.
    d.part.state.segments = [[0, total, pos]]
    d.part.save()
    d.segmented = True
    fd = open_regular(d.part.path, os.O_WRONLY)
    try:
        os.ftruncate(fd, total)  # sparse: each segment writes its own region
    finally:
        os.close(fd)
    log.debug("%s: waiting on the link at %.0f MB/s; adding connections", d.dest.name, one_rate / 1e6)
    fp, _ = wire.plain_body(resp)
    return _SegmentedRun(d, d.part.state, first=(resp, (fp, total - pos), pos), prefix=(prefix_hash, pos),
                         one_rate=one_rate).run()


class _Speed:
    """Bytes per second over roughly the last second."""

    def __init__(self, now: float, transferred: int):
        self.mark, self.rate = (now, transferred), 0.0

    def update(self, now: float, transferred: int) -> float:
        t0, b0 = self.mark
        if now - t0 >= 1.0:
            self.rate, self.mark = (transferred - b0) / (now - t0), (now, transferred)
        return self.rate


class _SegmentedRun:
    """The workers of one segmented attempt, and the thread that follows them (hash, record)."""

    def __init__(self, d: Download, state: PartState, first=None, prefix=None, one_rate: float | None = None):
        self.d, self.state = d, state
        self.stop = threading.Event()
        self.guard = threading.Lock()
        self.plan = SegmentPlan(state.segments, self.guard)
        self.hasher, self.hashed = prefix or (hashlib.new(d.algorithm), 0)
        # TLS records are read one per call, each call releasing the GIL: connections filling their
        # buffers at once hand the GIL back and forth (~260 futex calls per MiB with 4). Taken in
        # turns, only around reads that never wait: 4 connections over HTTPS 1.93 -> 1.88 s/GiB.
        self.fill_lock = threading.Lock()
        self.hash_lock = threading.Lock()  # hashed prefix: grown from memory by a worker, or from the file
        self.first = first  # (response, its body's (socket file, bytes left), its position): join_in
        self.ramp = Ramp(time.monotonic(), d.connections, d.transferred, one_rate) if d.auto else None

    def run(self) -> dict[str, str]:
        d = self.d
        fd = open_regular(d.part.path, os.O_RDWR)
        unfinished = len([s for s in self.state.segments if s[2] < s[1]])
        workers = self.ramp.connections if self.ramp else max(1, min(d.connections, unfinished))
        try:
            with ThreadPoolExecutor(d.connections if self.ramp else workers, thread_name_prefix="segment") as pool:
                # The streaming response belongs to the segment it continues: claimed here, before
                # any other worker could take that segment and leave it another one's bytes.
                mine = self.plan.claim() if self.first else None
                futures = [pool.submit(self._worker, fd, self.first, mine)]
                futures += [pool.submit(self._worker, fd) for _ in range(workers - 1)]
                self._follow(futures, fd, pool)
                self._raise_failure(futures)
            os.fsync(fd)
            update_from_fd(self.hasher, fd, self.hashed, self.state.total)
        finally:
            os.close(fd)
            if d.part.state is not None:
                self._save()
        return {d.algorithm: self.hasher.hexdigest()}

    def _follow(self, futures: list, fd: int, pool: ThreadPoolExecutor) -> None:
        """Until the workers end or one fails: hash the contiguous prefix as it grows (from the page
        cache, overlapping the transfer), record the progress every STATE_SAVE_INTERVAL, and in
        auto mode add the connections the ramp asks for."""
        last_save = time.monotonic()
        speed = _Speed(last_save, self.d.transferred)
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.05, return_when=FIRST_EXCEPTION)
            if any(f.exception() for f in finished):
                self.stop.set()
                return
            per_connection = speed.update(time.monotonic(), self.d.transferred) / max(1, len(pending))
            self.plan.steal_min = int(min(STEAL_MIN, max(STEAL_FLOOR, per_connection * STEAL_SECONDS)))
            if self.ramp is not None and pending:
                wanted = self.ramp.update(time.monotonic(), self.d.transferred)
                if wanted > len(futures):
                    log.debug("%s: %d connections", self.d.dest.name, wanted)
                for _ in range(wanted - len(futures)):
                    futures.append(pool.submit(self._worker, fd))
                    pending.add(futures[-1])
            frontier = self.plan.frontier()
            if frontier > self.hashed:
                with self.hash_lock:
                    if frontier > self.hashed:
                        update_from_fd(self.hasher, fd, self.hashed, frontier)
                        self.hashed = frontier
            if time.monotonic() - last_save > STATE_SAVE_INTERVAL:
                self._save()
                last_save = time.monotonic()

    def _hash_if_next(self, chunk: memoryview, pos: int) -> None:
        """Bytes that continue the hashed prefix are hashed here, from memory; the rest are read
        back from the page cache once the prefix reaches them (_follow). Most of a file is written
        at the prefix (segments sized 1:2:...:n; after join_in, all of the first connection's)."""
        if pos != self.hashed or not self.hash_lock.acquire(blocking=False):
            return
        try:
            if pos == self.hashed:
                self.hasher.update(chunk)
                self.hashed = pos + len(chunk)
        finally:
            self.hash_lock.release()

    def _raise_failure(self, futures: list) -> None:
        for f in futures:
            if f.done() and f.exception():
                exc = f.exception()
                if isinstance(exc, RestartFromZero):
                    self.d.segmented = False
                    raise self.d.restart(str(exc))
                raise exc

    def _save(self) -> None:
        with self.guard:
            self.d.part.save()

    def _worker(self, fd: int, first=None, seg: list[int] | None = None) -> None:
        """Fetch unfinished segments one after another (one connection), then help the others;
        ``first``: the response that already streams segment ``seg`` (claimed for this worker)."""
        session = http.new_session(1)
        try:
            while not self.stop.is_set():
                seg = seg or self.plan.claim()
                if seg is None:
                    return
                try:
                    self._fetch(seg, fd, session, first)
                finally:
                    first = None
                    self.plan.release(seg)
                    seg = None
        finally:
            if first is not None:
                first[0].close()
            session.close()

    def _fetch(self, seg: list[int], fd: int, session: requests.Session, first) -> None:
        d, guard = self.d, self.guard
        streaming = [first]  # taken by the first try
        pool = BufferPool(1)
        policy = RetryPolicy(retries=d.retries, delay=d.retry_delay, min_progress=d.policy.min_progress,
                             fresh_starts=d.policy.budget)
        policy.progress = d.policy.progress  # any segment's bytes count as progress for all

        def one_try() -> None:
            with guard:
                start, end, done = seg
            if done >= end or self.stop.is_set():
                return
            # The request asks for the segment as planned now; a helper may later take its tail
            # (seg[1] shrinks), and then this connection stops there and is closed.
            taken, streaming[0] = streaming[0], None
            if taken is not None:
                resp, direct, at = taken
                with resp:
                    if at == done:  # (always: its segment was claimed for it before any other worker ran)
                        self._write_body(resp, seg, done, end, fd, pool, direct)
                        return
            headers = {"Range": f"bytes={done}-{end - 1}"}
            if d.part.state.validator:
                headers["If-Range"] = d.part.state.validator
            resp = d.request("GET", headers, session)
            with resp:
                if resp.status_code == 200:
                    raise RestartFromZero(f"{d.dest.name}: server sent the whole file to a ranged request")
                if resp.status_code != 206:
                    raise http.status_error(resp, d.url)
                cr = http.parse_content_range(resp.headers.get("Content-Range"))
                if cr is None or (cr.start, cr.end, cr.total) != (done, end - 1, d.part.state.total):
                    raise RestartFromZero(f"{d.dest.name}: server answered range {done}-{end - 1} with "
                                          f"{resp.headers.get('Content-Range')!r}")
                self._write_body(resp, seg, done, end, fd, pool)

        policy.call(one_try)

    def _write_body(self, resp: requests.Response, seg: list[int], done: int, end: int, fd: int,
                    pool: BufferPool, direct=None) -> None:
        pos = self._receive(resp, seg, done, fd, pool, direct)
        if pos is not None and pos != end:
            raise ProtocolViolation(f"{http.redact(self.d.url)}: segment ended at byte {pos} of {end}")

    def _receive(self, resp: requests.Response, seg: list[int], pos: int, fd: int, pool: BufferPool,
                 direct=None) -> int | None:
        """The segment's body, watched by the speed rule (see ``_write``)."""
        flusher = Writeback(fd, pos)
        with WATCHDOG.watching(resp.guard):
            try:
                pos = self._write(resp, seg, pos, fd, pool, flusher, direct)
            except TransferError:
                resp.guard.raise_if_tripped()
                raise
            resp.guard.raise_if_tripped()
        return pos

    def _write(self, resp: requests.Response, seg: list[int], pos: int, fd: int, pool: BufferPool,
               flusher: Writeback, direct=None) -> int | None:
        """Write a segment's body from ``pos`` on; returns the position reached, or None when it stopped
        early on purpose (stopping, or a helper took the rest of the segment)."""
        for chunk, buf in body_into(resp, self.d.url, pool, direct, fill_lock=self.fill_lock):
            try:
                if self.stop.is_set():
                    return None
                with self.guard:
                    limit = seg[1]  # may have shrunk: a helper took the rest
                if pos + len(chunk) > limit:
                    chunk = chunk[:max(limit - pos, 0)]
                pwrite_all(fd, chunk, pos)
                self._hash_if_next(chunk, pos)
            finally:
                buf.release()
            pos += len(chunk)
            with self.guard:
                seg[2] = pos
            self.d.count(len(chunk))
            flusher.written(pos)
            if pos >= limit:
                return None
            resp.guard.add(len(chunk))
        return pos
