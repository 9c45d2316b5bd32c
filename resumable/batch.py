"""Many files at once: bounded concurrency over a shared connection pool, and for long batches a
helper process on each further core.

Per file the engine spends ~2 ms of Python (request, record, publish) under one GIL: on a batch of
thousands of small files one process keeps one core busy and the other idle (bench scenario 4).
A helper (``python -m resumable.batch_helper``) takes items from the same queue as this process's
threads, so the batch is shared out as it goes, whatever each file's size. Each process starts one
worker thread and adds more, up to its share of ``jobs``, only while its workers mostly wait
(ramp.WorkerRamp): threads that find their core busy only hand the GIL to each other.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import pickle
import site
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from . import http
from .commit import GroupCommit, available as commit_available
from .disk import fsync_dir
from .errors import ResumableError, UsageError
from .ramp import BATCH_WINDOW, WorkerRamp
from .transfer import FetchResult, fetch

log = logging.getLogger("resumable")

HELPER_MIN_ITEMS = 64  # a helper's start (~0.2 s) pays back only over this many files
HELPER_MAX = 3
HANDOUT_MAX = 16  # items a helper may ask for at once (it asks for about two per running worker)


@dataclass(frozen=True)
class FetchItem:
    url: str
    dest: str | Path
    size: int | None = None
    hash: str | None = None
    mirrors: tuple[str, ...] = field(default_factory=tuple)


def fetch_many(items: list[FetchItem], *, jobs: int = 8, progress=False, helpers: int | None = None,
               **options) -> list[FetchResult | ResumableError]:
    """Fetch every item, at most ``jobs`` at once; returns, in order, a FetchResult or the error that
    item ended with.

    ``helpers``: processes that share the batch with this one (the ``jobs`` are split between
    them). None: one per core beyond the first, up to HELPER_MAX, for batches of HELPER_MIN_ITEMS
    or more; 0: this process alone (also when a ``session`` is given: it cannot be shared). The
    files a helper fetches show no progress bar.

    Two items with one destination are refused before anything is fetched: one of them would be
    reported done with the other's bytes."""
    seen: dict[Path, str] = {}
    real: dict[Path, str] = {}  # folder -> its real path (one lstat per component: once per folder)
    for item in items:
        path = Path(item.dest).absolute()
        if path.parent not in real:
            real[path.parent] = os.path.realpath(path.parent)
        dest = Path(real[path.parent]) / path.name  # 'a/../f' and 'link/f' name real folders
        if dest in seen:
            raise UsageError(f"{http.redact(seen[dest])} and {http.redact(item.url)} would both be saved as {dest}; "
                             "give one of them another name or folder")
        seen[dest] = item.url
    if helpers is not None and (type(helpers) is not int or helpers < 0):
        raise UsageError(f"helpers {helpers!r}: use 0 or more, or None for one per spare core")
    jobs = max(1, jobs)
    if helpers is None:
        helpers = _spare_cores() if len(items) >= HELPER_MIN_ITEMS and "session" not in options else 0
    helpers = min(helpers, jobs - 1, max(0, len(items) - 1))
    work = _Work(items)
    per_helper = jobs // (helpers + 1)
    given = options.pop("session", None)  # the caller's: used here, and closed by the caller
    session = given or http.new_session(pool_size=jobs, many=True)
    started: list[_Helper] = []
    pool = None

    commit = GroupCommit(real.values()) if commit_available() else None

    def worker() -> None:
        while (taken := work.take(1)):
            index, item = taken[0]
            when_done(fetch_one(item, progress, session, options, commit), partial(work.done, index))

    try:
        folders = sorted(set(real.values()))
        started += [h for h in (_Helper.start(work, per_helper, options, folders) for _ in range(helpers)) if h]
        own_jobs = jobs - per_helper * len(started)  # this process keeps the remainder
        pool = ThreadPoolExecutor(own_jobs, thread_name_prefix="fetch")
        run_workers(pool, worker, own_jobs)
        for helper in started:
            helper.join()
        if work.queue:  # a helper died after this process's workers ended: what it had taken, fetched here
            run_workers(pool, worker, own_jobs)
        if commit is not None:
            commit.close()  # this process's own files answered (a dead helper's went back to the queue)
    except BaseException:
        work.close()  # Ctrl-C: the helpers stop now; this process's fetches end with their file
        for helper in started:
            helper.stop()
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
        for helper in started:
            helper.stop()
        if commit is not None:
            commit.close()  # what waits in this process is complete and verified: published, also after Ctrl-C
        if given is None:
            session.close()
        _sync_folders(set(real.values()))  # also after Ctrl-C: what was published keeps its name
    bug = next((r for r in work.results if isinstance(r, BaseException) and not isinstance(r, ResumableError)), None)
    if bug is not None:
        raise bug
    return work.results


def run_workers(pool: ThreadPoolExecutor, worker: Callable[[], None], jobs: int) -> None:
    """``worker`` (it fetches until the queue is dry) on one thread of ``pool``, and on more, up to
    ``jobs``, while they mostly wait (ramp.WorkerRamp); returns when every one has ended, raising
    the first error that one of them raised."""
    threads = _ThreadsCPU()
    ramp = WorkerRamp(jobs, cpu=threads.cpu)

    def tracked() -> None:
        threads.add_this_thread()
        worker()

    futures = [pool.submit(tracked)]
    while wait(futures, timeout=BATCH_WINDOW if len(futures) < jobs else None).not_done:
        futures += [pool.submit(tracked) for _ in range(ramp.more(len(futures)))]
    for future in futures:
        future.result()


class _ThreadsCPU:
    """The CPU seconds some threads of this process have used, together: the work on their own
    thread (Python, libcurl, the kernel), not their helpers' (hashing, the commit's syncs)."""

    def __init__(self):
        self._clocks: dict[int, int | None] = {}  # thread -> its CPU clock (None: none to read)
        self._lock = threading.Lock()

    def add_this_thread(self) -> None:
        try:
            clock = time.pthread_getcpuclockid(threading.get_ident())
        except (AttributeError, OSError):
            clock = None
        with self._lock:
            self._clocks[threading.get_ident()] = clock

    def cpu(self) -> float:
        with self._lock:
            clocks = set(self._clocks.values())
        if None in clocks:  # no per-thread clocks here (not Linux, BSD or macOS): the process's CPU stands in
            return time.process_time()
        total = 0.0
        for clock in clocks:
            try:
                total += time.clock_gettime(clock)
            except OSError:
                pass
        return total


def prestart_helpers(count: int) -> None:
    """Start now the helper processes that a batch of ``count`` items will use, so that their
    start-up (~0.3 s of imports) runs beside the caller's own (a command's config, its checks); the
    next ``fetch_many`` takes them. Helpers no batch takes end with this process."""
    if count < HELPER_MIN_ITEMS:
        return
    with _WARM_LOCK:
        for _ in range(_spare_cores() - len(_WARM)):
            proc = _spawn_helper()
            if proc is None:
                return
            _WARM.append(proc)


_WARM: list[subprocess.Popen] = []  # started by prestart_helpers, waiting for their handshake
_WARM_LOCK = threading.Lock()


def _take_warm() -> subprocess.Popen | None:
    with _WARM_LOCK:
        while _WARM:
            proc = _WARM.pop()
            if proc.poll() is None:
                return proc
            _close_pipes(proc)
    return None


@atexit.register
def _end_unused_helpers() -> None:
    with _WARM_LOCK:
        while _WARM:
            proc = _WARM.pop()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            _close_pipes(proc)


def _spawn_helper() -> subprocess.Popen | None:
    """A helper process (python -m resumable.batch_helper), importing this very copy of the engine;
    it waits for its handshake."""
    import resumable

    env = dict(os.environ)
    root = os.path.realpath(os.path.dirname(os.path.dirname(os.path.abspath(resumable.__file__))))
    site_dirs = (*getattr(site, "getsitepackages", list)(), site.getusersitepackages())
    installed = {os.path.realpath(p) for p in site_dirs}
    if root not in installed:
        # A checkout (or a path the caller added): the helper imports this very copy. Never an
        # installed site-packages: ahead of the standard library it could shadow parts of it.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    try:
        return subprocess.Popen([sys.executable, "-m", "resumable.batch_helper", str(os.getpid())],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                                close_fds=True)
    except OSError as exc:
        log.info("no helper process (%s): this process fetches the whole batch", exc)
        return None


def _close_pipes(proc: subprocess.Popen) -> None:
    for pipe in (proc.stdin, proc.stdout):
        try:
            pipe.close()
        except OSError:
            pass


def fetch_one(item: FetchItem, progress, session, options: dict,
              commit: GroupCommit | None = None) -> FetchResult | ResumableError | Future:
    """One item of a batch: its folder's fsync is left to ``_sync_folders``, once per folder; a
    small file's own fsync and publish to ``commit`` (then: a Future of the result)."""
    try:
        return fetch(item.url, item.dest, size=item.size, hash=item.hash, mirrors=item.mirrors,
                     progress=progress, session=session, sync_folder=False, commit=commit, **options)
    except ResumableError as exc:
        return exc


def when_done(outcome: FetchResult | ResumableError | Future, then: Callable[[object], None]) -> None:
    """``then(result or error)``: now, or once the group commit has published the file (an error
    that is not the engine's, a bug, is passed on too: ``fetch_many`` raises it at its end)."""
    if isinstance(outcome, Future):
        outcome.add_done_callback(lambda future: then(future.exception() or future.result()))
    else:
        then(outcome)


def _sync_folders(folders: set[str]) -> None:
    """One fsync per destination folder of the batch, before it returns: each file's bytes were
    synced before its rename, so it appears only complete and verified; this makes the names survive a
    power cut. Every folder, whatever its files' results: a file "cached" now may have been
    published by a batch that was killed before its own folder fsync, and a helper may have
    published a file it never reported. Per file, the folder's fsync was ~5 % of a small file's
    time (3 syscalls and a metadata write each)."""
    for folder in folders:
        fsync_dir(Path(folder))


def _spare_cores() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(0, min(cores - 1, HELPER_MAX))


class _Work:
    """The batch's queue and its results, shared by this process's threads and the helpers."""

    def __init__(self, items: list[FetchItem]):
        self.queue = collections.deque(enumerate(items))
        self.results: list = [None] * len(items)
        self.taken: dict[int, FetchItem] = {}  # handed out, not answered yet
        self.lock = threading.Lock()
        self.closed = False

    def close(self) -> None:
        with self.lock:
            self.closed = True

    def take(self, n: int) -> list[tuple[int, FetchItem]]:
        with self.lock:
            if self.closed:
                return []
            out = [self.queue.popleft() for _ in range(min(n, len(self.queue)))]
            self.taken.update(out)
            return out

    def done(self, index: int, result) -> None:
        with self.lock:
            if self.taken.pop(index, None) is not None:
                self.results[index] = result

    def requeue(self, indexes) -> None:
        """Items a helper took and will never answer (it died): first in the queue again, fetched
        by this process's workers as resumes of their part files."""
        with self.lock:
            back = [(i, self.taken.pop(i)) for i in sorted(indexes) if i in self.taken]
            self.queue.extendleft(reversed(back))


class _Helper:
    """One helper process and the thread here that serves it: items out, results and log lines in."""

    def __init__(self, proc: subprocess.Popen, work: _Work):
        self.proc, self.work = proc, work
        self.taken: set[int] = set()  # handed to it, not answered yet
        self.thread = threading.Thread(target=self._serve, name="fetch-helper", daemon=True)
        self.thread.start()

    @classmethod
    def start(cls, work: _Work, jobs: int, options: dict, folders: list[str]) -> "_Helper | None":
        handshake = (jobs, {k: v for k, v in options.items() if k != "session"}, log.getEffectiveLevel(), folders)
        try:
            message = pickle.dumps(handshake)
        except Exception as exc:  # an option that cannot cross processes (a callable): this process alone
            log.info("no helper process (%s): this process fetches the whole batch", exc)
            return None
        proc = _take_warm() or _spawn_helper()
        if proc is None:
            return None
        try:
            proc.stdin.write(message)
            proc.stdin.flush()
        except OSError:
            pass  # it died at once: its serving thread sees EOF, and nothing was taken
        return cls(proc, work)

    def _serve(self) -> None:
        try:
            while True:
                kind, *rest = pickle.load(self.proc.stdout)
                if kind == "more":
                    items = self.work.take(max(1, min(HANDOUT_MAX, int(rest[0]))))
                    self.taken.update(index for index, _ in items)
                    try:
                        pickle.dump(items, self.proc.stdin)
                        self.proc.stdin.flush()
                    except BrokenPipeError:
                        pass  # it is ending: what it sent before still comes, then EOF
                elif kind == "result":
                    self.taken.discard(rest[0])
                    self.work.done(*rest)
                elif kind == "log":
                    log.log(*rest)
        except EOFError:
            pass  # the helper ended (or died): what it took and never answered is fetched here
        except Exception as exc:  # a message that is not the protocol's (or fails to unpickle)
            log.info("helper process %d: %s; this process fetches what it had taken", self.proc.pid, exc)
            self.proc.kill()
            self.proc.wait()  # no longer fetching what goes back to the queue
        finally:
            self.work.requeue(self.taken)

    def join(self) -> None:
        self.thread.join()
        if self.proc.wait():
            log.info("helper process %d ended with exit code %d; this process fetches what it had taken",
                     self.proc.pid, self.proc.returncode)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # like any kill: its part files resume
            self.proc.wait()
        _close_pipes(self.proc)

