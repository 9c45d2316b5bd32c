"""Training runs in child processes forked from one that has already imported torch, transformers
and train_child.py (multiprocessing's fork server): each run is still a process of its own that
a SIGKILL really kills, without the 5-15 s of imports a fresh ``python train_child.py`` pays on
this machine (test_train_resume starts about 27 of them).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent

# matplotlib: the loss curve at the end of every run (~1 s of imports each)
PRELOAD = ["torch", "transformers", "matplotlib.pyplot", "train_child"]


class Children:
    def __init__(self, ctx, folder: Path):
        self.ctx, self.folder, self.count = ctx, folder, 0

    def run(self, argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        """``train_child.main(argv)`` in a forked child with ``env``; its exit status as a process's:
        0, 1 for an exception (the traceback on its stderr), -9 when it SIGKILLed itself."""
        self.count += 1
        out, err = self.folder / f"{self.count}.out", self.folder / f"{self.count}.err"
        child = self.ctx.Process(target=_main, args=(argv, env, str(out), str(err)), daemon=False)
        child.start()
        child.join(timeout)
        if child.is_alive():
            child.kill()
            child.join()
            raise subprocess.TimeoutExpired(argv, timeout, out.read_text(), err.read_text())
        return subprocess.CompletedProcess(argv, child.exitcode, out.read_text(), err.read_text())


@contextmanager
def forked_children(folder: Path):
    """The fork server, started on first use and stopped at the end (nothing outlives the tests)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    # Python 3.11's fork server ignores the sys.path it is handed and skips a preload it cannot
    # import without a word: it finds train_child.py through PYTHONPATH (and _main checks it did).
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), before]))
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before
    try:
        yield Children(ctx, folder)
    finally:  # their own ways to end them (meant for tests): the server, and the resource tracker it started
        multiprocessing.forkserver._forkserver._stop()
        multiprocessing.resource_tracker._resource_tracker._stop()


def _main(argv: list[str], env: dict[str, str], out: str, err: str) -> None:
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    if not set(PRELOAD) <= set(sys.modules):  # each child would pay the imports again (3 s here)
        raise RuntimeError(f"the fork server did not preload {sorted(set(PRELOAD) - set(sys.modules))}")
    import train_child

    train_child.main(argv)
    sys.stdout.flush()
