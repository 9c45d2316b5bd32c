"""The flow trains on every dataset of the run (an imagefolder archive and a parquet file here),
and the train step's cache key follows every dataset's content and the data settings."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

ARCHIVE = "billboards.tar.gz"
SHARD = "train-00000-of-00001.parquet"


def _key(**inputs) -> str:
    from tasks.train import train

    return train.cache_policy.key_for(train, inputs)


def _inputs(**changes):
    from resumable.extract import ExtractResult
    from resumable.hub import SnapshotResult
    from train_pipeline.training.settings import parse_train_config

    model = SnapshotResult(Path("/m/abc"), "org/tiny", "main", "a" * 40, 3, 100, 100, "downloaded")
    archive = ExtractResult(Path("/data/ads"), "tar.gz", 7, 900, "extracted", "sha256:" + "1" * 64)
    data = {"ads": {"folders": ["/data/ads"], "content": [archive]},
            "shards": {"folders": ["/data/downloads/shards"], "content": [(SHARD, "sha256:" + "2" * 64)]}}
    inputs = {"model": model, "data": data, "output_dir": "/results/tiny-ads+shards",
              "config": parse_train_config({"max_steps": 3})}
    return inputs | changes


def test_train_cache_key_follows_each_dataset_and_the_data_settings():
    from train_pipeline.training.settings import parse_train_config

    base = _inputs()
    key = _key(**base)
    ads = base["data"]["ads"]["content"][0]
    # How the inputs were obtained does not count: the same archive, found cached this time.
    same = {**base["data"], "ads": {"folders": ["/data/ads"], "content": [replace(ads, status="cached")]}}
    assert _key(**(base | {"data": same})) == key
    # What they are does.
    changed = {
        "another archive": {**base["data"], "ads": {"folders": ["/data/ads"], "content": [replace(
            ads, archive_digest="sha256:" + "9" * 64)]}},
        "another shard": {**base["data"], "shards": {"folders": ["/data/downloads/shards"],
                                                     "content": [(SHARD, "sha256:" + "3" * 64)]}},
        "a third dataset": {**base["data"], "more": {"folders": ["/data/more"], "content": [ads]}},
        "a dataset less": {"ads": base["data"]["ads"]},
    }
    for why, data in changed.items():
        assert _key(**(base | {"data": data})) != key, why
    for settings in ({"datasets": {"shards": {"weight": 2}}}, {"eval": {"fraction": 0.1}},
                     {"fields": {"caption": "caption"}}, {"format": "parquet"}, {"split": "validation"}):
        assert _key(**(base | {"config": parse_train_config({"max_steps": 3, **settings})})) != key, settings


def _parquet_shard(folder: Path, n: int) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()][:n]
    table = pa.table({"image": [{"bytes": (folder / r["file_name"]).read_bytes(), "path": r["file_name"]} for r in rows],
                      "text": [r["text"] for r in rows]})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


@pytest.mark.slow
def test_the_flow_trains_on_every_dataset_and_retrains_when_their_settings_change(
        tmp_path, dataset_config, served, dataset_archive, sample_build_dir, run_pipeline, task_states):
    from offline.hub_server import HubServer
    from offline.sample import SAMPLE_REPO
    from offline.sample_data import build_sample_dataset

    shard = _parquet_shard(build_sample_dataset(tmp_path / "src", n_images=5, seed=3), 5)
    (served.root / SHARD).write_bytes(shard)
    train = {"max_steps": 2, "save_steps": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
             "max_pixels": 12544, "min_pixels": 3136, "max_length": 256, "eval": {"fraction": 0.2, "steps": 1}}
    with HubServer(sample_build_dir / "hub") as hub:
        def config(**train_changes):
            return dataset_config(
                model={"repo_id": SAMPLE_REPO, "endpoint": hub.endpoint},
                datasets=[
                    {"name": "billboards", "extract_to": "billboards",
                     "files": [{"url": served.url(ARCHIVE), "size": dataset_archive.size, "hash": dataset_archive.hash}]},
                    {"name": "shards", "files": [{"url": served.url(SHARD), "size": len(shard),
                                                  "hash": "sha256:" + hashlib.sha256(shard).hexdigest()}]},
                ],
                train={**train, **train_changes})

        state = run_pipeline(config())
        assert state.is_completed(), state.message
        assert task_states(state.state_details.flow_run_id)["train"] == "Completed"
        out = Path(state.result()["final_model_dir"]).parent
        assert out.name == "tiny-qwen2-vl-billboards+shards"
        report = json.loads((out / "data_report.json").read_text())
        assert [(d["name"], d["format"], d["usable_rows"]) for d in report["datasets"]] == [
            ("billboards", "imagefolder", 6), ("shards", "parquet", 5)]
        assert report["eval_examples"] == 2 and report["train_examples"] == 9
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in metrics if "eval_loss" in r] == [1, 2]

        again = run_pipeline(config())
        assert set(task_states(again.state_details.flow_run_id).values()) == {"Cached"}

        reweighted = run_pipeline(config(datasets={"shards": {"weight": 2}}, resume=False))
        assert reweighted.is_completed(), reweighted.message
        states = task_states(reweighted.state_details.flow_run_id)
        assert states.pop("train") == "Completed" and set(states.values()) == {"Cached"}
        report = json.loads((out / "data_report.json").read_text())
        assert report["train_examples"] == 5 + 2 * 4


def _load(tmp_path, datasets, train):
    import yaml

    from train_pipeline.config import load_config

    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"model": {"repo_id": "org/tiny"}, "datasets": datasets, "train": train,
                                    "data_dir": str(tmp_path / "data"), "results_dir": str(tmp_path / "results"),
                                    "models_cache": str(tmp_path / "models")}))
    return load_config(path), path


ADS = {"name": "ads", "extract_to": "ads", "files": [{"url": "https://h.example/ads.tar.gz"}]}
SHARDS = {"name": "shards", "files": [{"url": "https://h.example/data/train-00000-of-00002.parquet"},
                                      {"url": "https://h.example/data/train-00001-of-00002.parquet"}]}
NOTES = {"name": "notes", "files": [{"url": "https://h.example/notes.txt"}]}


@pytest.mark.parametrize(("datasets", "train", "expected"), [
    ([ADS, SHARDS], {}, None),
    ([ADS, SHARDS, NOTES], {}, "datasets.2: training reads every dataset of the run, but 'notes' has no archive"),
    ([ADS, SHARDS, NOTES], {"datasets": {"notes": {"weight": 0}}}, None),
    ([ADS, {**SHARDS, "files": [{"url": "https://h.example/a.zip"}]}], {}, "'shards' has archives and no extract_to"),
    ([ADS, SHARDS], {"datasets": {"shard": {"weight": 2}}}, "train.datasets: 'shard' is not a dataset of this run"),
    ([ADS, SHARDS], {"eval": {"dataset": "ad"}}, "train.eval.dataset: 'ad' is not a dataset of this run (ads, shards)"),
    ([ADS, SHARDS], {"eval": {"dataset": "shards"}, "datasets": {"ads": {"weight": 0}}}, "no dataset left to train on"),
])
def test_the_config_check_knows_what_training_reads(tmp_path, datasets, train, expected):
    from train_pipeline.config import ConfigError

    if expected is None:
        cfg, _ = _load(tmp_path, datasets, train)
        assert cfg.train is not None
        return
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, datasets, train)
    assert "\n" not in str(err.value) and expected in str(err.value), str(err.value)


def test_the_training_output_is_named_after_every_dataset(tmp_path):
    from train_pipeline.config.locations import training_output

    assert training_output(tmp_path, "org/tiny", "ads").name == "tiny-ads"
    assert training_output(tmp_path, "org/tiny", ["ads", "shards"]).name == "tiny-ads+shards"
    many = [f"dataset_number_{i}" for i in range(12)]
    name = training_output(tmp_path, "org/tiny", many).name
    assert name.startswith("tiny-dataset_number_0+11-more-") and len(name) < 60
    assert name != training_output(tmp_path, "org/tiny", many[:-1] + ["other"]).name
