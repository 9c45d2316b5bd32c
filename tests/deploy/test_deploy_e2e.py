"""`prefect deployment run train-pipeline/default` on a real server and process worker, and the
UI's Retry of a run that failed at a middle step: it resumes there, the steps before are Cached
(nothing downloaded again) and the same flow run Completes."""

from __future__ import annotations

import json
import shutil

from deploy_helpers import SMALL_SAMPLE

DATASET = "outdoor_advertising_sample"  # the sample's dataset (train_pipeline.sample)


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
                                                 "extract": "Completed", "train": "Completed"}
    assert "download-summary" in {a["key"] for a in deployed.artifacts(first["id"])}
    assert (root / "results" / f"tiny-qwen2-vl-{DATASET}" / "final" / "config.json").is_file()
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
        "snapshot": "Cached", "fetch": "Cached", "verify": "Cached", "extract": "Completed", "train": "Cached"}
    assert target.is_dir() and any(target.iterdir())

    # Nothing downloaded again: the retry's summary artifact says so, row by row.
    summaries = [a for a in deployed.artifacts(failed["id"]) if a["key"] == "download-summary"]
    latest = max(summaries, key=lambda a: a["created"])
    rows = latest["data"] if isinstance(latest["data"], list) else json.loads(latest["data"])
    assert rows and all(r["status"] == "cached" and r["transferred"] == "0 B" for r in rows), rows
