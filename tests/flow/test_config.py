"""Config, registry and command line: bad input is one line naming the key and the fix, exit
status 2, no traceback, and nothing is downloaded."""

from __future__ import annotations

import subprocess
import sys

import pytest

from train_pipeline.config import PROJECT_ROOT, ConfigError, PipelineConfig, load_config, parse_config
from train_pipeline.config.registry import load_registry

HASH = "sha256:" + "ab" * 32


def _dataset(**file):
    return {"datasets": [{"name": "d", "files": [{"url": "https://example.com/d.tar.gz", **file}], "extract_to": "d"}],
            "train": None}


@pytest.mark.parametrize("data, key, fix", [
    ({"sample": True, "bogus": 1}, "bogus", "unknown key"),
    ({"sample": True, "max_workers": "many"}, "max_workers", "fix the value's type"),
    (_dataset(hash="sha256:1234"), "datasets.0.files.0.hash", "64 hex characters"),
    (_dataset(hash="nothex"), "datasets.0.files.0.hash", "ALG:HEX"),
    (_dataset(url="ftp://host/x"), "datasets.0.files.0.url", "https://host/path"),
    (_dataset(mirrors=["not a url"]), "datasets.0.files.0.mirrors", "https://host/path"),
    (_dataset(size=-1), "datasets.0.files.0.size", "greater than or equal to 0"),
    ({"model": {"repo_id": "no-slash"}, "train": None}, "model.repo_id", "org/name"),
    ({"sample": True, "train": {"max_stepz": 3}}, "train.max_stepz", "unknown key"),
    ({"sample": True, "train": {"learning_rate": "fast"}}, "train.learning_rate", "fix the value's type"),
    ({"sample": True, "model": {"repo_id": "a/b"}}, "sample", "remove"),
    ({}, "config", "sample: true"),
    ({"model": {"repo_id": "a/b"}}, "train", "train: null"),
])
def test_bad_config_is_one_line_naming_the_key_and_the_fix(data, key, fix):
    with pytest.raises(ConfigError) as err:
        parse_config(data, "my.yaml")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("my.yaml: ") and f"{key}:" in msg and fix in msg, msg


def test_unknown_registry_name_is_reported_before_any_network(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("datasets: [outdoor_advertisin]\ntrain: null\n")
    with pytest.raises(ConfigError, match=r"datasets.0: unknown dataset 'outdoor_advertisin'; use one of .*outdoor_advertising"):
        load_config(cfg)


def test_profiles_and_registry_are_valid():
    sample = load_config(None)
    assert sample.sample is not None and sample.train is not None
    real = load_config(PROJECT_ROOT / "configs" / "qwen2-vl-2b.yaml")
    assert real.model.repo_id == "Qwen/Qwen2-VL-2B-Instruct" and real.datasets == ("textcaps",)
    assert {"outdoor_advertising", "gantry_samples", "custom"} <= set(load_registry())
    assert (sample.models_cache, sample.data_dir, sample.results_dir) == ("./models_cache", "./data", "./results")


def test_result_storage_is_explicit(monkeypatch, tmp_path):
    cfg = PipelineConfig(sample=True, result_storage=str(tmp_path / "r"))
    assert cfg.result_storage_ref() == tmp_path / "r"
    monkeypatch.setenv("TRAIN_PIPELINE_RESULT_STORAGE", str(tmp_path / "env"))
    assert PipelineConfig(sample=True).result_storage_ref() == tmp_path / "env"
    monkeypatch.delenv("TRAIN_PIPELINE_RESULT_STORAGE")
    assert PipelineConfig(sample=True, results_dir=str(tmp_path)).result_storage_ref() == tmp_path / ".prefect-results"
    assert PipelineConfig(sample=True, result_storage="block:s3-bucket/shared").result_storage_ref() == "s3-bucket/shared"


def test_flow_parameters_render_as_a_form():
    from flows.pipeline import train_pipeline

    schema = train_pipeline.parameters.model_dump()
    assert "config" in schema["properties"]
    assert "PipelineConfig" in str(schema["definitions"])


def _cli(*args, cwd):
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "flows" / "pipeline.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_cli_help_and_bad_config_exit_without_traceback(tmp_path):
    r = _cli("--help", cwd=tmp_path)
    assert r.returncode == 0 and "--config" in r.stdout and "--check" in r.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n  - name: d\n    files: [{url: 'https://h/x.zip', hash: 'sha256:xyz'}]\ntrain: null\n")
    r = _cli("--config", str(bad), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "datasets.0.files.0.hash" in r.stderr and "64 hex characters" in r.stderr


def test_cli_missing_file_and_check_only(tmp_path, monkeypatch, capsys):
    from flows.pipeline import main

    monkeypatch.chdir(tmp_path)
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml" in err and "not found" in err and err.count("\n") == 1

    assert main(["--check"]) == 0 and "OK" in capsys.readouterr().out
    assert main(["--check", "--config", str(PROJECT_ROOT / "configs" / "qwen2-vl-2b.yaml")]) == 0
    assert not any(tmp_path.iterdir())  # validation wrote nothing, fetched nothing


def test_model_as_an_hf_source_is_repo_revision_and_include():
    cfg = parse_config({**_dataset(), "model": "hf://Qwen/Qwen2-VL-2B-Instruct@refs%2Fpr%2F3/*.json"})
    assert (cfg.model.repo_id, cfg.model.revision, cfg.model.include) == ("Qwen/Qwen2-VL-2B-Instruct", "refs/pr/3",
                                                                          ("*.json",))
    assert parse_config({**_dataset(), "model": "hf://org/m"}).model.revision == "main"
    for bad, says in (("hf://datasets/org/d", "not a dataset"), ("hf://org", "hf://datasets/ORG/NAME")):
        with pytest.raises(ConfigError) as err:
            parse_config({**_dataset(), "model": bad})
        assert says in str(err.value) and "\n" not in str(err.value)
