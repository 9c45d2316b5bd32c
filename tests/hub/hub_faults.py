"""The Hub look-alike with two faults the tests switch on, that follow events rather than the clock
(a uniquely named module: pytest puts every test folder on sys.path).

- ``expire_signed_urls()``: every signed CDN URL handed out so far stops working at once (the CDN
  answers 403, as a real one does to an expired URL), however little time has passed; with
  ``expire_on_cut`` that happens the moment a cut body starts: the URL its retry would reuse is dead.
- ``hold(suffix, after)``: the body of a file whose path ends with ``suffix`` stops after ``after``
  bytes (at the next 256 KiB block) until ``release()``; ``held`` is set then. A client killed while
  held is certainly mid-body, whatever the machine's load.
"""

from __future__ import annotations

import os
import threading

from offline.hub_server import HubServer

HOLD_LIMIT = 600.0  # a hold nobody releases ends by itself (stop() releases every hold)


class _TaggedLog(list):
    """The server's request log, remembering which handler thread serves which record."""

    def __init__(self, streams: dict):
        super().__init__()
        self._streams = streams

    def append(self, record) -> None:
        self._streams[threading.get_ident()] = record
        super().append(record)


class FaultyHub(HubServer):
    def __init__(self, *args, **kwargs):
        self._slow = None
        self._hold: tuple[str, int] | None = None
        self._streams: dict = {}
        self.held, self._go = threading.Event(), threading.Event()
        self.expire_on_cut = False
        super().__init__(*args, **kwargs)
        self.log = _TaggedLog(self._streams)

    # -- signed URLs that expire on an event ---------------------------------------------------
    def expire_signed_urls(self) -> None:
        self._secret = os.urandom(16)  # URLs signed before no longer verify: the CDN answers 403

    def _take_cut(self):
        limit = super()._take_cut()
        if limit is not None and self.expire_on_cut:
            self.expire_signed_urls()
        return limit

    # -- a body held until the test says go ----------------------------------------------------
    def hold(self, suffix: str, after: int) -> None:
        self.held.clear()
        self._go.clear()
        self._hold = (suffix, after)

    def release(self) -> None:
        self._go.set()

    def stop(self) -> None:
        self.release()
        super().stop()

    @property
    def slow(self):  # read by the body loop before every block: the place to hold it
        hold = self._hold
        if hold is not None and not self._go.is_set():
            record = self._streams.get(threading.get_ident())
            if record is not None and record.path.endswith(hold[0]) and record.bytes_sent >= hold[1]:
                self.held.set()
                self._go.wait(HOLD_LIMIT)
        return self._slow

    @slow.setter
    def slow(self, value) -> None:
        self._slow = value
