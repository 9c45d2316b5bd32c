"""Flow tests: real file and Hub servers on 127.0.0.1.

The root conftest has already pointed PREFECT_HOME and TRAIN_PIPELINE_RESULT_STORAGE at
temporary folders before anything imported prefect, and holds the session's Prefect test server
(``prefect_server``).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
if str(PROJECT_ROOT) not in sys.path:  # flows/ and tasks/ are imported from the checkout
    sys.path.insert(0, str(PROJECT_ROOT))

ARCHIVE = "billboards.tar.gz"


@dataclass
class Archive:
    path: Path
    size: int
    hash: str
    name: str = ARCHIVE  # its name on the test file server


@pytest.fixture(scope="session")
def dataset_archive(tmp_path_factory) -> Archive:
    """A small imagefolder dataset packed as tar.gz, built once per session (no torch needed)."""
    from offline.sample import _pack
    from offline.sample_data import build_sample_dataset

    root = tmp_path_factory.mktemp("dataset-archive")
    folder = build_sample_dataset(root / "billboards", n_images=6, seed=1)
    archive = root / ARCHIVE
    _pack(Path(folder), archive)
    data = archive.read_bytes()
    return Archive(archive, len(data), "sha256:" + hashlib.sha256(data).hexdigest())


@pytest.fixture(scope="session")
def sample_build_dir(tmp_path_factory):
    """The offline sample (tiny Qwen2-VL repository + dataset archive), built once per session."""
    from train_pipeline.config import SampleSpec
    from offline.sample import build_sample

    build_dir = tmp_path_factory.mktemp("sample-build")
    build_sample(SampleSpec(n_images=8, seed=0, build_dir=str(build_dir)))
    return build_dir


@pytest.fixture
def served(tmp_path, dataset_archive):
    """A FileServer over a per-test folder holding the dataset archive."""
    from offline.file_server import FileServer

    root = tmp_path / "server"
    root.mkdir()
    shutil.copy(dataset_archive.path, root / ARCHIVE)
    with FileServer(root) as server:
        yield server


@pytest.fixture
def dataset_config_data(tmp_path, served, dataset_archive):
    """The plain (YAML) form of a download-only pipeline config over the served archive, in this
    test's own folders: ``make(**overrides)``."""

    def make(**overrides):
        return {
            "datasets": [{
                "name": "billboards",
                "files": [{"url": served.url(ARCHIVE), "size": dataset_archive.size, "hash": dataset_archive.hash}],
                "extract_to": "billboards",
            }],
            "train": None,
            "data_dir": str(tmp_path / "data"),
            "models_cache": str(tmp_path / "models_cache"),
            "results_dir": str(tmp_path / "results"),
            "task_retries": 0,
            "retries": 1,
            **overrides,
        }

    return make


@pytest.fixture
def dataset_config(dataset_config_data):
    """The same config, parsed."""
    from train_pipeline.config import parse_config

    return lambda **overrides: parse_config(dataset_config_data(**overrides), "test config")


def _task_runs(flow_run_id, timeout: float = 30):
    """The server records task runs from events, a moment after the flow run ends: read until
    each has a state and two reads agree (a task that never ran stays Pending)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    last = None
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            seen = {(r.id, r.state.type, r.state.name) if r.state else (r.id, None, None) for r in runs}
            if (all(r.state is not None for r in runs) and seen == last) or time.monotonic() > deadline:
                break
            last = seen
            time.sleep(0.3)
    return sorted(runs, key=lambda r: (r.start_time or r.expected_start_time or r.created, r.created))


@pytest.fixture
def task_runs():
    """``task_runs(flow_run_id)``: the flow run's task runs, oldest first."""
    return _task_runs


@pytest.fixture
def task_states():
    """``task_states(flow_run_id)`` -> {step: state name} of the latest task run of each step
    ('fetch', 'verify', 'extract', 'snapshot', 'train')."""

    def states(flow_run_id) -> dict[str, str]:
        out = {}
        for run in _task_runs(flow_run_id):
            out[run.name.split(" ")[0]] = run.state.name
        return out

    return states


@pytest.fixture
def run_pipeline(prefect_server):
    """Run the flow in-process on the session server; returns its final state."""
    from flows.pipeline import train_pipeline

    def run(config):
        return train_pipeline(config=config, return_state=True)

    return run
