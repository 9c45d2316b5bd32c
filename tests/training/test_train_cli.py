"""``python -m train_pipeline.training``: builders, training with overrides, one-line errors."""

from __future__ import annotations

import json

import pytest

from train_pipeline.training.__main__ import main
from train_pipeline.training.finetune import training_is_complete


def test_sample_data_command(tmp_path, capsys):
    from offline.__main__ import main as offline_main

    assert offline_main(["sample-data", str(tmp_path / "d"), "--images", "3", "--seed", "2"]) == 0
    assert len((tmp_path / "d" / "metadata.jsonl").read_text().splitlines()) == 3


@pytest.mark.slow
def test_train_command_with_config_file_and_overrides(tiny_model_dir, one_batch_data_dir, tmp_path, capsys):
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        "train:\n  max_steps: 5\n  per_device_train_batch_size: 4\n  gradient_accumulation_steps: 1\n"
        "  max_pixels: 12544\n  max_length: 256\n  lora: {r: 2}\n"
    )
    out = tmp_path / "out"
    code = main(["train", str(tiny_model_dir), str(one_batch_data_dir), str(out), "--config", str(config),
                 "--set", "max_steps=2", "--set", "lora.alpha=4"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 2 and result["is_adapter"]
    assert json.loads((out / "final" / "adapter_config.json").read_text())["lora_alpha"] == 4
    assert training_is_complete(out)


def test_bad_setting_is_one_line_exit_2(tiny_model_dir, one_batch_data_dir, tmp_path, capsys):
    code = main(["train", str(tiny_model_dir), str(one_batch_data_dir), str(tmp_path), "--set", "max_stepz=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "max_stepz" in err[0] and "unknown setting" in err[0]


def test_bad_data_dir_is_one_line_exit_2(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    code = main(["train", str(tiny_model_dir), str(tmp_path / "data"), str(tmp_path / "out"), "--set", "max_steps=1"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1 and "metadata.jsonl" in err[0]
