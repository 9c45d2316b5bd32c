"""How many connections a download gets when nobody said: start with one, add more while the
aggregate throughput grows (the way aria2c's splits and hf_xet's adaptive concurrency behave).

A server that caps each connection (20 MB/s each: aria2c -x8 takes 14 s for 2 GiB, one
connection 103 s) gains from every connection; an unthrottled or CPU-bound link gains nothing,
and extra connections only cost. So: measure the rate over a short window, double the
connections, measure again; nearly linear growth means a per-connection cap (go straight to
``cap``), some growth means double again, none means stay.
"""

from __future__ import annotations

AUTO = "auto"
AUTO_CAP = 8  # connections auto mode opens at most (aria2c -x8, the largest split most mirrors allow)
SETTLE = 0.05  # seconds after a change before measuring: new connections' handshakes and first bytes
WINDOW = 0.2  # seconds of transfer each measurement covers
GAIN = 1.15  # the rate must grow this much for another doubling
LINEAR = 0.8  # growth at this fraction of the ideal (rate x new/old) means a per-connection cap


class Ramp:
    """The connection count a download should have, fed with its byte count over time."""

    def __init__(self, now: float, cap: int = AUTO_CAP):
        self.cap, self.connections, self._previous = max(1, cap), 1, 1
        self.settled = False
        self._mark = (now, 0)  # start of the current window: (time, bytes)
        self._base: float | None = None  # the rate before the last increase
        self.done = self.cap == 1

    def update(self, now: float, transferred: int) -> int:
        """The connections wanted after ``transferred`` bytes in all at time ``now``."""
        if self.done:
            return self.connections
        t0, b0 = self._mark
        if not self.settled:
            if now - t0 >= SETTLE:
                self._mark, self.settled = (now, transferred), True
            return self.connections
        if now - t0 < WINDOW:
            return self.connections
        rate = (transferred - b0) / (now - t0)
        self._mark, self.settled = (now, transferred), False
        if rate <= 0:
            return self.connections  # nothing arrived: no evidence either way, measure again
        before, base = self.connections, self._base
        if base is None or rate >= base * GAIN:
            ideal = self.connections / self._previous
            linear = base is not None and rate / base - 1 >= LINEAR * (ideal - 1)
            self._previous = self.connections
            self.connections = self.cap if linear else min(self.cap, self.connections * 2)
            self._base = rate
        self.done = self.connections == before or self.connections >= self.cap
        return self.connections
