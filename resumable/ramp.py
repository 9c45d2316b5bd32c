"""How many connections a download gets when nobody said: one, until it shows that it waits on the
link; then more while the aggregate throughput grows (the way aria2c's splits and hf_xet's adaptive
concurrency behave).

LinkProbe watches the first connection: when most of its reads had to wait for data, the link
(not this machine) is the limit, and another connection may help. A connection whose data is
always already there gains nothing from company (on loopback the second connection cost 5-15 %).

A server that caps each connection (20 MB/s each: aria2c -x8 takes 14 s for 2 GiB, one
connection 103 s) gains from every connection; an unthrottled or CPU-bound link gains nothing,
and extra connections only cost. So: measure the rate over a short window, double the
connections, measure again; nearly linear growth means a per-connection cap (go straight to
``cap``), some growth means double again, none means stay.

A batch's files at once (WorkerRamp) follow the same idea: one, and more while they wait.
"""

from __future__ import annotations

import time

AUTO = "auto"
AUTO_CAP = 8  # connections auto mode opens at most (aria2c -x8, the largest split most mirrors allow)
SETTLE = 0.05  # seconds after a change before measuring: new connections' handshakes and first bytes
WINDOW = 0.2  # seconds of transfer each measurement covers
GAIN = 1.15  # the rate must grow this much for another doubling
LINEAR = 0.8  # growth at this fraction of the ideal (rate x new/old) means a per-connection cap
WAITING = 0.5  # share of reads that waited for data above which one connection is link-limited
MIN_READS = 3  # reads a probe window needs before it decides


class LinkProbe:
    """Whether a connection is limited by the link: the share of its reads that found no data
    waiting, over windows of WINDOW seconds."""

    def __init__(self, now: float, clock):
        self.clock = clock
        self._start, self._reads, self._waits, self._bytes = now, 0, 0, 0
        self.rate = 0.0  # bytes/s over the window that decided
        self.split = False

    def note(self, waited: bool, size: int) -> None:
        """One read of ``size`` bytes; ``waited``: no data was there when it began."""
        self._reads += 1
        self._waits += waited
        self._bytes += size

    def stop_here(self) -> bool:
        """Called before each read: True once the connection has shown it waits on the link."""
        now = self.clock()
        if now - self._start < WINDOW:
            return False
        if self._reads >= MIN_READS and self._waits >= WAITING * self._reads:
            self.rate, self.split = self._bytes / (now - self._start), True
            return True
        self._start, self._reads, self._waits, self._bytes = now, 0, 0, 0
        return False


class Ramp:
    """The connection count a download should have, fed with its byte count over time."""

    def __init__(self, now: float, cap: int = AUTO_CAP, transferred: int = 0, one_rate: float | None = None):
        """``one_rate``: the rate one connection reached, when a LinkProbe already showed that it
        waits on the link: the ramp then starts at two connections."""
        self.cap = max(1, cap)
        self.connections, self._previous = (min(2, self.cap), 1) if one_rate else (1, 1)
        self.settled = False
        self._mark = (now, transferred)  # start of the current window: (time, bytes)
        self._base: float | None = one_rate  # the rate before the last increase
        self.done = self.connections >= self.cap

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


BATCH_WINDOW = 0.05  # seconds of a batch process's CPU each decision looks at
BATCH_BUSY = 0.5  # CPU seconds per second, its workers' together, from which a batch process's workers are busy


class WorkerRamp:
    """How many files a batch process fetches at once: one, doubled while its workers' CPU shows
    that they mostly wait (on the link, a slow server, the disk, their file's hashing), up to ``cap``.

    The threads of one Python process share one core (the GIL). A worker that keeps it busy gains
    nothing from company, and each one more adds GIL hand-offs: 1,000 x 64 KiB from loopback nginx
    cost one process 1.06 CPU-s with 1 worker, 1.9 with 2, 2.3 with 8 (30 to 90 context switches
    per file). A far server's files keep workers waiting, and there every worker counts (aria2c -j8)."""

    def __init__(self, cap: int, clock=time.monotonic, cpu=time.process_time):
        """``cpu``: the CPU seconds the workers' threads have used so far."""
        self.cap = max(1, cap)
        self.clock, self.cpu = clock, cpu
        self._mark = (clock(), cpu())

    def more(self, running: int) -> int:
        """Workers to start now beside the ``running`` ones (0 until a window has passed)."""
        now, used = self.clock(), self.cpu()
        t0, c0 = self._mark
        if now - t0 < BATCH_WINDOW:
            return 0
        self._mark = (now, used)
        if running >= self.cap or (used - c0) / (now - t0) >= BATCH_BUSY:
            return 0
        return min(max(1, running), self.cap - running)
