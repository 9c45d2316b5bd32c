"""The retry policy of a transfer, as tenacity data, and the rule that ends a stalled body.

Transient failures only (network errors, timeouts, 408/429/5xx, cut bodies, a corrupt
download); the budget of attempts and the backoff both start over whenever real progress
arrives (at least a stall window's worth of bytes that are kept), so a long download over a
flaky link is never abandoned while it makes progress, and a trickle never counts as progress.
Starting over from byte 0 (bad bytes, a server that cannot continue the file) has its own small
budget, so no file is downloaded in full more than a few times in one run. ``Retry-After`` is
honoured up to a cap.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace

from tenacity import (
    RetryCallState,
    Retrying,
    stop_after_delay,
    stop_never,
    wait_exponential_jitter,
)

from .errors import IntegrityError, ResumableError, StalledError

log = logging.getLogger("resumable")


MAX_FRESH_STARTS = 2  # downloads from byte 0 after the first, per transfer: at most 3 in full per run
DEFAULT_SPEED_LIMIT = 1024  # bytes/s: slower than this for SPEED_TIME seconds is a stall (curl -Y/-y)
DEFAULT_SPEED_TIME = 30.0


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, ResumableError) and getattr(exc, "transient", False)


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
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.count += 1

    @property
    def exhausted(self) -> bool:
        return self.count > MAX_FRESH_STARTS


class RetryPolicy:
    """``retries`` consecutive failures without real progress end the transfer, and so does a
    fresh start from byte 0 beyond MAX_FRESH_STARTS. Progress is ``min_progress`` bytes kept
    since the last failure (a trickle of a few bytes per attempt must not reset the budget)."""

    def __init__(self, retries: int = 5, delay: float = 1.0, max_delay: float = 30.0,
                 retry_after_cap: float = 120.0, max_time: float | None = None, min_progress: int = 1,
                 fresh_starts: FreshStarts | None = None):
        self.retries = retries
        self.retry_after_cap = retry_after_cap
        self.backoff = wait_exponential_jitter(multiplier=delay, max=max_delay, jitter=delay)
        self.deadline = stop_after_delay(max_time) if max_time else stop_never
        self.min_progress = max(1, int(min_progress))
        self.progress = ByteProgress()
        self.budget = fresh_starts or FreshStarts()
        self._seen = 0
        self._stalled = 0

    def fresh_start(self) -> None:
        """The bytes so far were thrown away: what arrived before is no progress either."""
        self.budget.add()
        self._seen = self.progress.received

    @property
    def gave_up_restarting(self) -> bool:
        return self.budget.exhausted

    # tenacity hooks --------------------------------------------------------------------------
    def _retry(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception()
        if exc is None or not is_transient(exc) or self.gave_up_restarting:
            return False
        if isinstance(exc, (IntegrityError, StalledError)):
            self._seen = self.progress.received  # bad bytes or a trickle: no progress
        elif self.progress.received - self._seen >= self.min_progress:
            self._seen, self._stalled = self.progress.received, 0
        self._stalled += 1
        return True

    def _wait(self, state: RetryCallState) -> float:
        backoff = self.backoff(SimpleNamespace(attempt_number=self._stalled))
        asked = getattr(state.outcome.exception(), "retry_after", None)
        if asked is not None:
            return max(backoff, min(float(asked), self.retry_after_cap))
        return backoff

    def _stop(self, state: RetryCallState) -> bool:
        return self._stalled > self.retries or self.deadline(state)

    def _log(self, state: RetryCallState) -> None:
        exc = state.outcome.exception()
        log.warning("%s; retry %d/%d in %.1fs", exc, self._stalled, self.retries,
                    state.next_action.sleep if state.next_action else 0.0)

    def retrying(self) -> Retrying:
        return Retrying(retry=self._retry, wait=self._wait, stop=self._stop, before_sleep=self._log, reraise=True)


