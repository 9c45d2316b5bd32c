"""The retry policy of a transfer, as tenacity data.

Transient failures only (network errors, timeouts, 408/429/5xx, cut bodies, a corrupt
download); the budget of attempts and the backoff both start over whenever bytes arrive,
so a long download over a flaky link is never abandoned while it makes progress;
``Retry-After`` is honoured up to a cap.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace

from tenacity import (
    RetryCallState,
    Retrying,
    stop_after_delay,
    stop_never,
    wait_exponential_jitter,
)

from .errors import IntegrityError, ResumableError

log = logging.getLogger("resumable")


MAX_CORRUPT_RETRIES = 2


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


class RetryPolicy:
    """``retries`` consecutive failures without a byte of progress end the transfer."""

    def __init__(self, retries: int = 5, delay: float = 1.0, max_delay: float = 30.0,
                 retry_after_cap: float = 120.0, max_time: float | None = None):
        self.retries = retries
        self.retry_after_cap = retry_after_cap
        self.backoff = wait_exponential_jitter(multiplier=delay, max=max_delay, jitter=delay)
        self.deadline = stop_after_delay(max_time) if max_time else stop_never
        self.progress = ByteProgress()
        self._seen = 0
        self._stalled = 0
        self._corrupt = 0

    # tenacity hooks --------------------------------------------------------------------------
    def _retry(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception()
        if exc is None or not is_transient(exc):
            return False
        if isinstance(exc, IntegrityError):
            # Bad bytes are no progress, and a source that keeps sending them is not worth
            # more than a couple of full re-downloads.
            self._seen = self.progress.received
            self._corrupt += 1
            if self._corrupt > MAX_CORRUPT_RETRIES:
                return False
        elif self.progress.received > self._seen:  # bytes arrived since the last failure
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


