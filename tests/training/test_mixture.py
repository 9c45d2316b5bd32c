"""Every dataset of the run is used: concatenated, or mixed by weight; an eval split held out
with a fixed seed (a fraction of each dataset, or a whole dataset); a fingerprint that changes
with any row or image, so a resume never continues on other data."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest

from data_builders import parquet_dataset, png, sharegpt_dataset, write_parquet
from train_pipeline.training.dataset import DataError, DatasetSource, as_sources, load_run_data
from train_pipeline.training.settings import TrainConfigError, parse_train_config


@pytest.fixture
def three(sample_data_dir, tmp_path):
    """ads (imagefolder, 16 rows), shards (parquet, 6 rows), demo (sharegpt, 4 rows)."""
    shards = parquet_dataset(sample_data_dir, tmp_path / "shards", n=6)
    demo = sharegpt_dataset(sample_data_dir, tmp_path / "demo", n=4)
    return [DatasetSource("ads", (sample_data_dir,)), DatasetSource("shards", (shards,)), DatasetSource("demo", (demo,))]


def _origins(examples):
    return [e.origin for e in examples]


def test_every_dataset_is_concatenated_by_default(three):
    data = load_run_data(three, parse_train_config({}))
    assert len(data.train) == 16 + 6 + 4 and not data.eval
    assert [(u.name, u.role, u.train) for u in data.uses] == [("ads", "train", 16), ("shards", "train", 6),
                                                               ("demo", "train", 4)]
    report = data.report_dict()
    assert [d["format"] for d in report["datasets"]] == ["imagefolder", "parquet", "sharegpt"]
    assert report["train_examples"] == 26 and report["usable_rows"] == 26


def test_weights_repeat_or_sample_each_dataset(three):
    config = parse_train_config({"datasets": {"ads": {"weight": 0.5}, "shards": {"weight": 2.5}, "demo": {"weight": 0}}})
    data = load_run_data(three, config)
    counts = {u.name: u.train for u in data.uses}
    assert counts == {"ads": 8, "shards": 15, "demo": 0}
    assert [u.role for u in data.uses] == ["train", "train", "unused"] and data.uses[2].report is None  # not read
    per_row = Counter(_origins(data.train))
    shard_rows = [o for o in per_row if o.startswith("data/")]
    assert sorted(per_row[o] for o in shard_rows) == [2, 2, 2, 3, 3, 3]  # 2 copies each + 3 rows once more
    assert len({o for o in per_row if o.startswith("metadata")}) == 8  # half of ads, each once
    again = load_run_data(three, config)  # a fixed-seed choice: the same lists every time
    assert _origins(again.train) == _origins(data.train)
    other_seed = load_run_data(three, config.model_copy(update={"seed": 1}))
    assert _origins(other_seed.train) != _origins(data.train)


def test_eval_fraction_is_held_out_of_every_training_dataset(three):
    config = parse_train_config({"eval": {"fraction": 0.25, "steps": 2}})
    data = load_run_data(three, config)
    assert [(u.name, u.eval) for u in data.uses] == [("ads", 4), ("shards", 2), ("demo", 1)]
    assert len(data.eval) == 7 and len(data.train) == 26 - 7
    assert not set(map(id, data.eval)) & set(map(id, data.train))  # no held-out row is trained on
    assert _origins(load_run_data(three, config).eval) == _origins(data.eval)
    capped = load_run_data(three, parse_train_config({"eval": {"fraction": 0.25, "max_examples": 3}}))
    assert len(capped.eval) == 3 and set(_origins(capped.eval)) <= set(_origins(data.eval))


def test_eval_dataset_is_read_for_evaluation_only(three):
    data = load_run_data(three, parse_train_config({"eval": {"dataset": "demo"}}))
    assert len(data.eval) == 4 and len(data.train) == 22
    assert [u.role for u in data.uses] == ["train", "train", "eval"]


@pytest.mark.parametrize(("settings", "expected"), [
    ({"datasets": {"nope": {"weight": 2}}}, "train.datasets: 'nope' is not a dataset of this run (ads, shards, demo)"),
    ({"eval": {"dataset": "nope"}}, "train.eval.dataset: 'nope' is not a dataset of this run"),
    ({"datasets": {"ads": {"weight": 0}, "shards": {"weight": 0}}, "eval": {"dataset": "demo"}}, "no dataset left"),
    ({"datasets": {"demo": {"weight": 0.1}}, "eval": {"dataset": "ads"}}, None),
])
def test_settings_that_do_not_fit_the_run_are_one_line_errors(three, settings, expected):
    config = parse_train_config(settings)
    if expected is None:
        sources = [three[0], three[2]]
        with pytest.raises(DataError, match="weights leave no training example"):  # 0.1 x 4 rows rounds to 0
            load_run_data(sources, config)
        return
    with pytest.raises(DataError) as err:
        load_run_data(three, config)
    assert "\n" not in str(err.value) and expected in str(err.value)


def test_per_dataset_fields_and_format(sample_data_dir, tmp_path):
    odd = tmp_path / "odd"
    write_parquet(odd / "x.parquet", {"pic": [png(), png((0, 0, 9))], "label": ["A sign.", "Another sign."]})
    sources = [DatasetSource("ads", (sample_data_dir,)), DatasetSource("odd", (odd,))]
    with pytest.raises(DataError, match="columns found: pic, label"):
        load_run_data(sources, parse_train_config({}))
    config = parse_train_config({"datasets": {"odd": {"format": "parquet", "fields": {"image": "pic", "caption": "label"}}}})
    data = load_run_data(sources, config)
    assert len(data.train) == 18 and data.train[-1].messages[-1]["content"][0]["text"] == "Another sign."


def test_fingerprint_follows_rows_and_image_bytes(sample_data_dir, tmp_path):
    copy = tmp_path / "ads"
    shutil.copytree(sample_data_dir, copy)
    config = parse_train_config({})
    first = load_run_data([DatasetSource("ads", (copy,))], config).fingerprint
    assert load_run_data([DatasetSource("ads", (copy,))], config).fingerprint == first
    image = sorted(copy.glob("*.png"))[0]
    image.write_bytes(png((1, 1, 1)))  # same file name, other picture
    changed = load_run_data([DatasetSource("ads", (copy,))], config).fingerprint
    assert changed != first
    assert load_run_data([DatasetSource("other", (copy,))], config).fingerprint != changed  # the name counts too


def test_sources_from_paths_names_and_mappings(sample_data_dir, tmp_path):
    assert as_sources(sample_data_dir) == [DatasetSource(sample_data_dir.name, (sample_data_dir,))]
    assert as_sources([f"ads={sample_data_dir}"]) == [DatasetSource("ads", (sample_data_dir,))]
    assert as_sources({"ads": [sample_data_dir, tmp_path]}) == [DatasetSource("ads", (sample_data_dir, tmp_path))]
    with pytest.raises(DataError, match="two datasets are named 'x'"):
        as_sources([f"x={sample_data_dir}", f"x={tmp_path}"])


def test_a_dataset_spread_over_several_folders(sample_data_dir, tmp_path):
    """An extracted archive and the downloads folder of the same dataset: both are read; a
    folder with no data (the downloaded archive itself) is passed over."""
    shards = parquet_dataset(sample_data_dir, tmp_path / "downloads", n=3, shards=1)
    (shards / "ads.tar.gz").write_bytes(b"an archive, extracted elsewhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("no data here")
    data = load_run_data([DatasetSource("ads", (sample_data_dir, shards, tmp_path / "empty"))], parse_train_config({}))
    assert len(data.train) == 16 + 3 and data.uses[0].report.format == "imagefolder+parquet"


def test_data_settings_validation():
    with pytest.raises(TrainConfigError, match="caption_field is now fields.caption"):
        parse_train_config({"caption_field": "caption"})
    with pytest.raises(TrainConfigError, match="set exactly one of eval.dataset"):
        parse_train_config({"eval": {"steps": 5}})
    with pytest.raises(TrainConfigError, match="'ads' is listed twice"):
        parse_train_config({"datasets": [{"name": "ads"}, {"name": "ads", "weight": 2}]})
    with pytest.raises(TrainConfigError, match="image_dir"):
        parse_train_config({"image_dir": "../images"})
    config = parse_train_config({"fields": {"image": "img"}, "datasets": {"b": {"fields": {"caption": "c"}, "split": "test"}}})
    b = config.dataset_settings("b")
    assert (b.fields.image, b.fields.caption, b.split, b.format) == ("img", "c", "test", "auto")
    assert parse_train_config(config.model_dump(mode="json")) == config  # YAML round trip (the run.json record)
