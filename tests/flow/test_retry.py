"""Retry from the failing step: a run that failed at extract, once the cause is fixed, runs again
from extract on; fetch and verify are Cached and nothing is downloaded again."""

from __future__ import annotations

from resumable.state import corrupt_path

ARCHIVE = "billboards.tar.gz"  # the dataset archive on the test file server (tests/flow/conftest.py)


def _fail_at_extract(tmp_path):
    """Something in the way of the extract target (a file where its folder goes)."""
    blocker = tmp_path / "data" / "billboards"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder")
    return blocker


def test_plain_rerun_continues_from_the_failed_step(tmp_path, dataset_config, served, run_pipeline, task_states,
                                                    dataset_archive):
    cfg = dataset_config()
    blocker = _fail_at_extract(tmp_path)
    failed = run_pipeline(cfg)
    assert failed.is_failed()
    assert "not a folder" in failed.message
    assert task_states(failed.state_details.flow_run_id) == {"fetch": "Completed", "verify": "Completed",
                                                             "extract": "Failed"}

    blocker.unlink()  # the fix
    again = run_pipeline(cfg)  # a new flow run, as `python flows/pipeline.py` again
    assert again.is_completed(), again.message
    assert task_states(again.state_details.flow_run_id) == {"fetch": "Cached", "verify": "Cached",
                                                            "extract": "Completed"}
    assert served.bytes_sent_total(ARCHIVE) == dataset_archive.size  # downloaded once, in the failed run


def test_api_retry_of_the_same_flow_run_continues_from_the_failed_step(task_runs, tmp_path, dataset_config, served,
                                                                       run_pipeline, dataset_archive):
    """What the UI's Retry does: the failed flow run goes to AwaitingRetry (Scheduled, forced) and
    runs again. Without a worker, this process executes it (as `prefect flow-run retry ID
    --entrypoint flows/pipeline.py:train_pipeline` does)."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow
    from prefect.states import AwaitingRetry

    from flows.pipeline import train_pipeline

    blocker = _fail_at_extract(tmp_path)
    failed = run_pipeline(dataset_config())
    assert failed.is_failed()
    flow_run_id = failed.state_details.flow_run_id
    before = {r.id for r in task_runs(flow_run_id)}
    blocker.unlink()

    with get_client(sync_client=True) as client:
        result = client.set_flow_run_state(flow_run_id, AwaitingRetry(), force=True)
        assert result.status.value == "ACCEPT"
        flow_run = client.read_flow_run(flow_run_id)
    assert flow_run.state.name == "AwaitingRetry"

    state = run_flow(train_pipeline, flow_run=flow_run, parameters=flow_run.parameters, return_type="state")
    assert state.is_completed(), state.message

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
    assert flow_run.state.is_completed() and flow_run.run_count == 2
    retried = {r.name.split(" ")[0]: r.state.name for r in task_runs(flow_run_id) if r.id not in before}
    assert retried == {"fetch": "Cached", "verify": "Cached", "extract": "Completed"}
    assert served.bytes_sent_total(ARCHIVE) == dataset_archive.size


def test_transient_failure_is_retried_by_prefect_and_resumes(task_runs, dataset_config, served, run_pipeline, dataset_archive):
    """The engine gives up (no retries of its own here); Prefect retries the task, which resumes
    the .part instead of starting over."""
    served.fault(ARCHIVE, cut_after=2000)  # the connection drops after 2000 body bytes, once
    cfg = dataset_config(retries=0, task_retries=2, task_retry_delay=0.1)
    state = run_pipeline(cfg)
    assert state.is_completed(), state.message
    fetch = next(r for r in task_runs(state.state_details.flow_run_id) if r.name.startswith("fetch"))
    assert fetch.run_count == 2
    ranges = [r.range for r in served.requests_for(ARCHIVE) if r.method == "GET"]
    assert ranges[0] is None and ranges[-1].startswith("bytes=") and ranges[-1] != "bytes=0-"
    assert served.bytes_sent_total(ARCHIVE) < 2 * dataset_archive.size


def test_permanent_failure_is_not_retried(task_runs, dataset_config, served, run_pipeline):
    served.fault(ARCHIVE, status=404, times=None)
    state = run_pipeline(dataset_config(retries=0, task_retries=2, task_retry_delay=0.1))
    assert state.is_failed() and "404" in state.message
    fetch = next(r for r in task_runs(state.state_details.flow_run_id) if r.name.startswith("fetch"))
    assert fetch.run_count == 1


def test_cli_retry_of_the_same_flow_run_continues_from_the_failed_step(task_runs, tmp_path, dataset_config, served,
                                                                      run_pipeline, dataset_archive):
    """`prefect flow-run retry ID --entrypoint flows/pipeline.py:train_pipeline`, the documented
    way to retry a local (deployment-less) run from a shell."""
    import os
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    blocker = _fail_at_extract(tmp_path)
    failed = run_pipeline(dataset_config())
    assert failed.is_failed()
    flow_run_id = failed.state_details.flow_run_id
    before = {r.id for r in task_runs(flow_run_id)}
    blocker.unlink()

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run(
        [sys.executable, "-m", "prefect", "flow-run", "retry", str(flow_run_id),
         "--entrypoint", "flows/pipeline.py:train_pipeline"],
        cwd=root, capture_output=True, text=True, timeout=180,
        env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    retried = {x.name.split(" ")[0]: x.state.name for x in task_runs(flow_run_id) if x.id not in before}
    assert retried == {"fetch": "Cached", "verify": "Cached", "extract": "Completed"}
    assert served.bytes_sent_total(ARCHIVE) == dataset_archive.size


def test_corrupt_archive_fails_at_extract_and_the_rerun_keeps_the_model_cached(
        tmp_path, dataset_config, served, run_pipeline, task_states, sample_build_dir, dataset_archive):
    """No hash in the config, and the server sends a broken archive: the transfer cannot tell, the
    extraction can. The failed run sets the bad download aside; once the source is fixed the
    re-run downloads the archive again and extracts it, while the model snapshot (done in the
    failed run) stays Cached and is not transferred again."""
    from offline.sample import SAMPLE_REPO
    from offline.hub_server import HubServer

    good = (served.root / ARCHIVE).read_bytes()
    (served.root / ARCHIVE).write_bytes(good[: len(good) // 2])  # truncated at the source
    with HubServer(sample_build_dir / "hub") as hub:
        cfg = dataset_config(
            model={"repo_id": SAMPLE_REPO, "endpoint": hub.endpoint},
            datasets=[{"name": "billboards", "files": [{"url": served.url(ARCHIVE)}], "extract_to": "billboards"}])
        failed = run_pipeline(cfg)
        assert failed.is_failed() and "corrupt or truncated" in failed.message, failed.message
        assert task_states(failed.state_details.flow_run_id) == {
            "snapshot": "Completed", "fetch": "Completed", "verify": "Completed", "extract": "Failed"}
        download = tmp_path / "data" / "downloads" / "billboards" / ARCHIVE
        assert not download.exists() and corrupt_path(download).is_file()
        hub_requests = len(hub.settle())

        (served.root / ARCHIVE).write_bytes(good)  # the source is fixed
        again = run_pipeline(cfg)
        assert again.is_completed(), again.message
        assert task_states(again.state_details.flow_run_id) == {
            "snapshot": "Cached", "fetch": "Completed", "verify": "Completed", "extract": "Completed"}
        assert len(hub.settle()) == hub_requests  # not one request to the Hub: 0 bytes of the model again
    assert download.read_bytes() == good
