"""One URL into its part file, attempt by attempt: the request (``Range`` + ``If-Range`` to
continue the bytes already there, a conditional request for a file in place), what the answer
allows (200: from byte 0; 206: append, once ``Content-Range`` proves it continues the same
version; 304: keep the file in place; 416: every byte is here, or start over), the body into
the part file with its hash, and the check of the result. Several connections: segments.py."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Iterator

import requests

from . import curl, http, segments
from .body import HASH_BUFFERS, READ_SIZE, receive_into
from .errors import DiskSpaceError, IntegrityError, ProtocolViolation, RestartFromZero, TransferError
from .hashes import BackgroundHasher, ExpectedHash, InlineHasher
from .part import PartFile, identity
from .progress import Reporter, human_size
from .ramp import AUTO, AUTO_CAP, LinkProbe
from .retry import WATCHDOG, FreshStarts, RetryPolicy, SpeedGuard
from .state import PartState, VerifiedRecord, corrupt_path, local_error, open_regular
from .verify import check

log = logging.getLogger("resumable")

INLINE_HASH_MAX = 1 << 20  # bodies up to this size are hashed on the receiving thread
NOT_MODIFIED: dict[str, str] = {}  # the attempt's answer when a conditional request got 304


class Download:
    """The download of ``url`` into ``dest``'s part file; ``attempt`` is one try at completing it
    (the retry policy ``policy`` decides on the next)."""

    def __init__(self, url: str, dest: Path, size: int | None, expected: ExpectedHash | None, *, connections: int | str,
                 retries: int, retry_delay: float, headers: dict, timeout, progress, max_time: float | None,
                 speed_limit: float, speed_time: float, session: requests.Session | None, private: bool,
                 revalidate: VerifiedRecord | None, fresh_starts: FreshStarts, defer_sync: bool = False):
        self.url, self.dest = url, dest
        self.shown = http.redact(url)  # for messages: once per download, not per request
        self.part = PartFile(dest, url, expected, private)
        self.size, self.expected = size, expected
        self.algorithm = expected.algorithm if expected else "sha256"
        # "auto": one connection, more while they raise the throughput (segments.join_in)
        self.auto = connections == AUTO
        self.connections = AUTO_CAP if self.auto else connections
        self.retries, self.retry_delay = retries, retry_delay
        self.headers = {**headers, "Accept-Encoding": "identity"}
        self.timeout = timeout
        self.speed_limit, self.speed_time = speed_limit, speed_time
        self.session = session or http.new_session()
        self.policy = RetryPolicy(retries=retries, delay=retry_delay, max_time=max_time,
                                  min_progress=speed_limit * speed_time, fresh_starts=fresh_starts)
        self.reporter = Reporter(dest.name, progress, size)
        self.revalidate = revalidate  # the record of the file in place: ask the server if it changed
        self.validator: str | None = None  # ETag or Last-Modified of what we publish, for the next re-check
        self.transferred = 0
        self.resumed = False
        self.segmented = not self.auto and connections > 1
        # A small part may be left unsynced for the batch's group commit (commit.py), which makes
        # it durable with others before its publish.
        self.defer_sync = defer_sync
        self.unsynced = False
        self.identity: tuple | None = None  # the complete part's (device, inode, size, mtime): see _publish

    def attempt(self) -> dict[str, str]:
        """The digests of the complete part file (NOT_MODIFIED: the file in place is current)."""
        try:
            return self._attempt_and_check()
        except TransferError as exc:
            if getattr(exc, "refused", False) and not self.transferred:
                exc.transient = False  # refused before any byte came: a wrong address or a server that is down
            raise
        except FileNotFoundError:
            # Only another writer that ignored (or never saw) our lock removes the .part.
            self.part.state = None
            raise TransferError(f"{self.dest.name}: the partial file vanished while fetching (another process?); "
                                "trying again") from None

    def _attempt_and_check(self) -> dict[str, str]:
        if self.segmented:
            digests = segments.attempt_segmented(self)
        else:
            digests = self.attempt_sequential()
        if digests is NOT_MODIFIED:
            return digests
        problem = check(self.part.size(), digests, self.size, self.expected)
        if problem:
            corrupt = corrupt_path(self.dest)
            os.replace(self.part.path, corrupt)
            self.part.discard()
            self.part.state = None
            self.policy.fresh_start()
            self.policy.budget.bad(digests.get(self.algorithm))
            raise IntegrityError(f"{self.dest.name} from {http.redact(self.url)}: {problem}; "
                                 f"the bad bytes are kept in {corrupt}")
        return digests

    # -- shared with the segmented attempt ---------------------------------------------------------
    def new_state(self, resp: requests.Response, total: int | None, segments=()) -> PartState:
        self.validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
        return self.part.start(resp, total, segments)

    def restart(self, why: str) -> RestartFromZero:
        log.info("%s: %s; starting over from byte 0", self.dest.name, why)  # the retry's line says it too
        self.part.discard()
        self.part.state = None
        self.policy.fresh_start()
        return RestartFromZero(f"{self.dest.name}: {why}")

    def check_total(self, total: int | None, have: int) -> None:
        if total is not None and self.size is not None and total != self.size:
            err = IntegrityError(f"{http.redact(self.url)}: server reports {total} bytes, expected {self.size}; "
                                 "the file changed upstream or the expected size is wrong")
            err.transient = False
            raise err
        if total is not None and total - have > READ_SIZE:  # a body of one read: the write says ENOSPC itself
            need = total - have
            free = shutil.disk_usage(self.dest.parent).free
            if need > free:
                raise DiskSpaceError(f"{self.dest}: needs {human_size(need)} more but {self.dest.parent} has "
                                     f"{human_size(free)} free; free some space or choose another directory")

    def request(self, method: str, headers: dict, session: requests.Session | None = None,
                small: bool | None = None) -> requests.Response:
        return http.request(session or self.session, method, self.url, {**self.headers, **headers}, self.timeout,
                            SpeedGuard(self.speed_limit, self.speed_time, self.shown), small)

    def count(self, n: int) -> None:
        self.transferred += n
        self.policy.progress.add(n)
        self.reporter.add(n)

    # -- one connection ---------------------------------------------------------------------------
    def attempt_sequential(self) -> dict[str, str]:
        offset = self._resume_offset()
        small = None if self.size is None else self.size - offset <= curl.BODY_MAX
        resp = self.request("GET", self._request_headers(offset), small=small)
        with resp:
            if self.revalidate and not offset and resp.status_code in (206, 304):
                return self._unchanged_or_retry(resp)
            if resp.status_code == 416:
                return self._all_here(resp, offset)
            if resp.status_code not in (200, 206):
                raise http.status_error(resp, self.url)
            self.revalidate = None  # answered: from here on a plain download
            if resp.status_code == 200 and resp.headers.get("Accept-Ranges", "").lower() != "bytes":
                note_no_ranges(getattr(resp, "final_url", self.url))
            if resp.status_code == 206:
                total = self._continued(resp, offset)
            else:
                offset, total = 0, self._from_zero(resp, offset)
            self.check_total(total, offset)
            self.reporter.set_total(total, offset)
            probe = None
            if self.auto and segments.worth_splitting(resp, total):
                probe = LinkProbe(time.monotonic(), time.monotonic)
            return self._stream(resp, offset, total, probe)

    def _resume_offset(self) -> int:
        offset = self.part.size() if self.part.state and self.part.is_regular() else 0
        if offset and not (self.part.state.validator or self.expected):
            offset = 0  # nothing could prove the server still has the same bytes: start over
            self.policy.fresh_start()
        return offset

    def _request_headers(self, offset: int) -> dict[str, str]:
        extra = {}
        if offset:
            extra["Range"] = f"bytes={offset}-"
            if self.part.state.validator:
                extra["If-Range"] = self.part.state.validator
        elif self.revalidate:
            extra.update(_conditional(self.revalidate.validator))
        return extra

    def _unchanged_or_retry(self, resp: requests.Response) -> dict[str, str]:
        """The answer to a conditional request: 304, or the 1-byte 206 of a matching If-Range (which
        must also agree on the size)."""
        if resp.status_code == 304:
            return NOT_MODIFIED
        cr = http.parse_content_range(resp.headers.get("Content-Range"))
        if cr is not None and cr.total == self.revalidate.size:
            return NOT_MODIFIED
        self.revalidate = None  # a server that keeps the date but not the size: download it again
        raise ProtocolViolation(f"{http.redact(self.url)}: same Last-Modified, another size "
                                f"({resp.headers.get('Content-Range')!r}); downloading it again")

    def _all_here(self, resp: requests.Response, offset: int) -> dict[str, str]:
        """416 to ``Range: bytes=offset-``: every byte is here already, if the server's size is ours
        (or the hash will say so); else start over."""
        total = http.parse_unsatisfied_range(resp.headers.get("Content-Range"))
        state = self.part.state
        if offset and total == offset and (state.total in (None, offset) or self.expected):
            self.check_total(total, offset)
            state.total = total
            self.validator = state.validator
            self.reporter.set_total(total, offset)
            digests = self.part.digest(self.algorithm)
            # Written by an earlier run that may have died before syncing it: synced now, or by the commit.
            self.unsynced = self.defer_sync and total <= INLINE_HASH_MAX
            if not self.unsynced:
                self.part.sync()
            self.identity = self.part.identity()
            return digests
        raise self.restart(f"server refused the range {offset}- (416)")

    def _continued(self, resp: requests.Response, offset: int) -> int:
        """A 206 that continues our bytes exactly up to the end of the same file: its total size."""
        cr = http.parse_content_range(resp.headers.get("Content-Range"))
        known = self.part.state.total if self.part.state else None
        length = http.body_length(resp)
        if not offset or cr is None or cr.start != offset or cr.total is None \
                or cr.end != cr.total - 1 or (known is not None and cr.total != known):
            raise self.restart(f"server answered range {offset}- with {resp.headers.get('Content-Range')!r}")
        if length is not None and length != cr.end - cr.start + 1:
            raise ProtocolViolation(f"{http.redact(self.url)}: Content-Length {length} disagrees with "
                                    f"Content-Range {resp.headers.get('Content-Range')!r}")
        self.part.state.total = cr.total
        self.validator = self.part.state.validator
        self.resumed = True
        return cr.total

    def _from_zero(self, resp: requests.Response, offset: int) -> int | None:
        """A 200: the whole file, from byte 0 (a new record); its size when known."""
        if offset:
            if resp.headers.get("Accept-Ranges", "").lower() != "bytes":
                no_range_support(self.dest.name, getattr(resp, "final_url", self.url),
                                 f"the {human_size(offset)} already here are downloaded again")
            else:
                log.warning("%s: the server sent a new version of the file; downloading it from byte 0", self.dest.name)
            self.policy.fresh_start()
        total = http.body_length(resp)
        self.new_state(resp, total)
        return total

    def _stream(self, resp: requests.Response, offset: int, total: int | None, probe: LinkProbe | None = None
                ) -> dict[str, str]:
        # Read and written through one descriptor: the hashing thread reads back the regions the
        # kernel spliced in (see zerocopy), and must be done before the descriptor closes.
        fd = open_regular(self.part.path, os.O_RDWR | os.O_CREAT)
        small = total is not None and total <= INLINE_HASH_MAX
        hasher = InlineHasher(self.algorithm) if small else BackgroundHasher(self.algorithm, max_pending=HASH_BUFFERS)
        pos = offset
        try:
            if offset:
                hasher.update_from_fd(fd, 0, offset)  # the prefix, hashed once
            else:
                os.ftruncate(fd, 0)
            try:
                for n in self._receive(resp, fd, pos, total, hasher, probe):
                    pos += n
                    self.count(n)
                handed_over = probe is not None and probe.split and pos < total
                if handed_over:
                    prefix_hash = hasher.detach()  # of bytes [0, pos)
            except BaseException as exc:
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    os.ftruncate(fd, pos)  # a piece half written: keep exactly the bytes we count
                    self.part.record_partial(pos)
                    raise local_error(exc, self.dest) from None
                self.part.record_partial(pos)
                raise
            if not handed_over:
                self.unsynced = small and self.defer_sync
                if not self.unsynced:
                    os.fsync(fd)
                self.identity = identity(os.fstat(fd))
                digest = hasher.hexdigest()
        finally:
            hasher.close()
            os.close(fd)
        if handed_over:  # this connection waits on the link: others join it (segments.join_in)
            return segments.join_in(self, resp, prefix_hash, pos, probe.rate)
        if total is not None and pos != total:
            self.part.record_partial(pos)
            raise ProtocolViolation(f"{http.redact(self.url)}: body ended at byte {pos} of {total}")
        if total is None:
            self.part.state.total = pos
            self.part.save()
        return {self.algorithm: digest}

    def _receive(self, resp: requests.Response, fd: int, pos: int, total: int | None,
                 hasher: BackgroundHasher, probe: LinkProbe | None = None) -> Iterator[int]:
        """Write the body into ``fd`` from ``pos`` on, feeding ``hasher``; yields each piece's size.

        A body longer than the expected size stops at once; a trickle ends by the speed rule.
        """
        guard = resp.guard
        cap = total if total is not None else self.size
        with WATCHDOG.watching(guard):
            try:
                for n in receive_into(resp, self.url, fd, pos, total, hasher, probe):
                    pos += n
                    if cap is not None and pos > cap:
                        self.part.discard()
                        self.part.state = None
                        self.policy.fresh_start()
                        raise IntegrityError(f"{http.redact(self.url)}: the body runs past the expected {cap} "
                                             "bytes; the file changed upstream or the expected size is wrong")
                    guard.add(n)
                    yield n
            except TransferError:
                guard.raise_if_tripped()  # the watchdog cut it: say why
                raise
            guard.raise_if_tripped()  # a cut can look like the end of a body that has no length


_NO_RANGES: dict[str, bool] = {}  # origin -> said so already: servers this process saw without Range support
_NO_RANGES_LOCK = threading.Lock()


def _origin_text(url: str) -> str:
    scheme, host, port = http.origin(url)
    return f"{scheme}://{host}:{port}" if port else f"{scheme}://{host}"


def note_no_ranges(url: str) -> None:
    """A 200 without ``Accept-Ranges: bytes`` came from ``url``'s server."""
    with _NO_RANGES_LOCK:
        _NO_RANGES.setdefault(_origin_text(url), False)


def servers_without_ranges() -> list[str]:
    """The servers this process saw answering without Range support (what cannot resume)."""
    with _NO_RANGES_LOCK:
        return sorted(_NO_RANGES)


def no_range_support(name: str, url: str, consequence: str) -> None:
    """Say once per server, on the default output (a warning), that it serves no byte ranges:
    nothing from it resumes (an interrupted download starts over from byte 0) and a file comes
    over one connection. Later cases are logged at INFO."""
    where = _origin_text(url)
    with _NO_RANGES_LOCK:
        first = not _NO_RANGES.get(where, False)
        _NO_RANGES[where] = True
    (log.warning if first else log.info)(
        "%s: the server at %s does not serve byte ranges (no 'Accept-Ranges: bytes'): %s; from this server an "
        "interrupted download starts over from byte 0 and a file comes over one connection", name, where, consequence)


def _conditional(validator: str) -> dict[str, str]:
    """Headers asking whether the server's file is still exactly the one ``validator`` names.

    An ETag: ``If-None-Match`` (304 when it still matches). A date: ``Range`` with ``If-Range``, which
    a server honours only for an exact match (a 1-byte 206); ``If-Modified-Since`` would take a
    file rolled back to an older date for unchanged. A server without Range support answers 200:
    the file is downloaded again, never wrongly kept."""
    if validator.startswith(('"', 'W/"')):
        return {"If-None-Match": validator}
    return {"Range": "bytes=0-0", "If-Range": validator}
