"""`task_runner: {type: dask}`: a deployment run's download fan-out (snapshot, fetch, verify,
extract) runs on Dask: a LocalCluster started for the run, or an existing cluster at an address
(here a `dask scheduler` and a `dask worker` started by the test, as on other machines)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from deploy_helpers import free_port

SAMPLE_ARCHIVE = "outdoor_advertising_sample.tar.gz"
STEPS = {"snapshot": "Completed", "fetch": "Completed", "verify": "Completed", "extract": "Completed"}


def download_only(folder: str, task_runner: dict) -> dict:
    """The sample without training, into folders of its own (so the downloads really happen)."""
    return {"config": {"sample": {"n_images": 8, "seed": 0}, "train": None, "task_runner": task_runner,
                       "data_dir": f"./{folder}/data", "models_cache": f"./{folder}/models_cache",
                       "results_dir": f"./{folder}/results"}}


def test_downloads_run_on_a_dask_local_cluster(deployed):
    run = deployed.wait(deployed.run_deployment(
        "train-pipeline/default", download_only("dask-local", {"type": "dask", "n_workers": 2, "threads_per_worker": 1})))
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert deployed.task_states(run["id"]) == STEPS
    assert any("downloads run on the Dask cluster at tcp://127.0.0.1:" in m for m in deployed.logs(run["id"]))
    data = deployed.root / "dask-local" / "data"
    assert (data / "downloads" / "outdoor_advertising_sample" / SAMPLE_ARCHIVE).is_file()
    assert any((data / "outdoor_advertising_sample").iterdir())


@pytest.fixture
def dask_cluster(deployed, tmp_path):
    """A scheduler and one worker process, as `dask scheduler` / `dask worker` on other machines:
    the worker has the project's code (PYTHONPATH, or `pip install -e .` there) and the Prefect
    server's address (PREFECT_API_URL). Yields (address, worker log path)."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**deployed.env, "PYTHONPATH": str(deployed.root)}
    scheduler_file = tmp_path / "scheduler.json"
    worker_log = tmp_path / "dask-worker.log"
    procs = []
    with open(tmp_path / "dask-scheduler.log", "wb") as slog, open(worker_log, "wb") as wlog:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard",
             "--scheduler-file", str(scheduler_file)], cwd=tmp_path, env=env, stdout=slog, stderr=subprocess.STDOUT))
        try:
            deadline = time.monotonic() + 60
            while not scheduler_file.is_file() and time.monotonic() < deadline and procs[0].poll() is None:
                time.sleep(0.2)
            assert scheduler_file.is_file(), (tmp_path / "dask-scheduler.log").read_text()
            assert json.loads(scheduler_file.read_text())["address"] == address
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "dask", "worker", address, "--nworkers", "1", "--nthreads", "2", "--no-dashboard"],
                cwd=tmp_path, env=env, stdout=wlog, stderr=subprocess.STDOUT))
            yield address, worker_log
        finally:
            for p in reversed(procs):
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def test_downloads_run_on_an_existing_dask_cluster_by_address(deployed, dask_cluster):
    address, worker_log = dask_cluster
    run = deployed.wait(deployed.run_deployment(
        "train-pipeline/default", download_only("dask-remote", {"type": "dask", "address": address})))
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert deployed.task_states(run["id"]) == STEPS
    assert any(f"downloads run on the Dask cluster at {address}" in m for m in deployed.logs(run["id"]))
    # The tasks ran in the cluster's worker process: their log lines are in its output.
    log = worker_log.read_text(errors="replace")
    for step in ("snapshot", "fetch", "verify", "extract"):
        assert f"Task run '{step} " in log, log[-3000:]
    assert os.path.isfile(deployed.root / "dask-remote" / "data" / "downloads" / "outdoor_advertising_sample"
                          / SAMPLE_ARCHIVE)
