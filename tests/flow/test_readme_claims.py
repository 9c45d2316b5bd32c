"""README.md and deployments/README.md claims about the flow that no other test reached the way a
user does, each through the flow (on the session's Prefect server), its CLIs, or a real worker:

- the flow's ``config_file`` parameter (a profile relative to the working directory; Prefect stores
  only its name, so a signed URL in it stays out of Prefect), and "give one or the other";
- the download fan-out bounded by ``max_workers`` (a server counts the transfers in flight);
- files from ``train-pipeline datasets download`` found by a later pipeline run: 0 bytes;
- ``result_storage: block:TYPE/NAME``: the cache of a real run in a saved storage block;
- ``prefect flow-run retry ID`` of a deployment run: the worker runs it again from the failed step;
- a deleted training output makes the next run train again, and only train.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

ARCHIVE = "billboards.tar.gz"  # the dataset archive on the test file server (tests/flow/conftest.py)
ROOT = Path(__file__).resolve().parents[2]


def _summary(flow_run_id) -> list[dict]:
    """The rows of the run's download-summary table artifact (what the UI shows)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    (summary,) = [a for a in arts if a.key == "download-summary"]
    data = json.loads(summary.data) if isinstance(summary.data, str) else summary.data
    return data


# -- config_file ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_config_file_reads_a_profile_relative_to_the_working_directory_and_not_with_config(
        tmp_path, dataset_config_data, prefect_server, task_states, monkeypatch):
    from flows.pipeline import train_pipeline
    from train_pipeline.config import parse_config

    from prefect.client.orchestration import get_client

    data = dataset_config_data()
    data["datasets"][0]["files"][0]["url"] += "?X-Signature=SECRET123"  # a signed URL (README: via config_file)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "download.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)  # a deployment's flow run starts in the checkout

    state = train_pipeline(config_file="profiles/download.yaml", return_state=True)
    assert state.is_completed(), state.message
    assert task_states(state.state_details.flow_run_id) == {"fetch": "Completed", "verify": "Completed",
                                                            "extract": "Completed"}
    assert (tmp_path / "data" / "billboards" / "billboards" / "metadata.jsonl").is_file()
    with get_client(sync_client=True) as client:
        stored = client.read_flow_run(state.state_details.flow_run_id).parameters
    assert stored == {"config_file": "profiles/download.yaml"} or stored == {"config": None,
                                                                             "config_file": "profiles/download.yaml"}

    both = train_pipeline(config=parse_config(data, "test"), config_file="profiles/download.yaml", return_state=True)
    assert both.is_failed()
    assert "give either 'config' or 'config_file', not both" in both.message, both.message
    assert task_states(both.state_details.flow_run_id) == {}  # refused before anything was submitted


# -- max_workers ----------------------------------------------------------------------------------
class _CountingServer(ThreadingHTTPServer):
    """Serves ``files`` and counts the GETs in flight (``peak``: the most at once). Each GET is held
    ``hold`` seconds before its body is sent, so that transfers that could overlap do; more than
    ``limit`` in flight releases them at once (the test has failed by then)."""

    daemon_threads = True

    def __init__(self, files: dict[str, bytes], limit: int, hold: float = 0.3):
        super().__init__(("127.0.0.1", 0), _CountingHandler)
        self.files, self.limit, self.hold = files, limit, hold
        self.cond = threading.Condition()
        self.in_flight = self.peak = 0
        self.gets: list[str] = []

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"

    def handle_error(self, request, client_address):
        pass


class _CountingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        srv = self.server
        body = srv.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with srv.cond:
            srv.in_flight += 1
            srv.peak = max(srv.peak, srv.in_flight)
            srv.gets.append(self.path)
            srv.cond.notify_all()
            srv.cond.wait_for(lambda: srv.in_flight > srv.limit, timeout=srv.hold)
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        finally:
            with srv.cond:
                srv.in_flight -= 1
                srv.cond.notify_all()

    def log_message(self, *args):
        pass


@pytest.fixture
def counting_server():
    started: list[_CountingServer] = []

    def start(files, limit):
        srv = _CountingServer(files, limit)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append(srv)
        return srv

    try:
        yield start
    finally:
        for srv in started:
            srv.shutdown()
            srv.server_close()


def _served_files(srv: _CountingServer, names) -> list[dict]:
    import hashlib

    return [{"url": srv.url(n), "size": len(srv.files[n]), "hash": "sha256:" + hashlib.sha256(srv.files[n]).hexdigest()}
            for n in names]


@pytest.mark.slow
def test_the_flows_downloads_are_bounded_by_max_workers(counting_server, dataset_config, run_pipeline, task_states):
    """At most max_workers tasks at a time. A file's verify task, submitted with its fetch, holds one
    of them while it waits, so five plain files with max_workers 4 download two at a time (README:
    'about half as many')."""
    srv = counting_server({f"shard-{i}.bin": os.urandom(64 * 1024) for i in range(5)}, limit=4)
    cfg = dataset_config(max_workers=4, datasets=[{"name": "shards", "files": _served_files(srv, srv.files)}])
    state = run_pipeline(cfg)
    assert state.is_completed(), state.message
    assert sorted(srv.gets) == sorted(f"/{name}" for name in srv.files)
    assert 2 <= srv.peak <= 4, f"{srv.peak} downloads ran at once with max_workers 4"
    assert list(task_states(state.state_details.flow_run_id)) == ["fetch", "verify"]  # one task per file, no batch


@pytest.mark.slow
def test_a_batch_of_small_files_uses_max_workers_connections(counting_server, dataset_config, run_pipeline,
                                                            task_states):
    """More than five files of known small size: one fetch-batch task, max_workers transfers at a time."""
    srv = counting_server({f"label-{i}.txt": os.urandom(2000) for i in range(8)}, limit=2)
    cfg = dataset_config(max_workers=2, datasets=[{"name": "labels", "files": _served_files(srv, srv.files)}])
    state = run_pipeline(cfg)
    assert state.is_completed(), state.message
    assert task_states(state.state_details.flow_run_id) == {"fetch-batch": "Completed"}
    assert len(srv.gets) == 8 and srv.peak == 2, srv.peak


# -- datasets download, then the pipeline ------------------------------------------------------------
@pytest.mark.slow
def test_files_from_datasets_download_are_found_by_a_later_pipeline_run(tmp_path, served, dataset_archive,
                                                                        dataset_config_data, run_pipeline,
                                                                        task_states):
    from train_pipeline.config import parse_config

    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump({"datasets": [{
        "name": "billboards", "description": "test", "extract_to": "billboards",
        "files": [{"url": served.url(ARCHIVE), "size": dataset_archive.size, "hash": dataset_archive.hash}]}]}))
    r = subprocess.run([sys.executable, "-m", "train_pipeline.cli", "datasets", "download", "billboards", "-q",
                        "--registry", str(registry), "--data-dir", "data"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "data" / "downloads" / "billboards" / ARCHIVE).is_file()
    assert (tmp_path / "data" / "billboards" / "billboards" / "metadata.jsonl").is_file()
    requests = len(served.log)

    data = dataset_config_data(registry=str(registry))
    data["datasets"] = ["billboards"]  # the registry entry, by name
    state = run_pipeline(parse_config(data, "test"))
    assert state.is_completed(), state.message
    assert len(served.log) == requests  # not one request: found verified on disk
    (row,) = _summary(state.state_details.flow_run_id)
    assert row["file"] == ARCHIVE and row["status"] == "cached" and row["transferred"] == "0 B", row


def test_datasets_download_urls_fill_in_a_registry_entry_without_files(tmp_path, served, dataset_archive):
    """README.md, Datasets: `datasets download outdoor_advertising --urls URL`, an entry of the shipped
    registry you have not filled in yet: the files land in its folders, the archive extracted to its
    extract_to."""
    env = {k: v for k, v in os.environ.items() if k != "TRAIN_PIPELINE_REGISTRY"}
    r = subprocess.run([sys.executable, "-m", "train_pipeline.cli", "datasets", "download", "outdoor_advertising", "-q",
                        "--urls", served.url(ARCHIVE)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**env, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "data" / "downloads" / "outdoor_advertising" / ARCHIVE).is_file()  # ./data: the default
    assert (tmp_path / "data" / "outdoor_advertising" / "billboards" / "metadata.jsonl").is_file()
    assert served.bytes_sent_total(ARCHIVE) == dataset_archive.size


@pytest.mark.slow
def test_the_application_imports_offline_only_for_the_sample():
    """README.md, Layout: offline/ (the stand-ins for the internet) is imported only where the config
    selects the sample: the flow, its tasks and the CLIs load and check the real profile without it."""
    code = ("import sys\n"
            "import flows.pipeline, flows.steps, tasks.download, tasks.extract, tasks.snapshot, tasks.train\n"
            "import train_pipeline.cli, train_pipeline.datasets_cli, train_pipeline.model_cli\n"
            "from train_pipeline.config import PROJECT_ROOT, check_config, load_config\n"
            "check_config(load_config(PROJECT_ROOT / 'configs' / 'qwen2-vl-2b.yaml'))\n"
            "print(sorted(m for m in sys.modules if m == 'offline' or m.startswith('offline.')))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_the_default_folders():
    """README.md: defaults ./models_cache, ./data, ./results, and ./build/sample for the sample's own
    model and datasets -- in the shipped sample profile and when a config leaves them out."""
    from train_pipeline.config import SAMPLE_CONFIG, load_config, parse_config

    for cfg in (load_config(SAMPLE_CONFIG), parse_config({"sample": True})):
        assert (cfg.models_cache, cfg.data_dir, cfg.results_dir, cfg.sample.build_dir) == (
            "./models_cache", "./data", "./results", "./build/sample")


# -- block: result storage -------------------------------------------------------------------------
@pytest.mark.slow
def test_block_result_storage_holds_the_cache_of_a_real_run(tmp_path, served, dataset_archive, dataset_config_data,
                                                            run_pipeline, task_states):
    from prefect.filesystems import LocalFileSystem

    from train_pipeline.config import parse_config

    name = f"train-pipeline-test-{uuid.uuid4().hex[:8]}"
    store = tmp_path / "block-store"
    block_id = LocalFileSystem(basepath=str(store)).save(name)
    try:
        cfg = parse_config(dataset_config_data(result_storage=f"block:local-file-system/{name}"),
                           "test")
        first = run_pipeline(cfg)
        assert first.is_completed(), first.message
        assert set(task_states(first.state_details.flow_run_id).values()) == {"Completed"}
        assert store.is_dir() and any(store.rglob("*")), "nothing stored in the block"
        assert not (tmp_path / "results" / ".prefect-results").exists()

        second = run_pipeline(cfg)
        assert second.is_completed(), second.message
        assert set(task_states(second.state_details.flow_run_id).values()) == {"Cached"}
        assert served.bytes_sent_total(ARCHIVE) == dataset_archive.size
    finally:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            client.delete_block_document(block_id)


# -- prefect flow-run retry of a deployment run -------------------------------------------------------
def _prefect(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    from prefect.settings import PREFECT_API_URL

    return subprocess.run([sys.executable, "-m", "prefect", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()})


@pytest.mark.slow
def test_prefect_flow_run_retry_of_a_deployment_run_continues_from_the_failed_step(
        tmp_path, served, dataset_archive, dataset_config_data, prefect_server, task_runs):
    """The CLI equivalent of the UI's Retry (deployments/README.md): `prefect flow-run retry ID` puts
    the deployment's failed run back to Scheduled and a process worker (`prefect worker start
    --run-once` here) runs it again."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments import run_deployment
    from prefect.flow_engine import run_flow

    from flows.pipeline import train_pipeline

    pool = f"train-pipeline-test-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    deployment_id = None
    try:
        deployment_id = train_pipeline.from_source(str(ROOT), "flows/pipeline.py:train_pipeline").deploy(
            name=pool, work_pool_name=pool, print_next_steps=False)
        blocker = tmp_path / "data" / "billboards"  # a file where the extraction goes: extract fails
        blocker.parent.mkdir(parents=True)
        blocker.write_text("not a folder")
        flow_run_id = str(run_deployment(f"train-pipeline/{pool}", timeout=0,
                                         parameters={"config": dataset_config_data()}).id)

        # The first attempt runs here, in-process (what the worker would start; cheaper); the retry below
        # is the worker's.
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(flow_run_id)
        assert flow_run.deployment_id == deployment_id
        failed = run_flow(train_pipeline, flow_run=flow_run, parameters=flow_run.parameters, return_type="state")
        assert failed.is_failed(), failed
        before = {x.id for x in task_runs(flow_run_id)}
        assert {x.name.split(" ")[0]: x.state.name for x in task_runs(flow_run_id)} == {
            "fetch": "Completed", "verify": "Completed", "extract": "Failed"}

        blocker.unlink()  # the fix
        r = _prefect("flow-run", "retry", flow_run_id)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "scheduled for retry" in r.stdout
        r = _prefect("worker", "start", "--pool", pool, "--type", "process", "--run-once")
        assert r.returncode == 0, r.stdout + r.stderr

        with get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run_id)
        assert run.state.is_completed() and run.run_count == 2, run.state
        retried = {x.name.split(" ")[0]: x.state.name for x in task_runs(flow_run_id) if x.id not in before}
        assert retried == {"fetch": "Cached", "verify": "Cached", "extract": "Completed"}
        assert served.bytes_sent_total(ARCHIVE) == dataset_archive.size  # downloaded once, in the failed run
    finally:
        with get_client(sync_client=True) as client:
            if deployment_id is not None:
                client.delete_deployment(deployment_id)
            client.delete_work_pool(pool)


# -- training in the flow: its log lines, artifact and cache ----------------------------------------------
def _logs(flow_run_id, needle: str, timeout: float = 30) -> list[str]:
    """The run's log messages once one contains ``needle`` (Prefect ships logs in batches, after the
    run's final state)."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            logs = [x.message for x in client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))]
            if any(needle in m for m in logs) or time.monotonic() > deadline:
                return logs
            time.sleep(0.5)


@pytest.mark.slow
def test_training_in_the_flow_logs_each_step_and_redoes_exactly_the_step_whose_output_went(
        tmp_path, dataset_config, served, dataset_archive, sample_build_dir, run_pipeline, task_states):
    """README.md: a log line per training step, the eval loss in the training artifact; a deleted
    final model makes the next run train again (and only train); a re-download of the same archive
    bytes finds it already extracted and leaves training Cached."""
    import re

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from offline.hub_server import HubServer
    from offline.sample import SAMPLE_REPO

    train = {"max_steps": 2, "save_steps": 2, "logging_steps": 1, "per_device_train_batch_size": 2,
             "max_pixels": 12544, "min_pixels": 3136, "max_length": 256, "eval": {"fraction": 0.2, "steps": 1}}
    with HubServer(sample_build_dir / "hub") as hub:
        cfg = dataset_config(model={"repo_id": SAMPLE_REPO, "endpoint": hub.endpoint}, train=train)
        first = run_pipeline(cfg)
        assert first.is_completed(), first.message
        flow_run_id = first.state_details.flow_run_id
        assert set(task_states(flow_run_id).values()) == {"Completed"}
        logs = _logs(flow_run_id, "step 2/2 eval loss")
        steps = [m for m in logs if re.fullmatch(r"step \d+/2 loss \d+\.\d{4} lr \d\.\d\de[-+]\d\d", m)]
        assert len(steps) == 2, logs  # README: 'step 12/30 loss 4.0343 lr 1.27e-03'
        assert any(re.fullmatch(r"step 2/2 eval loss \d+\.\d{4}", m) for m in logs), logs
        with get_client(sync_client=True) as client:
            arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        (summary,) = [a for a in arts if a.key == "training-summary"]
        assert re.search(r"eval loss \| step 1: \d+\.\d{4}, step 2: \d+\.\d{4} \(1 examples\)", summary.data), summary.data

        # The final model deleted: training runs again, nothing else does.
        final = Path(first.result()["final_model_dir"])
        shutil.rmtree(final)
        again = run_pipeline(cfg)
        assert again.is_completed(), again.message
        states = task_states(again.state_details.flow_run_id)
        assert states.pop("train") == "Completed" and set(states.values()) == {"Cached"}, states
        assert (final / "model.safetensors").is_file()

        # The download deleted: fetched again (same bytes). Extract runs, finds the archive already
        # extracted (nothing rewritten), and training stays Cached.
        member = tmp_path / "data" / "billboards" / "billboards" / "metadata.jsonl"
        inode = member.stat().st_ino
        (tmp_path / "data" / "downloads" / "billboards" / ARCHIVE).unlink()
        third = run_pipeline(cfg)
        assert third.is_completed(), third.message
        assert task_states(third.state_details.flow_run_id) == {
            "snapshot": "Cached", "fetch": "Completed", "verify": "Completed", "extract": "Completed", "train": "Cached"}
        assert member.stat().st_ino == inode
        assert any(re.search(r"billboards\.tar\.gz -> .*: cached, \d+ files", m)
                   for m in _logs(third.state_details.flow_run_id, ": cached, ")), "extract did not find it extracted"
        assert served.bytes_sent_total(ARCHIVE) == 2 * dataset_archive.size

        last = run_pipeline(cfg)
        assert set(task_states(last.state_details.flow_run_id).values()) == {"Cached"}
