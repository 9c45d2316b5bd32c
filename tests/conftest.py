"""Session-wide test isolation.

Prefect reads its settings at import time, so the isolated PREFECT_HOME, result storage and
server timeouts are set here, before any test module imports prefect. Everything a session
writes outside pytest's own tmp_path lives under one folder, removed when the session ends
(also after ``--collect-only``). A session that is killed leaves it, and what it started, behind:
the next session removes both (``sweep_killed_sessions``).

Every process the session starts inherits TRAIN_PIPELINE_TEST_SESSION (this session's folder):
after the last fixture has stopped, one that still carries it outlived the test that started it.
It is killed and named on stderr, and the session fails (tests/test_suite_hygiene.py relies on it).
"""

from __future__ import annotations

import fcntl
import gc
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import pytest

_SESSION_PREFIX = "train-pipeline-tests-"
_SESSION_ROOT = Path(tempfile.mkdtemp(prefix=_SESSION_PREFIX))
# Held while this session's process lives: a later session that can take it knows the folder (and any
# process still carrying its name) was left by a session that was killed, and removes them.
_ALIVE = os.open(_SESSION_ROOT / ".alive", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
fcntl.flock(_ALIVE, fcntl.LOCK_EX)
os.environ["TRAIN_PIPELINE_TEST_SESSION"] = str(_SESSION_ROOT)
os.environ["PREFECT_HOME"] = str(_SESSION_ROOT / "prefect-home")
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(_SESSION_ROOT / "prefect-results")
os.environ["TRAIN_PIPELINE_RESULT_STORAGE"] = str(_SESSION_ROOT / "prefect-results")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("PREFECT_API_URL", None)  # never talk to a server the developer happens to run
os.environ["DO_NOT_TRACK"] = "1"
# No test may reach a real hub.
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HOME"] = str(_SESSION_ROOT / "hf-home")
os.environ.pop("HF_TOKEN", None)
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Dask's LocalCluster spills into <tmp>/dask-scratch-space unless told otherwise (also in subprocesses).
os.environ["DASK_TEMPORARY_DIRECTORY"] = str(_SESSION_ROOT / "dask")
# torch makes <tmp>/torchinductor_USER as soon as a test module imports it (collection included).
os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(_SESSION_ROOT / "torchinductor")

# A suite started in the background of a script (`pytest &`, nohup in a non-interactive shell)
# inherits SIGINT ignored, and so would everything it starts: the Ctrl-C tests and down.sh's
# graceful stop would meet processes deaf to it. With a handler here, each child gets the default back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# A test that needs one of these pays for a Prefect server (10-20 s to start) or a deployment.
SLOW_FIXTURES = {"prefect_server", "deployed"}


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect test server for the session (its database in a folder of its own); while it is up,
    PREFECT_API_URL points this process at it, and ``prefect_server.api_url`` is there for children."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_DATABASE_CONNECTION_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield PrefectServer(PREFECT_API_URL.value(),
                            Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split(":///", 1)[1]).parent)


class PrefectServer(NamedTuple):
    api_url: str
    database_dir: Path  # the sqlite database and its WAL


# Modules that share something no test can give each its own: up.sh picks port 4200 when it is free.
XDIST_GROUPS = {"tests/deploy/": "deploy"}
MAX_WORKERS = 4  # each worker starts its own session servers (Prefect, nginx): more pay less back


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto`` (pyproject's addopts): one worker per core, 1 to MAX_WORKERS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        # --dist loadgroup: a module goes whole to one worker (its module-scoped fixtures start once)
        module = item.nodeid.split("::", 1)[0]
        group = next((g for prefix, g in XDIST_GROUPS.items() if module.startswith(prefix)), module)
        item.add_marker(pytest.mark.xdist_group(group))


def session_processes(root: Path = _SESSION_ROOT) -> dict[int, str]:
    """{pid: command line} of the live processes, other than this one, that carry the session ``root``
    in TRAIN_PIPELINE_TEST_SESSION (also those a test started in a process group or session of its own)."""
    marker = f"TRAIN_PIPELINE_TEST_SESSION={root}".encode()
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in Path(entry.path, "environ").read_bytes().split(b"\0"):  # a zombie's reads empty
                found[int(entry.name)] = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace").strip()
        except OSError:  # gone meanwhile, or not ours to read
            pass
    return found


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session, exitstatus):
    """After every fixture's teardown (the hook's other implementations run inside the yield): no
    process the session started may still run."""
    result = yield
    if not sys.platform.startswith("linux"):
        return result
    deadline = time.monotonic() + 5  # one that was just told to stop gets a moment to exit
    while (left := session_processes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid, cmdline in left.items():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        sys.stderr.write(f"test session: process {pid} outlived the test that started it, killed now: {cmdline[:300]}\n")
    if left and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    # Here, not only at unconfigure: an xdist worker is told to exit once this hook is done, and one
    # still busy 5 s later gets a SIGINT from execnet, which would cut a long removal short.
    shutil.rmtree(_SESSION_ROOT, ignore_errors=True)
    # For the same reason: pytest's last act is five full garbage collections (to report unraisable
    # exceptions), seconds over a heap of torch, transformers and Prefect on a busy machine. One here,
    # then the survivors frozen out of later ones, keeps those short.
    gc.collect()
    gc.freeze()
    return result


def pytest_unconfigure(config):
    """After the session's fixtures (the Prefect test server among them) have stopped; also for a
    session that never got to pytest_sessionfinish (a usage error)."""
    shutil.rmtree(_SESSION_ROOT, ignore_errors=True)


def sweep_killed_sessions(tmp: Path, grace: float = 60) -> list[Path]:
    """Remove what sessions that were killed left in ``tmp`` (SIGKILL, or an xdist worker whose
    teardown outlasted the 10 s xdist gives it after Ctrl-C): their folders, and the processes that
    still carry their name. A session is dead when its ``.alive`` lock is free; a folder without one
    is left alone for ``grace`` seconds (a session that is just starting), and for good while a process
    carries its name (a session of a version without the lock may still run). Only our own folders."""
    swept = []
    for folder in tmp.glob(_SESSION_PREFIX + "*"):
        try:
            st = os.lstat(folder)
            if folder == _SESSION_ROOT or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                continue
            try:
                fd = os.open(folder / ".alive", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO: no wait
            except FileNotFoundError:
                if time.time() - st.st_mtime < grace or session_processes(folder):
                    continue
                fd = None
            try:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: its session lives
                for pid in session_processes(folder):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                shutil.rmtree(folder, ignore_errors=True)
                swept.append(folder)
            finally:
                if fd is not None:
                    os.close(fd)
        except OSError:
            continue  # gone meanwhile, its session alive, or not ours to touch
    return swept


sweep_killed_sessions(_SESSION_ROOT.parent)
