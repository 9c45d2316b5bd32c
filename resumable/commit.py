"""Group commit: a batch's small files made durable together, then published.

Alone, a file is fsynced before its rename (two disk writes and a cache flush each: ~0.3 ms of
CPU per file in these machines' KVM guests, a sixth of a 64 KiB file's cost). In a batch, a
downloading thread hands its finished, verified part file to the batch's GroupCommit and goes on
to its next file; the commit thread makes every waiting part durable with one ``syncfs`` per file
system, then renames each into place. A file still appears only complete and verified, and its
bytes are on the disk before its name is. The lock of the destination travels with the part
(it is released once the file is published), so no other writer comes between.

A ``syncfs`` that fails names no file: each part of the group is then fsynced on its own, and
only those that fail are reported. A ``syncfs`` that took long (other writers' dirty data on the
same file system) sends the rest of the batch back to per-file fsyncs.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
import time
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import ResumableError
from .state import local_error, open_regular

log = logging.getLogger("resumable")

GROUP_WAIT = 0.02  # s a part waits for others to share its syncfs (bench 4: ~30 files of 64 KiB)
GROUP_MAX = 64  # parts waiting at most: each holds its destination's lock (a descriptor)
SLOW_SYNCFS = 0.5  # s: a syncfs slower than this flushes others' data too; fsync each part instead


@dataclass
class _Waiting:
    part: Path
    publish: Callable[[], object]  # renames the part into place; returns the FetchResult
    held: ExitStack  # the destination's lock, released after the publish
    future: Future


def available() -> bool:
    """Group commit needs ``syncfs`` and locks another thread can release (Linux OFD locks)."""
    import fcntl

    return _syncfs() is not None and hasattr(fcntl, "F_OFD_SETLK")


def _syncfs():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


class GroupCommit:
    """The commit thread of one batch (or of one helper process's share of it). It only syncs: the
    renames are done by the downloading threads, each publishing what is durable when it hands in
    its next part (one thread doing all of them fell behind, waiting for the GIL at each call)."""

    def __init__(self):
        self._syncfs = _syncfs()
        self._cond = threading.Condition()
        self._waiting: list[_Waiting] = []  # to make durable
        self._durable: list[tuple[_Waiting, Exception | None]] = []  # to publish (or to fail, with why)
        self._closed = False
        self.per_file = False  # after a slow syncfs: each part fsynced on its own
        self._thread = threading.Thread(target=self._run, name="fetch-commit", daemon=True)
        self._thread.start()

    def submit(self, part: Path, publish: Callable[[], object], held: ExitStack) -> Future:
        """Publish ``part`` (with ``publish``) once its bytes are durable; ``held`` is closed after it.
        Publishes what is durable already; waits while GROUP_MAX parts are on their way."""
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("GroupCommit.submit after close")
            self._waiting.append(_Waiting(part, publish, held, future))
            self._cond.notify_all()
        while True:
            self._publish_durable()
            with self._cond:
                if len(self._waiting) + len(self._durable) < GROUP_MAX or self._closed:
                    return future
                if not self._durable:
                    self._cond.wait()

    def close(self) -> None:
        """Make durable and publish what waits, then end the commit thread (again: nothing)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        self._publish_durable()

    def _publish_durable(self) -> None:
        while True:
            with self._cond:
                if not self._durable:
                    return
                w, problem = self._durable.pop()
            _publish(w, problem)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    if not self._cond.wait(GROUP_WAIT if self._durable else None) and self._durable:
                        break  # no part came in to publish them: this thread does
                idle = not self._waiting
                if idle and self._closed:
                    return
            if idle:
                self._publish_durable()
                continue
            with self._cond:
                deadline = time.monotonic() + GROUP_WAIT
                while len(self._waiting) < GROUP_MAX and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                group, self._waiting = self._waiting, []
            unsynced = self._sync(group)
            with self._cond:
                self._durable.extend((w, unsynced.get(w.part)) for w in group)
                self._cond.notify_all()

    def _sync(self, group: list[_Waiting]) -> dict[Path, Exception]:
        """Make the group's parts durable; returns the parts that could not be, with why."""
        if not self.per_file:
            started = time.monotonic()
            try:
                self._syncfs_each(w.part.parent for w in group)
            except OSError as exc:
                log.info("syncfs: %s; syncing each of %d files on its own", exc, len(group))
            else:
                took = time.monotonic() - started
                if took > SLOW_SYNCFS:
                    log.info("syncfs took %.1fs (other writers' data): syncing each file on its own from here on", took)
                    self.per_file = True
                return {}
        failed = {}
        for w in group:
            try:
                fd = open_regular(w.part, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except (OSError, ResumableError) as exc:  # ResumableError: not a regular file any more
                failed[w.part] = exc
        return failed

    def _syncfs_each(self, folders) -> None:
        """One syncfs per file system the folders are on."""
        done: set[int] = set()
        for folder in dict.fromkeys(folders):
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                dev = os.fstat(fd).st_dev
                if dev not in done:
                    if self._syncfs(fd) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, os.strerror(err), str(folder))
                    done.add(dev)
            finally:
                os.close(fd)


def _publish(w: _Waiting, problem: Exception | None) -> None:
    """The part's publish (or its failure to become durable) into its Future; then its lock goes."""
    try:
        if problem is not None:
            raise problem
        w.future.set_result(w.publish())
    except OSError as exc:
        w.future.set_exception(local_error(exc, w.part))
    except BaseException as exc:  # the publish's own errors (and bugs) go to the file's caller
        w.future.set_exception(exc)
    finally:
        try:
            w.held.close()
        except BaseException as exc:  # a lock that cannot be released: the file's caller hears it
            if not w.future.done():
                w.future.set_exception(exc)
