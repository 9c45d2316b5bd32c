"""Helpers of the deployment tests (tests/deploy/conftest.py has the fixtures).

Deployment tests: the README sequence for real, on a copy of the checkout (a fresh clone, as a
user has it): ``deployments/up.sh`` starts a Prefect server on 127.0.0.1, creates the process
work pool, deploys prefect.yaml and starts a worker; tests start runs with ``prefect deployment
run`` and read the outcome through the server's REST API (what the UI shows);
``deployments/down.sh`` stops it all at the end.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from processes import alive  # noqa: F401  (the deploy tests import it from here)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHECKOUT = ("flows", "tasks", "train_pipeline", "offline", "resumable", "configs", "deployments", "prefect.yaml",
            "pyproject.toml")
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RUN_TIMEOUT = 240  # seconds a flow run may take before the test gives up (not an assertion on speed; under pytest's 300)

# Small: 8 images, 2 training steps.
SMALL_SAMPLE = {"sample": {"n_images": 8, "seed": 0}, "train": {"max_steps": 2, "save_steps": 1, "logging_steps": 1,
                                                                  "per_device_train_batch_size": 4}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Deployed:
    root: Path  # the checkout the deployments run in
    api_url: str
    env: dict[str, str]
    api: httpx.Client = field(repr=False)

    def prefect(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(check=False, args=[sys.executable, "-m", "prefect", *args], cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def run_deployment(self, name: str = "train-pipeline/default", parameters: dict | None = None) -> str:
        """`prefect deployment run NAME [--params JSON]`; returns the flow run id."""
        args = ["deployment", "run", name]
        if parameters is not None:
            args += ["--params", json.dumps(parameters)]
        r = self.prefect(*args)
        assert r.returncode == 0, r.stdout + r.stderr
        return re.search(r"UUID:\s*([0-9a-f-]{36})", r.stdout).group(1)

    def flow_run(self, flow_run_id: str) -> dict:
        r = self.api.get(f"/flow_runs/{flow_run_id}")
        r.raise_for_status()
        return r.json()

    def wait(self, flow_run_id: str) -> dict:
        """The flow run once the worker has taken it to a final state."""
        deadline = time.monotonic() + RUN_TIMEOUT
        while True:
            run = self.flow_run(flow_run_id)
            if run["state"]["type"] in TERMINAL:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"flow run still {run['state']['name']} after {RUN_TIMEOUT} s; worker log:\n"
                                     + self.worker_log()[-4000:])
            time.sleep(0.5)

    def task_runs(self, flow_run_id: str) -> list[dict]:
        r = self.api.post("/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}}, "sort": "EXPECTED_START_TIME_ASC"})
        r.raise_for_status()
        return r.json()

    def task_states(self, flow_run_id: str, exclude: set[str] = frozenset(), timeout: float = 30) -> dict[str, str]:
        """{step: state name} ('snapshot', 'fetch', 'verify', 'extract', 'train'), leaving out the
        task runs whose ids are in ``exclude`` (those of an earlier attempt).

        The server records task runs from the worker's events, a moment after the flow run's own
        final state: read until every task run has a state and two reads agree (a task that never
        ran stays Pending)."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            runs = [t for t in self.task_runs(flow_run_id) if t["id"] not in exclude]
            states = {t["name"].split(" ")[0]: (t["state"] or {}).get("name") for t in runs}
            if (None not in states.values() and states == last) or time.monotonic() > deadline:
                return states
            last = states
            time.sleep(0.3)

    def artifacts(self, flow_run_id: str) -> list[dict]:
        r = self.api.post("/artifacts/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}}})
        r.raise_for_status()
        return r.json()

    def logs(self, flow_run_id: str) -> list[str]:
        r = self.api.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200})
        r.raise_for_status()
        return [x["message"] for x in r.json()]

    def has_log(self, flow_run_id: str, text: str, timeout: float = 30) -> bool:
        """Whether a log line of the run contains ``text``. Prefect ships logs in batches, after
        the run's state may already be final, so a line can arrive a few seconds late."""
        deadline = time.monotonic() + timeout
        while not any(text in m for m in self.logs(flow_run_id)):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    def retry_as_the_ui_does(self, flow_run_id: str) -> None:
        """The UI's Retry button: the run goes to Scheduled, named AwaitingRetry, forced."""
        r = self.api.post(f"/flow_runs/{flow_run_id}/set_state", json={
            "state": {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"}, "force": True})
        r.raise_for_status()
        assert r.json()["status"] == "ACCEPT", r.json()

    def worker_log(self) -> str:
        return (self.root / ".prefect" / "worker.log").read_text(errors="replace")
