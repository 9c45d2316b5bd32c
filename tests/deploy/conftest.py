"""Deployment tests: fixtures. ``deployed``: deployments/up.sh on a copy of the checkout (its own
Prefect server on a free port of 127.0.0.1, a fresh PREFECT_HOME), deployments/down.sh at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from deploy_helpers import CHECKOUT, PROJECT_ROOT, Deployed, alive, free_port


@pytest.fixture(scope="session")
def checkout(tmp_path_factory) -> Path:
    """A copy of the checkout's tracked content, as a fresh clone would have it."""
    root = tmp_path_factory.mktemp("clone") / "train-pipeline"
    root.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in CHECKOUT:
        src = PROJECT_ROOT / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=ignore)
        else:
            shutil.copy2(src, root / name)
    return root


@pytest.fixture(scope="module")
def deployed(checkout, tmp_path_factory):
    """`deployments/up.sh` on the copy (its own server on a free port, a fresh PREFECT_HOME);
    `deployments/down.sh` afterwards, which must stop both the worker and the server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(tmp_path_factory.mktemp("deploy-prefect-home")),
        "PREFECT_SERVER_API_PORT": str(free_port()),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",  # tighter polling than the default 10 s, for the tests
        "PREFECT_WORKER_PREFETCH_SECONDS": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PYTHON": sys.executable,
    })
    state = checkout / ".prefect"
    try:  # up.sh inside: a start that fails or times out half-way still gets down.sh and the kill below
        up = subprocess.run(check=False, args=["bash", "deployments/up.sh"], cwd=checkout, env=env, capture_output=True,
                            text=True, timeout=240)
        assert up.returncode == 0, up.stdout + up.stderr
        api_url = (state / "api_url").read_text().strip()
        env["PREFECT_API_URL"] = api_url
        with httpx.Client(base_url=api_url, timeout=30) as api:
            yield Deployed(checkout, api_url, env, api)
    finally:
        pids = {name: pid for name in ("server", "worker") if (pid := _pid(state / f"{name}.pid"))}
        try:
            down = subprocess.run(check=False, args=["bash", "deployments/down.sh"], cwd=checkout, env=env,
                                  capture_output=True, text=True, timeout=180)
        finally:
            # Whatever down.sh did (or if it timed out), nothing up.sh started outlives the module; the
            # assertions below still say what down.sh left running.
            survivors = {name: pid for name, pid in pids.items() if alive(pid)}
            for pid in pids.values():
                _kill_group(pid, pid in survivors.values())  # also the group of one that exited: its children
        assert down.returncode == 0, down.stdout + down.stderr
        assert not survivors, f"still running after down.sh: {survivors}"
        assert "SIGTERM" not in down.stderr, down.stderr  # stopped by SIGINT, gracefully


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def _kill_group(pid: int, running: bool) -> None:
    """SIGKILL the process group up.sh started ``pid`` in (its own; while a member lives, the kernel
    gives no other process that number); a ``running`` one that has no group of its own alone."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        if running:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
