"""Progress reporting: a tqdm bar per file, and the guide's ``progress_bar(downloaded, total)``."""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable

ProgressCallback = Callable[[int, int | None], None]


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class _TextBar:
    """State for the guide's stateless-looking ``progress_bar`` function."""

    def __init__(self):
        self.start = time.monotonic()
        self.first = 0
        self.last = -1

    def render(self, downloaded: int, total: int | None, width: int = 30) -> str:
        if downloaded < self.last:  # a new download started
            self.__init__()
        if self.last < 0:
            self.first = downloaded
        self.last = downloaded
        elapsed = max(time.monotonic() - self.start, 1e-6)
        speed = (downloaded - self.first) / elapsed
        if total:
            frac = min(downloaded / total, 1.0)
            bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
            eta = (total - downloaded) / speed if speed > 0 else float("inf")
            eta_text = human_duration(eta) if eta != float("inf") else "--:--"
            return (f"[{bar}] {frac * 100:5.1f}% {human_size(downloaded)}/{human_size(total)} "
                    f"{human_size(speed)}/s ETA {eta_text}")
        return f"{human_size(downloaded)} {human_size(speed)}/s"


_text_bar = _TextBar()


def progress_bar(downloaded: int, total: int | None, stream=None) -> None:
    """Print a one-line progress bar (percent, sizes, speed, ETA), redrawn in place."""
    stream = stream or sys.stdout
    line = _text_bar.render(downloaded, total)
    end = "\n" if total and downloaded >= total else ""
    stream.write("\r" + line + end)
    stream.flush()


def byte_bar(label: str, total: int | None = None, initial: int = 0, *, show: bool | None = None):
    """The one progress bar of bytes (tqdm on stderr, binary units, speed and ETA) when ``show``
    (None: when stderr is a terminal), else None."""
    if not (sys.stderr.isatty() if show is None else show):
        return None
    return _byte_bar_class()(total=total, initial=initial, desc=label, unit="B", unit_scale=True, unit_divisor=1024,
                             dynamic_ncols=True, leave=True, file=sys.stderr, miniters=1, mininterval=0.2)


_BYTE_BAR = None
KNOWN_TOTAL = "{desc}: {percentage:3.0f}%|{bar}| {bytes_fmt} [{elapsed}<{remaining}, {speed_fmt}]"
UNKNOWN_TOTAL = "{desc}: {bytes_fmt} [{elapsed}, {speed_fmt}]"


def _byte_bar_class():
    """tqdm writing sizes and speeds as the log lines do (``human_size``: KiB, MiB, GiB): tqdm's own
    unit scaling says ``MB`` for 1024-based sizes and scales speeds by 1000."""
    global _BYTE_BAR
    if _BYTE_BAR is None:
        from tqdm import tqdm

        class ByteBar(tqdm):
            @property
            def format_dict(self):
                d = super().format_dict
                n, total, elapsed = d["n"], d["total"], d["elapsed"] or 0
                rate = d["rate"] if d["rate"] is not None else ((n - d["initial"]) / elapsed if elapsed else None)
                d["bytes_fmt"] = human_size(n) + (f"/{human_size(total)}" if total is not None else "")
                d["speed_fmt"] = f"{human_size(rate)}/s" if rate else "?/s"
                d["bar_format"] = KNOWN_TOTAL if total else UNKNOWN_TOTAL
                return d

        _BYTE_BAR = ByteBar
    return _BYTE_BAR


class Reporter:
    """Fans progress out to a tqdm bar and/or a callback; thread-safe for segment workers."""

    def __init__(self, label: str, progress, total: int | None, initial: int = 0):
        self._lock = threading.Lock()
        self.done = initial
        self.total = total
        self._callback: ProgressCallback | None = progress if callable(progress) else None
        self._bar = None
        if progress is None or progress is True:
            self._bar = byte_bar(label, total, initial, show=True if progress is True else None)

    def set_total(self, total: int | None, initial: int = 0) -> None:
        with self._lock:
            self.total, self.done = total, initial
            if self._bar is not None:
                self._bar.reset(total=total)
                self._bar.update(initial)
        self._emit()

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(n)
        self._emit()

    def _emit(self) -> None:
        if self._callback is not None:
            self._callback(self.done, self.total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
