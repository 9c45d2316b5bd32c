"""`prefect deployment run train-pipeline/default` on a real server and process worker (one stack
for this module: deployments/up.sh before, deployments/down.sh after):

- the UI's Retry of a run that failed at a middle step resumes there, the steps before are Cached
  (nothing downloaded again) and the same flow run Completes;
- `task_runner: {type: dask}` runs the download fan-out (snapshot, fetch, verify, extract) on Dask:
  a LocalCluster started for the run, or an existing cluster at an address (a `dask scheduler`
  and a `dask worker` started by the test, as on other machines)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from deploy_helpers import SMALL_SAMPLE, free_port

pytestmark = pytest.mark.slow  # a real deployment: up.sh, a Prefect server and a worker

DATASET = "outdoor_advertising_sample"  # the sample's archive dataset (offline.sample)
TRAINED = "tiny-qwen2-vl-outdoor_advertising_sample+billboard_parquet_sample"  # trained on both sample datasets


def test_both_deployments_exist_on_the_process_pool(deployed):
    r = deployed.api.post("/deployments/filter", json={})
    r.raise_for_status()
    found = {d["name"]: d for d in r.json()}
    assert set(found) == {"default", "qwen2-vl-2b"}
    for d in found.values():
        assert d["entrypoint"] == "flows/pipeline.py:train_pipeline"
        assert d["work_pool_name"] == "train-pipeline-process"
        # No path of the developer's machine: the checkout deployed is where runs happen.
        assert d["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(deployed.root)}}]
        env = d["job_variables"]["env"]
        assert env["TRAIN_PIPELINE_RESULT_STORAGE"] == str(deployed.root / "results" / ".prefect-results")
    assert found["default"]["parameters"] == {}
    assert found["qwen2-vl-2b"]["parameters"] == {"config_file": "configs/qwen2-vl-2b.yaml"}


def test_deployment_run_completes_and_a_ui_retry_resumes_at_the_failed_step(deployed):
    root = deployed.root
    # 1. The README's last command, on the sample (small).
    first = deployed.wait(deployed.run_deployment("train-pipeline/default", {"config": SMALL_SAMPLE}))
    assert first["state"]["type"] == "COMPLETED", first["state"]
    assert deployed.task_states(first["id"]) == {"snapshot": "Completed", "fetch": "Completed", "verify": "Completed",
                                                 "extract": "Completed", "hf": "Completed", "train": "Completed"}
    assert "download-summary" in {a["key"] for a in deployed.artifacts(first["id"])}
    assert (root / "results" / TRAINED / "final" / "config.json").is_file()
    assert any((root / "results" / ".prefect-results").iterdir())  # the shared result storage of prefect.yaml

    # 2. Break a middle step on disk: a file where extract must put its folder (not one it made).
    target = root / "data" / DATASET
    shutil.rmtree(target)
    (root / "data" / f".{DATASET}.extract.json").unlink()
    target.write_text("in the way")
    failed = deployed.wait(deployed.run_deployment("train-pipeline/default", {"config": SMALL_SAMPLE}))
    assert failed["state"]["type"] == "FAILED", failed["state"]
    assert "not a folder" in failed["state"]["message"]
    states = deployed.task_states(failed["id"])
    assert {k: states[k] for k in ("snapshot", "fetch", "verify", "extract")} == {
        "snapshot": "Cached", "fetch": "Cached", "verify": "Cached", "extract": "Failed"}
    first_attempt = {t["id"] for t in deployed.task_runs(failed["id"])}

    # 3. Fix the cause and press Retry (through the API, as the UI does); the worker runs it again.
    target.unlink()
    deployed.retry_as_the_ui_does(failed["id"])
    retried = deployed.wait(failed["id"])
    assert retried["state"]["type"] == "COMPLETED", retried["state"]
    assert retried["run_count"] == 2  # the same flow run, run again
    assert deployed.task_states(failed["id"], exclude=first_attempt) == {
        "snapshot": "Cached", "fetch": "Cached", "verify": "Cached", "extract": "Completed", "hf": "Cached",
        "train": "Cached"}
    assert target.is_dir() and any(target.iterdir())

    # Nothing downloaded again: the retry's summary artifact says so, row by row.
    summaries = [a for a in deployed.artifacts(failed["id"]) if a["key"] == "download-summary"]
    latest = max(summaries, key=lambda a: a["created"])
    rows = latest["data"] if isinstance(latest["data"], list) else json.loads(latest["data"])
    assert rows and all(r["status"] == "cached" and r["transferred"] == "0 B" for r in rows), rows


# -- downloads on Dask -------------------------------------------------------------------
SAMPLE_ARCHIVE = "outdoor_advertising_sample.tar.gz"
STEPS = {"snapshot": "Completed", "fetch": "Completed", "verify": "Completed", "extract": "Completed", "hf": "Completed"}


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
    assert deployed.has_log(run["id"], "downloads run on the Dask cluster at tcp://127.0.0.1:"), deployed.logs(run["id"])
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
    flow_run_id = deployed.run_deployment("train-pipeline/default",
                                          download_only("dask-remote", {"type": "dask", "address": address}))
    try:
        run = deployed.wait(flow_run_id)
    except AssertionError as e:  # what the Dask worker did meanwhile (its tasks' log lines are there)
        raise AssertionError(f"{e}\nDask worker log:\n{worker_log.read_text(errors='replace')[-4000:]}") from None
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert deployed.task_states(run["id"]) == STEPS
    assert deployed.has_log(run["id"], f"downloads run on the Dask cluster at {address}"), deployed.logs(run["id"])
    # The worker runs this interpreter: where its profiler can deadlock it (CPython gh-106883, seen
    # here as a worker frozen after its first task), the flow turns the profiler off and says so.
    v = sys.version_info
    if v < (3, 11, 9) or (3, 12) <= v < (3, 12, 3):
        assert deployed.has_log(run["id"], "profilers are now off"), deployed.logs(run["id"])
    # The tasks ran in the cluster's worker process: their log lines are in its output.
    log = worker_log.read_text(errors="replace")
    for step in ("snapshot", "fetch", "verify", "extract", "hf"):
        assert f"Task run '{step} " in log, log[-3000:]
    assert os.path.isfile(deployed.root / "dask-remote" / "data" / "downloads" / "outdoor_advertising_sample"
                          / SAMPLE_ARCHIVE)


# -- what the UI shows, in a real browser -------------------------------------------------------
ARTIFACT_CARDS = """(() => {
    document.querySelectorAll('*').forEach(e => { if (e.scrollHeight > e.clientHeight + 50) e.scrollTop = e.scrollHeight; });
    const cards = Array.from(document.querySelectorAll('a[href*="/artifacts/artifact/"]')).map(a => a.textContent);
    return cards.some(c => c.includes('download-summary')) && cards.some(c => c.includes('training-summary')) && cards;
})()"""
LOSS_CURVE = """(() => {
    const img = document.querySelector('img[alt="loss curve"]');
    return img && img.complete && img.naturalWidth > 0 && img.getBoundingClientRect().width > 0
        && [img.naturalWidth, img.naturalHeight];
})()"""


def _artifacts_tab(page, ui: str, flow_run_id: str) -> list[str]:
    """The flow run's page, as `prefect deployment run` links it, on its Artifacts tab: the cards."""
    page.open(f"{ui}/runs/flow-run/{flow_run_id}")
    page.wait_for("document.title.startsWith('Flow Run: ')", "the flow run's page")
    page.wait_for("""(() => { const tab = Array.from(document.querySelectorAll('li'))
                        .find(e => e.textContent.trim() === 'Artifacts'); if (tab) tab.click(); return !!tab; })()""",
                  "the Artifacts tab")
    return page.wait_for(ARTIFACT_CARDS, "the download-summary and training-summary artifacts")


def test_the_ui_shows_the_summary_table_and_the_loss_curve(deployed, tmp_path):
    """Headless Chromium on the Prefect UI of a deployment run: the flow run's Artifacts tab lists
    the download summary and the training summary; the first opens as a table of the files, the
    second shows the final numbers and the loss curve as an image that loaded (not a broken data
    link). TRAIN_PIPELINE_UI_SCREENSHOT=docs/ui-run.png refreshes the README's screenshot."""
    from browser import Browser, chromium_binary

    if chromium_binary() is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium)")
    pytest.importorskip("websockets.sync.client")
    config = {**SMALL_SAMPLE, **{k: f"./ui-check/{k}" for k in ("data_dir", "models_cache", "results_dir")}}
    run = deployed.wait(deployed.run_deployment("train-pipeline/default", {"config": config}))
    assert run["state"]["type"] == "COMPLETED", run["state"]
    ui = deployed.api_url.removesuffix("/api")
    shot = os.environ.get("TRAIN_PIPELINE_UI_SCREENSHOT")
    browser = Browser(width=1280, height=1400 if shot else 900)
    with browser as page:
        _artifacts_tab(page, ui, run["id"])
        assert page.click_text("download-summary", "a")
        rows = page.wait_for("document.body.innerText.includes('verified hash') && document.querySelectorAll('tbody tr').length",
                             "the download summary table")
        assert rows == 3  # the archive, the hf:// source, the model snapshot
        text = page.js("document.body.innerText")
        assert "outdoor_advertising_sample.tar.gz" in text and "downloaded" in text and "sha256:" in text

        _artifacts_tab(page, ui, run["id"])
        assert page.click_text("training-summary", "a")
        width, height = page.wait_for(LOSS_CURVE, "the loss curve as a loaded image")
        assert width >= 300 and height >= 150
        text = page.js("document.body.innerText")
        assert "final loss" in text and "steps" in text and "metrics" in text
        page.screenshot(tmp_path / "training-summary.png")
        if shot:
            page.js("window.scrollTo(0, 0)")
            page.screenshot(Path(shot))
    assert not os.path.lexists(browser._profile)  # Chromium's profile goes with it (the suite leaves no folders)
