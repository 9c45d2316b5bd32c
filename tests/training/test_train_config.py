"""TrainConfig validation: defaults are valid, bad settings give one line naming them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from train_pipeline.training.settings import TrainConfig, TrainConfigError, parse_train_config


def test_defaults_are_valid_and_hashable():
    cfg = parse_train_config(None)
    assert cfg == TrainConfig()
    assert cfg.max_steps == -1 and cfg.bf16 == "auto" and cfg.lora is None
    assert hash(parse_train_config({"lora": {}})) == hash(parse_train_config({"lora": {}}))


def test_yaml_style_mapping_round_trips():
    data = {"max_steps": 20, "lora": {"r": 4, "target_modules": ["q_proj"]}, "bf16": False}
    cfg = parse_train_config(data)
    assert cfg.lora is not None and cfg.lora.target_modules == ("q_proj",)
    assert parse_train_config(cfg.model_dump(mode="json")) == cfg


@pytest.mark.parametrize(
    ("data", "names"),
    [
        ({"max_stepz": 3}, ["max_stepz", "unknown setting"]),
        ({"learning_rate": 0}, ["learning_rate"]),
        ({"max_steps": 0}, ["max_steps is 0"]),
        ({"max_steps": -2}, ["max_steps"]),
        ({"per_device_train_batch_size": 0}, ["per_device_train_batch_size"]),
        ({"min_pixels": 10_000, "max_pixels": 100}, ["min_pixels", "max_pixels"]),
        ({"bf16": "sometimes"}, ["bf16"]),
        ({"lora": {"r": 0}}, ["lora.r"]),
        ({"lora": {"rank": 8}}, ["lora.rank", "unknown setting"]),
        ({"lora": {"target_modules": []}}, ["lora.target_modules"]),
        ({"caption_field": "file_name"}, ["caption_field is now fields.caption"]),
        ({"fields": {"image": "a", "caption": "a"}}, ["fields", "image and caption are both 'a'"]),
        ({"fields": {"imag": "a"}}, ["fields.imag", "unknown setting"]),
        ({"format": "csv"}, ["format", "parquet"]),
        ({"split": "a/b"}, ["split"]),
        ({"datasets": {"ads": {"weight": -1}}}, ["datasets.0.weight"]),
        ({"datasets": {"ads": 2}}, ["datasets", "ads: expected a mapping"]),
        ({"eval": {"fraction": 1.5}}, ["eval.fraction"]),
        ({"eval": {"dataset": "a", "fraction": 0.1}}, ["eval", "exactly one"]),
    ],
)
def test_bad_settings_give_one_line_naming_them(data, names):
    with pytest.raises(TrainConfigError) as info:
        parse_train_config(data, source="configs/pipeline.yaml:train")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("configs/pipeline.yaml:train: ")
    for name in names:
        assert name in message


def test_config_import_stays_light():
    # The flow validates config and checks training_is_complete before anything heavy loads.
    code = (
        "import sys, train_pipeline.training.settings, train_pipeline.training.finetune;"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'prefect') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
