"""Training on every dataset of the run (imagefolder + parquet + ShareGPT here), mixed by weight,
with an eval split whose loss lands in metrics.jsonl, the loss curve and the result."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from data_builders import parquet_dataset, sharegpt_dataset
from train_pipeline.training.__main__ import main
from train_pipeline.training.dataset import DatasetSource
from train_pipeline.training.finetune import train, training_is_complete
from train_pipeline.training.metrics import eval_rows, read_metrics, train_rows


@pytest.mark.slow
def test_trains_on_every_dataset_and_evaluates_every_n_steps(tiny_model_dir, sample_data_dir, tmp_path, fast_config):
    shards = parquet_dataset(sample_data_dir, tmp_path / "shards", n=6)
    demo = sharegpt_dataset(sample_data_dir, tmp_path / "demo", n=4)
    sources = [DatasetSource("ads", (sample_data_dir,)), DatasetSource("shards", (shards,)),
               DatasetSource("demo", (demo,))]
    config = fast_config(max_steps=6, save_steps=3, datasets={"shards": {"weight": 2}},
                         eval={"fraction": 0.2, "steps": 2})
    progress: list = []
    result = train(tiny_model_dir, sources, tmp_path / "out", config, progress=progress.append)

    # held out: 3 of 16, 1 of 6, 1 of 4; trained: 13 + 2 x 5 + 3
    assert result.datasets == ("ads", "shards", "demo")
    assert result.examples == 26 and result.eval_examples == 5
    report = json.loads(result.data_report_path.read_text())
    assert [(d["name"], d["format"], d["train_examples"], d["eval_examples"]) for d in report["datasets"]] == [
        ("ads", "imagefolder", 13, 3), ("shards", "parquet", 10, 1), ("demo", "sharegpt", 3, 1)]

    rows = read_metrics(result.metrics_path)
    assert [r["step"] for r in train_rows(rows)] == [1, 2, 3, 4, 5, 6]
    evals = eval_rows(rows)
    assert [r["step"] for r in evals] == [2, 4, 6] and all(r["eval_loss"] > 0 for r in evals)
    assert result.eval_loss == evals[-1]["eval_loss"] and result.final_loss == train_rows(rows)[-1]["loss"]
    assert [p.step for p in progress if p.eval_loss is not None] == [2, 4, 6]
    with Image.open(result.curve_path) as png:
        assert png.format == "PNG"
    assert training_is_complete(tmp_path / "out", config)


@pytest.mark.slow
def test_command_line_takes_several_named_datasets(tiny_model_dir, sample_data_dir, tmp_path, capsys):
    shards = parquet_dataset(sample_data_dir, tmp_path / "shards", n=4)
    out = tmp_path / "out"
    code = main(["train", str(tiny_model_dir), f"ads={sample_data_dir}", f"shards={shards}", str(out),
                 "--set", "max_steps=2", "--set", "per_device_train_batch_size=4", "--set", "gradient_accumulation_steps=1",
                 "--set", "max_pixels=12544", "--set", "max_length=256", "--set", "datasets.shards.weight=0.5",
                 "--set", "eval.dataset=shards", "--set", "eval.steps=1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["datasets"] == ["ads", "shards"]
    assert "eval_loss" in captured.err  # the progress lines
    report = json.loads((out / "data_report.json").read_text())
    assert [(d["name"], d["role"], d["train_examples"], d["eval_examples"]) for d in report["datasets"]] == [
        ("ads", "train", 16, 0), ("shards", "eval", 0, 4)]
    assert [r["step"] for r in eval_rows(read_metrics(out / "metrics.jsonl"))] == [1, 2]
