"""A helper process of ``fetch_many`` (batch.py): ``python -m resumable.batch_helper``.

It talks pickle over its stdin and stdout with the process that started it, and with nobody else:
first ``(jobs, options, log level, the batch's folders)``; then it asks for items (``("more", how many)``,
answered with a list, empty when the queue is dry), and answers each with ``("result", index, FetchResult or error)``;
log lines go back as ``("log", level, text)``. It dies with its parent (a kill leaves part files
that resume, as any kill does).
"""

from __future__ import annotations

import collections
import ctypes
import gc
import logging
import os
import pickle
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

PR_SET_PDEATHSIG = 1


HOLD = 0.02  # seconds of work a helper keeps at hand (short files: a round trip per ~20, not per 2)


class _Channel:
    """The pipes to the parent. Items are asked for ahead, about two per running worker or HOLD
    seconds of them at the pace they are taken (at most ``most``), and come in on a reader
    thread: a worker seldom waits for a round trip (~1 ms), and the helper never holds much that
    the parent's own workers could have started."""

    def __init__(self, inp, out):
        self.inp, self.out = inp, out
        self.send_lock = threading.Lock()
        self.cond = threading.Condition()
        self.local: collections.deque = collections.deque()
        self.workers: set[int] = set()  # threads that have taken an item
        self.dry = self.asking = False
        self.last: float | None = None  # when the last item was taken
        self.pace = 0.0  # seconds between items taken, averaged
        self.most = 1  # items asked for at once, at most (batch.HANDOUT_MAX, once the engine is imported)

    def send(self, message: tuple) -> None:
        try:
            data = pickle.dumps(message)  # whole or not at all: half a message would end the channel
        except Exception:
            kind, *rest = message
            if kind != "result":
                raise
            index, result = rest  # a bug's exception that cannot cross processes: its text does
            data = pickle.dumps(("result", index, RuntimeError(f"{type(result).__name__}: {result}")))
        with self.send_lock:
            self.out.write(data)
            self.out.flush()

    def take(self):
        """The next item (index, FetchItem), or None when the parent's queue is dry."""
        with self.cond:
            self.workers.add(threading.get_ident())
            while not self.local and not self.dry:
                self._ask()
                self.cond.wait()
            item = self.local.popleft() if self.local else None
            now = time.monotonic()
            if self.last is not None:
                self.pace = 0.8 * self.pace + 0.2 * (now - self.last) if self.pace else now - self.last
            self.last = now
            if len(self.local) <= max(len(self.workers), self._want() // 2):
                self._ask()
            return item

    def _want(self) -> int:
        ahead = int(HOLD / self.pace) if self.pace else 0
        return max(2 * len(self.workers), min(self.most, ahead))

    def _ask(self) -> None:
        """One request at a time (with ``cond`` held)."""
        if not self.asking and not self.dry:
            self.asking = True
            try:
                self.send(("more", max(1, self._want() - len(self.local))))
            except BaseException:
                self.asking = False
                raise

    def read(self) -> None:
        """The reader thread: the parent's answers, until one is empty (its queue is dry) or the pipe ends."""
        try:
            while True:
                got = pickle.load(self.inp)
                with self.cond:  # an empty answer ends the asking in the same step: no request after it
                    self.local.extend(got)
                    self.asking = False
                    self.dry = not got
                    self.cond.notify_all()
                if not got:
                    return
        except (EOFError, OSError, pickle.UnpicklingError, ValueError, TypeError):
            pass  # the parent is gone: the workers end with what they have
        finally:
            with self.cond:
                self.dry = True
                self.cond.notify_all()


class _Forward(logging.Handler):
    def __init__(self, channel: _Channel):
        super().__init__()
        self.channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.channel.send(("log", record.levelno, "%s", record.getMessage()))
        except Exception:  # the parent is gone: nobody to tell
            pass


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before we asked
        os._exit(1)


def main() -> int:
    _die_with_parent(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else os.getppid())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends us
    channel = _Channel(sys.stdin.buffer, sys.stdout.buffer)
    sys.stdout = sys.stderr  # nothing else may write into the channel
    from . import http  # before the handshake: a helper started ahead of its batch is ready when it comes
    from .batch import HANDOUT_MAX, fetch_one, run_workers, when_done
    from .commit import GroupCommit, available

    channel.most = HANDOUT_MAX
    jobs, options, level, folders = pickle.load(channel.inp)
    threading.Thread(target=channel.read, name="helper-read", daemon=True).start()

    logger = logging.getLogger("resumable")
    logger.setLevel(level)
    logger.addHandler(_Forward(channel))
    logger.propagate = False
    session = http.new_session(pool_size=jobs, many=True)
    gc.freeze()  # what the imports made lives as long as we do: no collection need scan it again (~7% of CPU)

    commit = GroupCommit(folders) if available() else None

    def worker() -> None:
        while (taken := channel.take()) is not None:
            index, item = taken
            when_done(fetch_one(item, False, session, options, commit),
                      lambda result, index=index: channel.send(("result", index, result)))

    try:
        with ThreadPoolExecutor(jobs, thread_name_prefix="fetch") as pool:
            run_workers(pool, worker, jobs)
    finally:
        if commit is not None:
            commit.close()  # the results of the files it publishes go back as they are published
    session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
