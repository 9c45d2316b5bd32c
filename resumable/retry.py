"""Whether an error is worth retrying, the retry policy of a transfer (tenacity, through its public
API), and the rule that ends a stalled body.

``is_transient`` is the one classifier: the engine's retries, the Hub API client's and the
pipeline's task retries (tasks.caching.transient_only) all ask it. Transient failures are
network errors, timeouts, 408/425/429/5xx, cut bodies, a corrupt download; a transfer's budget of
attempts and its backoff both start over whenever real progress arrives (at least a stall
window's worth of bytes that are kept), so a long download over a flaky link is never abandoned
while it makes progress, and a trickle never counts as progress. Starting over from byte 0 (bad
bytes, a server that cannot continue the file) has its own small budget, so no file is
downloaded in full more than a few times in one run. ``Retry-After`` is honoured up to a cap.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, TypeVar

import requests
import urllib3
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from .errors import IntegrityError, ResumableError, RestartFromZero, StalledError, transient_status

log = logging.getLogger("resumable")
T = TypeVar("T")


MAX_FRESH_STARTS = 2  # downloads from byte 0 after the first, per transfer: at most 3 in full per run
DEFAULT_SPEED_LIMIT = 1024  # bytes/s: slower than this for SPEED_TIME seconds is a stall (curl -Y/-y)
DEFAULT_SPEED_TIME = 30.0

# The socket errors of a network that failed (not of a local file): refused, reset, cut, unreachable.
_NETWORK_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE,
                             errno.ENETDOWN, errno.ENETUNREACH, errno.ENETRESET, errno.EHOSTDOWN, errno.EHOSTUNREACH})


def is_transient(exc: BaseException) -> bool:
    """Whether trying the same thing again can help.

    The engine's errors say so themselves (``TransferError.transient``; its other errors, about
    input, disk or archives, never are). Another library's error with an HTTP answer is judged by
    its status (408, 425, 429, 5xx); one without an answer is transient when the network failed
    (``is_network_error``). Anything else (a local file, a bug) is not."""
    if isinstance(exc, ResumableError):
        return bool(getattr(exc, "transient", False))
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int):
        return transient_status(status)
    return is_network_error(exc)


def is_network_error(exc: BaseException) -> bool:
    """The network failed, as the standard library, requests, urllib3 or httpx report it: refused,
    reset, timed out, unreachable, a host name that does not resolve, a TLS channel cut."""
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror, socket.herror)):
        return True
    if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLCertVerificationError):
        return True
    if isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS:
        return True
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                        requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError,
                        urllib3.exceptions.TimeoutError)):
        return True
    httpx_modules = (sys.modules.get(name) for name in ("httpx", "httpx2"))  # only loaded if their errors exist
    return any(isinstance(exc, module.TransportError) for module in httpx_modules if module is not None)


@dataclass
class ByteProgress:
    """Counts bytes received, so the policy can tell a stalled transfer from a slow one."""

    received: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, n: int) -> None:
        with self._lock:
            self.received += n


class SpeedGuard:
    """One response must average at least ``limit`` bytes/s over every ``window`` seconds, from the
    request on (curl's --speed-limit/--speed-time). Checked on each piece of body (``add``) and, by
    the WATCHDOG, from outside: a response that never delivers a body byte (headers trickled a byte
    at a time, endless 100-continues or trailers) gets its connection shut down. ``limit`` 0: off."""

    def __init__(self, limit: float, window: float, what: str):
        self.limit, self.window, self.what = limit, window, what
        self.start, self.bytes = time.monotonic(), 0
        self.tripped = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        if not self.limit:
            return
        self.bytes += n
        now = time.monotonic()
        if now - self.start >= self.window:
            if self.bytes < self.limit * (now - self.start):
                self.tripped = True
                raise self.stalled()
            self.start, self.bytes = now, 0

    def overdue(self, now: float) -> bool:
        return bool(self.limit) and now - self.start >= self.window and self.bytes < self.limit * (now - self.start)

    def attach(self, sock: socket.socket | None) -> None:
        """The connection this response arrives on (the watchdog shuts it down when overdue)."""
        with self._lock:
            self._sock = sock

    def trip(self) -> None:
        with self._lock:
            self.tripped = True
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)  # the blocked read returns: the reader sees why
                except OSError:
                    pass

    def stalled(self) -> StalledError:
        return StalledError(f"{self.what}: slower than {self.limit:.0f} B/s for {self.window:.0f} s "
                            f"({self.bytes} bytes); reconnecting")

    def raise_if_tripped(self) -> None:
        if self.tripped:
            raise self.stalled()

    def kept_elsewhere(self, tripped: bool) -> None:
        """Someone else (libcurl) kept the rule until now: ``tripped`` is its verdict, and the next
        window starts now. The watchdog, which saw no body bytes meanwhile, has no say on that time."""
        with self._lock:
            self.tripped = tripped
            self.start, self.bytes = time.monotonic(), 0


class _Watchdog:
    """One daemon thread that trips the guards of responses that are overdue."""

    INTERVAL = 0.25

    def __init__(self):
        self._guards: set[SpeedGuard] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def watching(self, guard: SpeedGuard):
        with self._lock:
            self._guards.add(guard)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="speed-watchdog", daemon=True)
                self._thread.start()
        try:
            yield guard
        finally:
            with self._lock:
                self._guards.discard(guard)

    def _run(self) -> None:
        while True:
            time.sleep(self.INTERVAL)
            now = time.monotonic()
            with self._lock:
                overdue = [g for g in self._guards if g.overdue(now)]
            for guard in overdue:
                guard.trip()


WATCHDOG = _Watchdog()


class FreshStarts:
    """How many times one fetch started over from byte 0 (shared by its mirrors and connections)."""

    def __init__(self):
        self.count = 0
        self.bad_digests: set[str] = set()  # of the downloads that failed verification
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.count += 1

    def bad(self, digest: str | None) -> None:
        """A download failed verification with ``digest`` (the final error tells a wrong expected
        hash, every download the same, from bytes corrupted in transit)."""
        with self._lock:
            if digest:
                self.bad_digests.add(digest)

    @property
    def exhausted(self) -> bool:
        return self.count > MAX_FRESH_STARTS


class WaitForServer:
    """A tenacity wait: ``backoff``, or longer when the server asked for it (the error's
    ``retry_after``, from Retry-After or RateLimit), up to ``cap`` seconds."""

    def __init__(self, backoff: Callable, cap: float):
        self.backoff, self.cap = backoff, cap

    def __call__(self, state) -> float:
        backoff = self.backoff(state)
        asked = getattr(state.outcome.exception(), "retry_after", None)
        if asked is not None:
            return max(backoff, min(float(asked), self.cap))
        return backoff


class RetryPolicy:
    """``retries`` consecutive failures without real progress end the transfer, and so does a
    fresh start from byte 0 beyond MAX_FRESH_STARTS or, with ``max_time``, the deadline. Progress
    is ``min_progress`` bytes kept since the last failure (a trickle of a few bytes per attempt must
    not reset the budget).

    Each run of failures without progress is one tenacity ``Retrying``: attempts counted by
    ``stop_after_attempt``, backoff by ``wait_exponential_jitter``. Progress ends the run, and the
    next one starts from the failure that ended it, as its first attempt: budget and backoff
    start over."""

    def __init__(self, retries: int = 5, delay: float = 1.0, max_delay: float = 30.0,
                 retry_after_cap: float = 120.0, max_time: float | None = None, min_progress: int = 1,
                 fresh_starts: FreshStarts | None = None):
        self.retries = retries
        self.max_time = max_time
        self.wait = WaitForServer(wait_exponential_jitter(multiplier=delay, max=max_delay, jitter=delay),
                                  retry_after_cap)
        self.min_progress = max(1, int(min_progress))
        self.progress = ByteProgress()
        self.budget = fresh_starts or FreshStarts()
        self._seen = 0  # progress.received at the last failure
        self._failures = 0  # in the current run of attempts
        self._progressed = False  # the current run ended because bytes arrived

    def fresh_start(self) -> None:
        """The bytes so far were thrown away: what arrived before is no progress either."""
        self.budget.add()
        self._seen = self.progress.received

    @property
    def gave_up_restarting(self) -> bool:
        return self.budget.exhausted

    def call(self, attempt: Callable[[], T]) -> T:
        """``attempt()`` until it returns, retrying transient failures as this policy allows; the
        last failure is raised as it is."""
        started = time.monotonic()
        failure: BaseException | None = None
        while True:
            self._failures, self._progressed = 0, False
            try:
                return self._retrying(started)(_first_raising(failure, attempt))
            except BaseException as exc:
                if not self._progressed:
                    raise
                failure = exc

    def _retrying(self, started: float) -> Retrying:
        stop = stop_after_attempt(self.retries + 1)
        if self.max_time:
            stop = stop | stop_after_delay(max(0.0, self.max_time - (time.monotonic() - started)))
        return Retrying(retry=retry_if_exception(self._worth_retrying), stop=stop, wait=self.wait,
                        before_sleep=self._log, reraise=True)

    def _worth_retrying(self, exc: BaseException) -> bool:
        self._failures += 1
        if not is_transient(exc) or self.gave_up_restarting:
            return False
        received = self.progress.received
        if isinstance(exc, (IntegrityError, StalledError)):
            self._seen = received  # bad bytes or a trickle: no progress
        elif received - self._seen >= self.min_progress:
            self._seen = received
            if self._failures > 1:  # a fresh budget: end this run, the next starts with this failure
                self._progressed = True
                return False
        return True

    def _log(self, state) -> None:
        exc, sleep = state.outcome.exception(), state.next_action.sleep if state.next_action else 0.0
        if isinstance(exc, (IntegrityError, RestartFromZero)) and self.budget.count:
            # Its bytes were thrown away: what follows is a download from byte 0, and those have a
            # budget of their own (smaller than the retries): count those.
            log.warning("%s; downloading it again from byte 0 in %.1fs (download %d of at most %d in this run)",
                        exc, sleep, self.budget.count + 1, MAX_FRESH_STARTS + 1)
            return
        log.warning("%s; retry %d/%d in %.1fs", exc, state.attempt_number, self.retries, sleep)


def _first_raising(failure: BaseException | None, attempt: Callable[[], T]) -> Callable[[], T]:
    """``attempt``, except that the first call raises ``failure`` (when there is one): a run of
    attempts that starts from the failure that ended the previous run."""
    pending = [failure] if failure is not None else []

    def call() -> T:
        if pending:
            raise pending.pop()
        return attempt()

    return call
