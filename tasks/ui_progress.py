"""What a download shows while it runs: a tqdm bar in a terminal, and in the Prefect UI a
progress artifact (at most one update a second) plus log lines with bytes and speed."""

from __future__ import annotations

import re
import threading
import time
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from resumable.progress import byte_bar, human_size

ARTIFACT_MIN_BYTES = 8 << 20  # smaller downloads finish before a bar means anything
ARTIFACT_INTERVAL = 1.0
LOG_INTERVAL = 10.0


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes."""
    key = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
    return key[:100] or "artifact"


class DownloadProgress:
    """A progress callable for ``resumable.fetch(progress=...)``; thread-safe."""

    def __init__(self, label: str, *, key: str, tty: bool | None = None):
        self.label, self.key = label, key
        self._lock = threading.Lock()
        self._logger = get_run_logger()
        self._t0 = time.monotonic()
        self._start_bytes: int | None = None
        self._last_artifact = self._last_log = 0.0
        self._artifact: UUID | None = None
        self._artifact_failed = False
        self._bar = None
        self._bar = byte_bar(label, show=tty)

    def __call__(self, downloaded: int, total: int | None) -> None:
        now = time.monotonic()
        with self._lock:
            if self._start_bytes is None:
                self._start_bytes = downloaded  # a resumed download starts part-way
            if self._bar is not None:
                if total is not None and self._bar.total != total:
                    self._bar.total = total
                self._bar.update(downloaded - self._bar.n)
            done = total is not None and downloaded >= total
            if (total is None or total >= ARTIFACT_MIN_BYTES) and (done or now - self._last_artifact >= ARTIFACT_INTERVAL):
                self._last_artifact = now
                self._update_artifact(downloaded, total)
            if now - self._last_log >= LOG_INTERVAL and now - self._t0 >= LOG_INTERVAL:
                self._last_log = now
                self._logger.info("%s: %s of %s (%s/s)", self.label, human_size(downloaded),
                                  human_size(total) if total else "?", human_size(self.speed(downloaded)))

    def speed(self, downloaded: int) -> float:
        elapsed = time.monotonic() - self._t0
        return (downloaded - (self._start_bytes or 0)) / elapsed if elapsed > 0 else 0.0

    def _update_artifact(self, downloaded: int, total: int | None) -> None:
        if self._artifact_failed:
            return
        pct = min(100.0, 100.0 * downloaded / total) if total else 0.0
        try:
            if self._artifact is None:
                self._artifact = create_progress_artifact(pct, key=self.key, description=f"Downloading {self.label}")
            else:
                update_progress_artifact(self._artifact, pct)
        except Exception as exc:  # the UI's view is best effort; the download goes on
            self._artifact_failed = True
            self._logger.warning("%s: progress artifact unavailable (%s)", self.label, exc)

    def close(self, total: int | None = None) -> None:
        with self._lock:
            if self._artifact is not None and total:
                self._update_artifact(total, total)
            if self._bar is not None:
                self._bar.close()
