"""Long batches shared with helper processes (resumable/batch.py): the work really is shared, the
total stays within ``jobs``, a helper that dies loses nothing, and none outlives its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from engine_helpers import make_file, sha256_of
from resumable import FetchItem, fetch_many
from processes import alive
from resumable.batch import HELPER_MIN_ITEMS, prestart_helpers

pytestmark = pytest.mark.slow


def _held_batch(srv, root, out, count=HELPER_MIN_ITEMS + 8):
    """``count`` files, each body held after 100 bytes until released; their items."""
    names = [f"f{i:03d}.bin" for i in range(count)]
    digests = {n: make_file(root / n, 4096 + i, seed=i) for i, n in enumerate(names)}
    faults = [srv.fault(n, hold_after=100) for n in names]
    items = [FetchItem(srv.url(n), out / n, hash=f"sha256:{digests[n]}") for n in names]
    return names, digests, faults, items


def _wait_holds(faults, n: int, timeout: float = 60.0) -> int:
    """Until ``n`` bodies are held at the server (what the clients are fetching right now)."""
    deadline = time.monotonic() + timeout
    while sum(f.holds for f in faults) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return sum(f.holds for f in faults)


def _helpers_of(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True)
            if "resumable.batch_helper" in " ".join(p.cmdline())]


def _kill_the_helper_once_held(faults, n: int, thread) -> None:
    """Once ``n`` bodies are held at the server, kill the batch's helper; then the bodies go on and
    the batch ends."""
    try:
        assert _wait_holds(faults, n) == n
        (helper,) = _helpers_of(os.getpid())
        helper.kill()
        helper.wait(30)
    finally:
        for f in faults:
            f.release()
        thread.join(120)


def _run_in_thread(fn):
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(result=fn()), daemon=True)
    thread.start()
    return thread, box


@pytest.mark.parametrize("helpers", [1, None])
def test_a_long_batch_is_shared_with_a_helper_process(served, tmp_path, helpers):
    if helpers is None and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: no helper by default")
    srv, root = served
    names, digests, faults, items = _held_batch(srv, root, tmp_path / "out")
    thread, box = _run_in_thread(lambda: fetch_many(items, jobs=2, helpers=helpers))
    try:
        assert _wait_holds(faults, 2) == 2
        (helper,) = _helpers_of(os.getpid())
        # One of the two bodies in flight is the helper's; a third would break the jobs bound.
        assert [c for c in helper.net_connections("tcp") if c.raddr and c.raddr.port == srv.port]
        time.sleep(0.3)
        assert sum(f.holds for f in faults) == 2
    finally:
        for f in faults:
            f.release()
        thread.join(120)
    results = box["result"]
    assert [r.path.name for r in results] == names  # in order
    assert all(r.status == "downloaded" for r in results)
    assert all(sha256_of(tmp_path / "out" / n) == d for n, d in digests.items())
    assert _helpers_of(os.getpid()) == []


def test_what_a_killed_helper_had_taken_is_fetched_here(served, tmp_path):
    srv, root = served
    names, digests, faults, items = _held_batch(srv, root, tmp_path / "out")
    thread, box = _run_in_thread(lambda: fetch_many(items, jobs=2, helpers=1, retry_delay=0.05))
    _kill_the_helper_once_held(faults, 2, thread)  # mid-body, with more items taken than it is fetching
    results = box["result"]
    assert all(r.status in ("downloaded", "resumed") for r in results), [str(r) for r in results]
    assert all(sha256_of(tmp_path / "out" / n) == d for n, d in digests.items())


@pytest.mark.parametrize(("count", "jobs"), [(HELPER_MIN_ITEMS - 1, 4), (HELPER_MIN_ITEMS + 8, 1)])
def test_no_helper_for_a_short_batch_or_one_job(served, tmp_path, count, jobs):
    srv, root = served
    names, digests, faults, items = _held_batch(srv, root, tmp_path / "out", count=count)
    thread, box = _run_in_thread(lambda: fetch_many(items, jobs=jobs))
    try:
        assert _wait_holds(faults, jobs) == jobs  # every fetch this batch runs at once is in flight
        assert _helpers_of(os.getpid()) == []
    finally:
        for f in faults:
            f.release()
        thread.join(120)
    assert all(r.status == "downloaded" for r in box["result"])


@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_a_helper_never_outlives_its_batch(served, tmp_path, how):
    """Ctrl-C (SIGINT to the terminal's whole process group) stops the helper at once, while this
    process's own fetches end; a SIGKILL of the parent alone takes the helper with it."""
    srv, root = served
    names, digests, faults, items = _held_batch(srv, root, tmp_path / "out")
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, " ".join(i.url for i in items), str(tmp_path / "out")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert _wait_holds(faults, 2) == 2
        (helper,) = _helpers_of(proc.pid)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.kill()
        helper.wait(30)  # psutil.TimeoutExpired if it lives on (bodies are still held)
    finally:
        for f in faults:
            f.release()
        try:
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode != 0
    assert sum(r.status == 200 for n in names for r in srv.requests_for(n)) < len(names)  # it did stop


SCRIPT = """
import sys
from pathlib import Path
from resumable import FetchItem, fetch_many
urls, out = sys.argv[1].split(), Path(sys.argv[2])
fetch_many([FetchItem(u, out / u.rsplit("/", 1)[1]) for u in urls], jobs=2, helpers=1)
"""


def test_a_helper_started_ahead_is_the_one_the_batch_uses(served, tmp_path):
    """``prestart_helpers`` (a command starts its batch's helpers beside its own imports): the next
    batch hands its work to that very process instead of starting another."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: no helper by default")
    prestart_helpers(HELPER_MIN_ITEMS)
    ahead = {p.pid for p in _helpers_of(os.getpid())}
    assert len(ahead) == 1
    prestart_helpers(HELPER_MIN_ITEMS)  # already waiting: none more
    assert {p.pid for p in _helpers_of(os.getpid())} == ahead
    srv, root = served
    names, digests, faults, items = _held_batch(srv, root, tmp_path / "out")
    thread, box = _run_in_thread(lambda: fetch_many(items, jobs=2))
    try:
        assert _wait_holds(faults, 2) == 2
        (helper,) = _helpers_of(os.getpid())
        assert helper.pid in ahead
        assert [c for c in helper.net_connections("tcp") if c.raddr and c.raddr.port == srv.port]
    finally:
        for f in faults:
            f.release()
        thread.join(120)
    assert all(r.status == "downloaded" for r in box["result"])
    assert all(sha256_of(tmp_path / "out" / n) == d for n, d in digests.items())
    assert _helpers_of(os.getpid()) == []


@pytest.mark.parametrize("end", ["exit", "exception", "sigkill"])
def test_a_helper_started_ahead_that_no_batch_takes_ends_with_its_process(tmp_path, end):
    """A command that fails its checks after starting its helpers (a bad option, a config error),
    or is killed, leaves no process behind."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: no helper by default")
    pids = tmp_path / "pids"
    script = (f"import os, signal, psutil\nfrom resumable.batch import prestart_helpers\n"
              f"prestart_helpers({HELPER_MIN_ITEMS})\n"
              f"open({str(pids)!r}, 'w').write(' '.join(str(p.pid) for p in psutil.Process().children()))\n"
              + {"exit": "", "exception": "raise SystemExit('bad option')\n",
                 "sigkill": "os.kill(os.getpid(), signal.SIGKILL)\n"}[end])
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode != 0 if end != "exit" else proc.returncode == 0, proc.stderr
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 1
    deadline = time.monotonic() + 10
    while alive(started[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(started[0])


def test_engine_errors_cross_processes_whole():
    """A helper's errors reach the batch as raised (type, message, attributes), whatever the
    subclass's own arguments: Dask workers pickle them the same way."""
    import pickle

    from resumable.errors import CorruptArchiveError, HTTPStatusError, TransferError

    for exc in (HTTPStatusError("http://h/f", 404, "Not Found", "check the URL"), CorruptArchiveError("bad header"),
                TransferError("cut")):
        again = pickle.loads(pickle.dumps(exc))
        assert type(again) is type(exc) and str(again) == str(exc) and again.__dict__ == exc.__dict__
    assert pickle.loads(pickle.dumps(HTTPStatusError("http://h/f", 404))).transient is False


def test_a_result_that_cannot_cross_processes_crosses_as_its_text():
    """A bug's exception that cannot be pickled must not leave half a message in the pipe."""
    import io
    import pickle

    from resumable.batch_helper import _Channel

    class Unpicklable(Exception):
        def __reduce__(self):
            raise TypeError("cannot pickle")

    out = io.BytesIO()
    channel = _Channel(io.BytesIO(), out)
    channel.send(("result", 1, Unpicklable("boom")))
    channel.send(("result", 2, ValueError("fine")))
    stream = io.BytesIO(out.getvalue())
    first, second = pickle.load(stream), pickle.load(stream)
    assert first[:2] == ("result", 1) and type(first[2]) is RuntimeError and str(first[2]) == "Unpicklable: boom"
    assert second[:2] == ("result", 2) and type(second[2]) is ValueError


def test_a_helper_killed_at_the_end_leaves_true_statuses(served, tmp_path):
    """Every file a helper published before it was killed is reported as what it was (downloaded),
    and what it held unfinished is resumed here: none comes back as "cached"."""
    srv, root = served
    count, jobs = HELPER_MIN_ITEMS + 40, 4
    names = [f"t{i:03d}.bin" for i in range(count)]
    digests = {n: make_file(root / n, 4096 + i, seed=i) for i, n in enumerate(names)}
    faults = [srv.fault(n, hold_after=100) for n in names[-jobs:]]  # the tail: every worker ends up held
    items = [FetchItem(srv.url(n), tmp_path / "out" / n, hash=f"sha256:{digests[n]}") for n in names]
    thread, box = _run_in_thread(lambda: fetch_many(items, jobs=jobs, helpers=1, retry_delay=0.05))
    # Every file before the tail published, and a moment for its result to cross: a helper that
    # sends each result when its file is published has none left to lose (one that held them back
    # for its next request, which never comes, lost up to 16).
    deadline = time.monotonic() + 60
    while not all((tmp_path / "out" / n).exists() for n in names[:-jobs]) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    _kill_the_helper_once_held(faults, jobs, thread)
    results = box["result"]
    assert {r.status for r in results} <= {"downloaded", "resumed"}, [(r.path.name, r.status) for r in results]
    assert all(sha256_of(tmp_path / "out" / n) == d for n, d in digests.items())
