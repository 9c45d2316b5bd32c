"""The deployment's static parts: prefect.yaml names what the docs say, the real profile it points
at is valid, and the `task_runner` key is validated like the others (one line, no traceback)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from deploy_helpers import PROJECT_ROOT


def test_prefect_yaml_needs_no_paths_edited():
    spec = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert set(deployments) == {"default", "qwen2-vl-2b"}
    for d in deployments.values():
        assert d["entrypoint"] == "flows/pipeline.py:train_pipeline"
        assert d["work_pool"]["name"] == "train-pipeline-process"
    assert deployments["default"]["parameters"] == {}  # empty = the offline sample profile
    config_file = deployments["qwen2-vl-2b"]["parameters"]["config_file"]
    assert (PROJECT_ROOT / config_file).is_file()
    # The checkout is found when deploying (build step), never written into the file.
    text = (PROJECT_ROOT / "prefect.yaml").read_text()
    assert str(PROJECT_ROOT) not in text and "/work/" not in text and "/home/" not in text


@pytest.mark.parametrize("profile", ["configs/qwen2-vl-2b.yaml", "configs/sample.yaml"])
def test_deployed_profiles_are_valid(profile):
    from train_pipeline.config import load_config

    cfg = load_config(PROJECT_ROOT / profile)
    assert cfg.task_runner.type == "threads"


@pytest.mark.parametrize("value, expected", [
    ({"type": "dask"}, ("dask", None, 2)),
    ("dask", ("dask", None, 2)),
    ({"type": "dask", "address": "tcp://10.0.0.5:8786"}, ("dask", "tcp://10.0.0.5:8786", 2)),
    ({"type": "dask", "n_workers": 4}, ("dask", None, 4)),
])
def test_task_runner_key(value, expected):
    from train_pipeline.config import parse_config

    tr = parse_config({"sample": True, "task_runner": value}).task_runner
    assert (tr.type, tr.address, tr.n_workers) == expected


@pytest.mark.parametrize("value, message", [
    ({"type": "ray"}, "task_runner.type: 'ray' is not a task runner; use 'threads' or 'dask'"),
    ({"type": "dask", "address": "http://host:8786"},
     "task_runner.address: 'http://host:8786' is not a Dask scheduler address; write it as tcp://host:8786"),
    ({"address": "tcp://host:8786"}, "task_runner: address: only used with type: dask"),
    ({"type": "dask", "n_workers": 0}, "task_runner.n_workers: Input should be greater than or equal to 1"),
    ({"type": "dask", "workers": 2}, "task_runner.workers: unknown key"),
])
def test_bad_task_runner_is_one_line(value, message):
    from train_pipeline.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as err:
        parse_config({"sample": True, "task_runner": value}, "c.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_bad_task_runner_from_the_command_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sample: true\ntask_runner: {type: dask, address: 'localhost'}\n")
    r = subprocess.run([sys.executable, "flows/pipeline.py", "--config", str(bad), "--check"], cwd=PROJECT_ROOT,
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: {bad}: task_runner.address: 'localhost' is not a Dask scheduler address; write it as tcp://host:8786"]
    assert "Traceback" not in r.stderr
