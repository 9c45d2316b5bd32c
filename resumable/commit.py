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
same file system) sends the rest of the batch back to per-file fsyncs. ``syncfs`` reports
writeback errors since Linux 5.8 only, and only those after the descriptor it is given was
opened: older kernels get per-file fsyncs, and the batch opens a descriptor on each file system
it writes to before its first download (``folders``), kept until it ends.
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
from .part import sync_file
from .state import local_error

log = logging.getLogger("resumable")

GROUP_WAIT = 0.02  # s a part waits for others to share its syncfs (bench 4: ~30 files of 64 KiB)
GROUP_MAX = 64  # parts on their way at most (waiting, syncing, to publish): each holds its lock's descriptor
SLOW_SYNCFS = 0.5  # s: a syncfs slower than this flushes others' data too; fsync each part instead
SYNCFS_ERRORS_SINCE = (5, 8)  # Linux: syncfs reports writeback errors


@dataclass
class _Waiting:
    part: Path
    publish: Callable[[], object]  # renames the part into place; returns the FetchResult
    held: ExitStack  # the destination's lock, released after the publish
    future: Future


def available() -> bool:
    """Group commit needs a ``syncfs`` that reports errors and locks another thread can release
    (Linux OFD locks)."""
    import fcntl

    return _syncfs() is not None and hasattr(fcntl, "F_OFD_SETLK")


def _syncfs():
    if not sys.platform.startswith("linux") or _kernel() < SYNCFS_ERRORS_SINCE:
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


def _kernel() -> tuple[int, ...]:
    try:
        return tuple(int(n) for n in os.uname().release.split("-")[0].split(".")[:2])
    except ValueError:
        return (0,)


class GroupCommit:
    """The commit thread of one batch (or of one helper process's share of it). It only syncs: the
    renames are done by the downloading threads, each publishing what is durable when it hands in
    its next part (one thread doing all of them fell behind, waiting for the GIL at each call)."""

    def __init__(self, folders=()):
        """``folders``: where the batch's files go (they need not exist yet)."""
        self._syncfs = _syncfs()
        self._cond = threading.Condition()
        self._waiting: list[_Waiting] = []  # to make durable
        self._syncing = 0  # parts being made durable now
        self._durable: list[tuple[_Waiting, Exception | None]] = []  # to publish (or to fail, with why)
        self._devices: dict[int, int] = {}  # file system (st_dev) -> a descriptor on it, open until close()
        for folder in folders:
            try:
                self._descriptor(_existing_ancestor(Path(folder)))
            except OSError:  # opened at its first sync instead (or that sync says why not)
                pass
        self._closed = False
        self.per_file = False  # after a slow syncfs: each part fsynced on its own
        self._thread = threading.Thread(target=self._run, name="fetch-commit", daemon=True)
        self._thread.start()

    def submit(self, part: Path, publish: Callable[[], object], held: ExitStack) -> Future:
        """Publish ``part`` (with ``publish``) once its bytes are durable; ``held`` is closed after it.
        Publishes what is durable already; waits while GROUP_MAX parts are on their way."""
        future: Future = Future()
        with self._cond:
            if self._closed or not self._thread.is_alive():
                raise RuntimeError("GroupCommit.submit: the commit is closed")
            self._waiting.append(_Waiting(part, publish, held, future))
            if len(self._waiting) == 1 or len(self._waiting) >= GROUP_MAX:
                # The commit thread waits for a first part, or for a full group: waking it for every
                # part was ~3 of a file's 5 context switches (and their GIL hand-offs).
                self._cond.notify_all()
        while True:
            self._publish_durable()
            with self._cond:
                if len(self._waiting) + self._syncing + len(self._durable) < GROUP_MAX or self._closed:
                    return future
                if not self._durable:
                    self._cond.wait(1.0)  # woken when a group is durable; the timeout only re-checks

    def close(self) -> None:
        """Make durable and publish what waits, then end the commit thread (again: nothing)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        try:
            self._publish_durable()
        finally:
            for fd in self._devices.values():
                os.close(fd)
            self._devices.clear()

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
                self._syncing = len(group)
            try:
                unsynced = self._sync(group)
            except BaseException as exc:  # a bug: this group's files fail with it, the batch goes on
                log.error("group commit: %r", exc)
                unsynced = {w.part: exc for w in group}
            with self._cond:
                self._durable.extend((w, unsynced.get(w.part)) for w in group)
                self._syncing = 0
                self._cond.notify_all()

    def _sync(self, group: list[_Waiting]) -> dict[Path, BaseException]:
        """Make the group's parts durable; returns the parts that could not be, with why."""
        if self._syncfs is not None and not self.per_file:
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
                sync_file(w.part)
            except (OSError, ResumableError) as exc:  # ResumableError: not a regular file any more
                failed[w.part] = exc
        return failed

    def _syncfs_each(self, folders) -> None:
        """One syncfs per file system the folders are on, through descriptors opened before the
        first sync (syncfs reports only the errors since its descriptor was opened)."""
        done: set[int] = set()
        for folder in dict.fromkeys(folders):
            dev, fd = self._descriptor(folder)
            if dev not in done:
                if self._syncfs(fd) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err), str(folder))
                done.add(dev)

    def _descriptor(self, folder: Path) -> tuple[int, int]:
        """(device, a descriptor on it) for ``folder``'s file system."""
        dev = os.stat(folder).st_dev
        if dev not in self._devices:
            self._devices[dev] = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return dev, self._devices[dev]


def _existing_ancestor(folder: Path) -> Path:
    """``folder``, or the nearest folder above it that exists (a folder made later is on its file system)."""
    for candidate in (folder, *folder.parents):
        if os.path.isdir(candidate):
            return candidate
    return Path("/")


def _publish(w: _Waiting, problem: BaseException | None) -> None:
    """The part's publish (or its failure to become durable) into its Future, after its lock is
    released (whoever hears of the file may fetch it again at once)."""
    try:
        if problem is not None:
            raise problem
        outcome, failed = w.publish(), False
    except OSError as exc:
        outcome, failed = local_error(exc, w.part), True
    except Exception as exc:  # the publish's own errors (and bugs) go to the file's caller
        outcome, failed = exc, True
    finally:
        try:
            w.held.close()
        except Exception as exc:
            outcome, failed = exc, True
    if failed:
        w.future.set_exception(outcome)
    else:
        w.future.set_result(outcome)
