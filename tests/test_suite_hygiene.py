"""A run of the suite leaves nothing behind. A representative subset (nginx and a SIGKILLed fetch
resumed, the guide's 100 MiB examples, a Hub download killed and resumed, a flow on the Prefect
test server) runs in a child pytest with a TMPDIR of its own, under a process that makes itself the
subreaper of everything the run starts: whatever outlives the run comes back to it as an orphan,
whatever process group or session it moved to and whatever environment it was given.

A canary test that fails goes with the subset: a session that passes removes its basetemp
(tmp_path_retention_policy = "failed"), one that fails keeps it, and what it keeps (the session
fixtures' folders, the failed tests' tmp_path) must be small.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from processes import alive

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_CHILD_SUBREAPER and /proc are Linux"),
]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SUBSET = [
    "tests/engine/test_fetch_resume.py::test_nginx_resume_after_kill",
    "tests/engine/test_fetch_guide.py",
    "tests/hub/test_hub_resume.py::test_killed_snapshot_resumes_with_a_range_request",
    "tests/flow/test_retry.py::test_plain_rerun_continues_from_the_failed_step",
]
BASETEMP_LIMIT = 50 << 20
CANARY = '''
def test_canary_fails_so_that_the_session_keeps_its_basetemp():
    raise AssertionError("canary of tests/test_suite_hygiene.py")
'''

# Runs the command in argv[2:] as the subreaper of its descendants; when it has exited, every
# process still alive below this one was started by it and outlived it: they are listed in the JSON
# report (argv[1]), then killed, and every orphan is reaped.
SUBREAPER = r"""
import ctypes, json, os, signal, subprocess, sys, time

if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
rc = subprocess.call(sys.argv[2:])


def children():
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            state, ppid = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[:2]
            if int(ppid) == os.getpid() and state != "Z":
                found[pid] = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            pass
    return found


survivors = {}
for _ in range(50):  # a killed survivor's own children come to us next
    left = children()
    if not left:
        break
    survivors.update(left)
    for pid in left:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.1)
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
with open(sys.argv[1], "w") as f:
    json.dump({"rc": rc, "survivors": survivors}, f)
"""


def disk_usage(folder: Path) -> int:
    """Bytes the folder takes on disk: allocated blocks (a sparse file counts what it holds), each
    inode once (hard links)."""
    seen, total = set(), 0
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def test_a_run_leaves_no_files_outside_a_small_basetemp_and_no_processes(tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    report = tmp_path / "report.json"
    # The child session sets up its own isolation (tests/conftest.py); nothing of this session's goes in.
    ours = ("TRAIN_PIPELINE_TEST_SESSION", "PREFECT_HOME", "PREFECT_LOCAL_STORAGE_PATH", "TRAIN_PIPELINE_RESULT_STORAGE",
            "HF_HOME", "DASK_TEMPORARY_DIRECTORY", "TORCHINDUCTOR_CACHE_DIR", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")
    env = {k: v for k, v in os.environ.items() if k not in ours}
    env["TMPDIR"] = str(tmpdir)
    canary = tmp_path / "canary" / "test_hygiene_canary.py"
    canary.parent.mkdir()
    canary.write_text(CANARY)
    cmd = [sys.executable, "-c", SUBREAPER, str(report), sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "-c", str(PROJECT_ROOT / "pyproject.toml"), "--rootdir", str(PROJECT_ROOT), *SUBSET, str(canary)]
    run = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=240)
    out = run.stdout + run.stderr
    assert run.returncode == 0 and report.is_file(), out[-4000:]
    result = json.loads(report.read_text())

    summary = run.stdout.strip().splitlines()[-1]
    assert result["rc"] == 1 and summary.startswith("1 failed, ") and " passed" in summary, out[-4000:]
    assert "skipped" not in summary, out[-4000:]  # nginx installed: every part of the subset ran
    assert "FAILED " in out and "test_canary_fails_so_that_the_session_keeps_its_basetemp" in out.split("FAILED ", 1)[1]
    assert result["survivors"] == {}, f"processes that outlived the run: {result['survivors']}"
    assert "outlived the test that started it" not in out, out[-4000:]  # nothing left for conftest's backstop

    user_dir = f"pytest-of-{getpass.getuser()}"
    assert sorted(os.listdir(tmpdir)) == [user_dir], "left in TMPDIR: " + ", ".join(sorted(os.listdir(tmpdir)))
    basetemps = [p for p in (tmpdir / user_dir).iterdir() if p.name.startswith("pytest-") and not p.is_symlink()]
    assert len(basetemps) == 1, basetemps  # kept: the session failed (the canary)
    size = disk_usage(basetemps[0])
    print(f"basetemp kept by the subset's failed session: {size / (1 << 20):.1f} MiB on disk")
    folders = sorted((p for p in basetemps[0].iterdir() if not p.is_symlink()), key=disk_usage)
    assert size < BASETEMP_LIMIT, f"the basetemp keeps {size / (1 << 20):.1f} MiB; the largest: " + ", ".join(
        f"{p.name} {disk_usage(p) / (1 << 20):.1f} MiB" for p in folders[-5:])


KILLED_SESSION = '''
import os, signal, subprocess, sys

def test_start_a_process_then_the_session_is_killed(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    with open(os.environ["KILLED_SESSION_PID_FILE"], "w") as f:
        f.write(str(proc.pid))
    os.kill(os.getpid(), signal.SIGKILL)
'''


def test_the_next_session_removes_what_a_killed_session_left(tmp_path):
    """A session killed outright (SIGKILL; or an xdist worker whose teardown outlasts the 10 s xdist
    gives it after Ctrl-C) leaves its folder and what it started: the next session removes both."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    killer = tmp_path / "killed" / "test_killed_session.py"
    killer.parent.mkdir()
    killer.write_text(KILLED_SESSION)
    pid_file = tmp_path / "pid"
    env = {k: v for k, v in os.environ.items() if k not in ("TRAIN_PIPELINE_TEST_SESSION", "PYTEST_ADDOPTS",
                                                            "PYTEST_CURRENT_TEST")}
    env.update(TMPDIR=str(tmpdir), KILLED_SESSION_PID_FILE=str(pid_file))
    base = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "-c", str(PROJECT_ROOT / "pyproject.toml"),
            "--rootdir", str(PROJECT_ROOT), "tests/engine/test_wire_internals.py"]
    killed = subprocess.run([*base, str(killer)], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    pid = int(pid_file.read_text())
    try:
        left = [p.name for p in tmpdir.glob("train-pipeline-tests-*")]
        assert len(left) == 1 and alive(pid)  # what the killed session left

        nxt = subprocess.run(base, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert nxt.returncode == 0, nxt.stdout + nxt.stderr
        assert not list(tmpdir.glob("train-pipeline-tests-*")) and not alive(pid)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
