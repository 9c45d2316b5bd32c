"""What the Prefect UI shows for a large download: a progress artifact, log lines with bytes and
speed, and the run's summary table."""

from __future__ import annotations

ARCHIVE = "billboards.tar.gz"  # the dataset archive on the test file server (tests/flow/conftest.py)

import hashlib
import os


def test_large_download_has_a_progress_artifact_and_log_lines(dataset_config, served, run_pipeline, dataset_archive):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId

    big = os.urandom(9 << 20)
    (served.root / "big.bin").write_bytes(big)
    cfg = dataset_config(datasets=[{
        "name": "billboards",
        "files": [
            {"url": served.url(ARCHIVE), "size": dataset_archive.size, "hash": dataset_archive.hash},
            {"url": served.url("big.bin"), "size": len(big), "hash": "sha256:" + hashlib.sha256(big).hexdigest()},
        ],
        "extract_to": "billboards",
    }])
    state = run_pipeline(cfg)
    assert state.is_completed(), state.message
    flow_run_id = state.state_details.flow_run_id
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)  # logs travel to the server in batches
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    by_key = {a.key: a for a in arts}
    assert by_key["download-big-bin"].type == "progress" and float(by_key["download-big-bin"].data) == 100.0
    assert "download-billboards-tar-gz" not in by_key  # small files finish before a bar means anything
    assert by_key["download-summary"].type == "table"
    messages = [log.message for log in logs]
    assert any("big.bin: downloaded, 9.0 MiB transferred in" in m and "/s)" in m for m in messages), messages
