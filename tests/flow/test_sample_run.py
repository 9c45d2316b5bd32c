"""The offline sample, end to end through the real code paths: model snapshot via the Hub API
from a local Hub-compatible server, fetch + verify + extract of the dataset archive from a local
file server, an hf://datasets/... source of parquet shards from the same Hub look-alike, then
training on both datasets (a few steps here)."""

from __future__ import annotations

import json

import pytest

from train_pipeline.config import SAMPLE_CONFIG, parse_config, read_yaml

pytestmark = pytest.mark.slow


def _sample_config(tmp_path, build_dir):
    data = read_yaml(SAMPLE_CONFIG)
    data["sample"] = {"n_images": 8, "seed": 0, "build_dir": str(build_dir)}
    data["train"] = {**data["train"], "max_steps": 3, "save_steps": 2, "per_device_train_batch_size": 2}
    for key in ("models_cache", "data_dir", "results_dir"):
        data[key] = str(tmp_path / key)
    return parse_config(data, "sample profile (test)")


def _artifacts(flow_run_id, key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return [a for a in arts if a.key == key]


def test_sample_pipeline_end_to_end_then_cached_then_only_the_deleted_model_file(
        tmp_path, sample_build_dir, run_pipeline, task_states):
    cfg = _sample_config(tmp_path, sample_build_dir)
    state = run_pipeline(cfg)
    assert state.is_completed(), state.message
    result = state.result()
    assert task_states(state.state_details.flow_run_id) == dict.fromkeys(
        ("snapshot", "fetch", "verify", "extract", "hf", "train"), "Completed")
    final = tmp_path / "results_dir" / "tiny-qwen2-vl-outdoor_advertising_sample+billboard_parquet_sample" / "final"
    assert result["final_model_dir"] == str(final)
    assert (final / "model.safetensors").is_file() and (final / "processor_config.json").is_file()
    assert (tmp_path / "data_dir" / "outdoor_advertising_sample" / "outdoor_advertising_sample" / "metadata.jsonl").is_file()
    shards = sorted(p.name for p in (tmp_path / "data_dir" / "downloads" / "billboard_parquet_sample" / "data").iterdir()
                    if not p.name.startswith("."))
    assert shards == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    report = json.loads((final.parent / "data_report.json").read_text())
    assert {d["name"]: d["format"] for d in report["datasets"]} == {
        "outdoor_advertising_sample": "imagefolder", "billboard_parquet_sample": "parquet"}
    training = _artifacts(state.state_details.flow_run_id, "training-summary")
    assert len(training) == 1 and "final loss" in training[0].data and "data:image/png;base64," in training[0].data

    # A second run finds every step done.
    state = run_pipeline(cfg)
    assert state.is_completed(), state.message
    assert set(task_states(state.state_details.flow_run_id).values()) == {"Cached"}

    # A file of the model snapshot deleted: only the snapshot runs again (training stays Cached,
    # the snapshot it trained on being the same commit and files again).
    weights = next((tmp_path / "models_cache").rglob("model.safetensors"))
    weights.unlink()
    state = run_pipeline(cfg)
    assert state.is_completed(), state.message
    assert task_states(state.state_details.flow_run_id) == {
        "snapshot": "Completed", "fetch": "Cached", "verify": "Cached", "extract": "Cached", "hf": "Cached",
        "train": "Cached"}
    assert weights.is_file()


def test_command_line_runs_the_profile_and_prints_the_summary(tmp_path, sample_build_dir, prefect_server, capsys):
    """`python flows/pipeline.py --config FILE` (in-process here, on the session's server)."""
    import yaml

    from flows.pipeline import main

    cfg = _sample_config(tmp_path, sample_build_dir)
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
    assert main(["--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "outdoor_advertising_sample.tar.gz" in out and "downloaded" in out and "sha256:" in out
    assert "hf://datasets/train-pipeline/billboard-parquet@main/data/*.parquet (2 files)" in out
    _assert_outputs_named(out.splitlines()[-6:], tmp_path)
    first_source = _source_of_archive(out)
    assert main(["--config", str(path)]) == 0  # again: everything Cached, nothing transferred
    out = capsys.readouterr().out
    assert "cached" in out and "3 item(s), 0 B transferred" in out
    _assert_outputs_named(out.splitlines()[-6:], tmp_path)  # also when training was Cached
    # The sample's servers listen on new ports each run: a cached row names this run's, not the first's.
    assert _source_of_archive(out) != first_source


def _source_of_archive(out: str) -> str:
    row = next(line for line in out.splitlines() if line.startswith("outdoor_advertising_sample.tar.gz "))
    return row.split()[3]  # file, size (2 words), source


def _assert_outputs_named(last: list[str], tmp_path) -> None:
    """The run's last lines say where its outputs are, each of them in place."""
    out = tmp_path / "results_dir" / "tiny-qwen2-vl-outdoor_advertising_sample+billboard_parquet_sample"
    named = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in last}
    assert named["final model"].startswith(f"{out / 'final'}  (AutoProcessor needs torchvision"), last
    assert named["loss curve"] == str(out / "loss_curve.png") and (out / "loss_curve.png").is_file()
    assert named["metrics"] == str(out / "metrics.jsonl") and (out / "metrics.jsonl").is_file()
    assert named["dataset billboard_parquet_sample"] == str(tmp_path / "data_dir" / "downloads" / "billboard_parquet_sample")
    assert named["model snapshot"].startswith(str(tmp_path / "models_cache"))
