"""End-to-end training on CPU: it learns, writes its outputs, reloads, and is idempotent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from train_pipeline.training.collate import ChatCollator
from train_pipeline.training.settings import TrainConfig
from train_pipeline.training.dataset import DataError, load_examples
from train_pipeline.training.finetune import TrainResult, TrainSetupError, train, training_is_complete
from train_pipeline.training.metrics import read_metrics
from train_pipeline.training.processor import load_processor


def _batch_loss(model, processor, data_dir) -> float:
    examples, _ = load_examples(data_dir, instruction=TrainConfig().instruction)
    batch = ChatCollator(processor, max_length=256)(examples[:4])
    with torch.no_grad():
        return float(model(**batch).loss)


@pytest.mark.slow
def test_overfits_one_batch(tiny_model_dir, one_batch_data_dir, tmp_path, fast_config):
    config = fast_config(max_steps=20, save_steps=100, lr_scheduler_type="constant", learning_rate=5e-3)
    result = train(tiny_model_dir, one_batch_data_dir, tmp_path, config)
    losses = [row["loss"] for row in read_metrics(result.metrics_path)]
    assert len(losses) == 20
    assert losses[-1] < 0.25 * losses[0], losses
    assert sum(losses[-5:]) < sum(losses[:5]) / 3


def test_outputs_of_a_finished_run(finished_run):
    result, config, progress = finished_run
    assert result.steps == 6 and result.resumed_from_step is None and not result.is_adapter
    assert result.examples == 16 and result.skipped_rows == 0
    rows = read_metrics(result.metrics_path)
    assert [r["step"] for r in rows] == list(range(1, 7))
    for row in rows:
        assert row["loss"] > 0 and row["learning_rate"] > 0 and row["tokens_per_second"] > 0
        assert row["samples_per_second"] > 0 and row["grad_norm"] is not None
    assert result.final_loss == rows[-1]["loss"]
    assert [p.step for p in progress] == list(range(1, 7)) and progress[-1].total_steps == 6
    with Image.open(result.curve_path) as png:
        assert png.format == "PNG" and png.width > 100
    saved = json.loads((result.output_dir / "train_result.json").read_text())
    assert TrainResult.from_json(saved) == result
    assert json.loads(result.data_report_path.read_text())["usable_rows"] == 16
    assert sorted(p.name for p in result.output_dir.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]


def test_final_model_and_processor_reload(finished_run, tiny_model_dir, sample_data_dir):
    from transformers import AutoModelForImageTextToText

    result, _, _ = finished_run
    final = AutoModelForImageTextToText.from_pretrained(result.final_model_dir)
    processor = load_processor(result.final_model_dir)
    assert processor.chat_template and processor.image_token_id == final.config.image_token_id
    assert json.loads((result.final_model_dir / "processor_config.json").read_text())["processor_class"] == (
        "Qwen2VLProcessor"
    )
    base = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    # The trained weights were saved, not the base ones: the loss on training data is lower.
    assert _batch_loss(final, processor, sample_data_dir) < _batch_loss(base, processor, sample_data_dir) - 0.5


def test_finished_training_is_not_redone(finished_run, tiny_model_dir, sample_data_dir):
    result, config, _ = finished_run
    metrics_before = result.metrics_path.stat().st_mtime_ns
    assert training_is_complete(result.output_dir)
    assert training_is_complete(result.output_dir, config)
    assert not training_is_complete(result.output_dir, config.model_copy(update={"seed": 1}))
    again = train(tiny_model_dir, sample_data_dir, result.output_dir, config)
    assert again == result
    assert result.metrics_path.stat().st_mtime_ns == metrics_before


def test_other_config_in_same_output_dir_is_refused(finished_run, tiny_model_dir, sample_data_dir):
    result, config, _ = finished_run
    with pytest.raises(TrainSetupError) as info:
        train(tiny_model_dir, sample_data_dir, result.output_dir, config.model_copy(update={"learning_rate": 1e-4}))
    assert "other config" in str(info.value) and "new output_dir" in str(info.value)
    assert training_is_complete(result.output_dir, config)  # the refused call left it untouched


def test_one_training_per_output_dir(finished_run, tiny_model_dir, sample_data_dir):
    from filelock import FileLock

    result, config, _ = finished_run
    with FileLock(result.output_dir / ".train.lock"):  # as another process training there would hold it
        with pytest.raises(TrainSetupError, match="in use by another training"):
            train(tiny_model_dir, sample_data_dir, result.output_dir, config)
    assert train(tiny_model_dir, sample_data_dir, result.output_dir, config) == result


def test_training_is_complete_is_false_for_empty_or_partial_dirs(tmp_path, finished_run):
    import shutil

    result, config, _ = finished_run
    assert not training_is_complete(tmp_path)
    assert not training_is_complete(tmp_path / "missing")

    def finished_copy(name: str) -> Path:
        """The finished run's output folder, copied (train_result.json names its own folder)."""
        out = tmp_path / name
        shutil.copytree(result.output_dir, out, ignore=shutil.ignore_patterns("checkpoint-*"))
        record = out / "train_result.json"
        record.write_text(record.read_text().replace(str(result.output_dir), str(out)))
        return out

    assert training_is_complete(finished_copy("whole"), config)  # the copy as it is: complete
    for missing in ("train_result.json", "final", "final/model.safetensors", "final/processor_config.json"):
        out = finished_copy(missing.replace("/", "-"))
        gone = out / missing
        shutil.rmtree(gone) if gone.is_dir() else gone.unlink()
        assert not training_is_complete(out), missing
        assert not training_is_complete(out, config), missing
    other = config.model_copy(update={"max_steps": config.max_steps + 1})
    assert not training_is_complete(finished_copy("other-settings"), other)  # made with other settings


@pytest.mark.slow
def test_lora_adapter_trains_and_reloads(tiny_model_dir, one_batch_data_dir, tmp_path, fast_config):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    config = fast_config(
        max_steps=4, save_steps=100, lora={"r": 4, "alpha": 8, "dropout": 0.0}, freeze_vision=True,
        gradient_checkpointing=True, learning_rate=1e-2,
    )
    result = train(tiny_model_dir, one_batch_data_dir, tmp_path, config)
    assert result.is_adapter and (result.final_model_dir / "adapter_config.json").is_file()
    assert not (result.final_model_dir / "model.safetensors").exists()
    assert training_is_complete(tmp_path, config)
    base = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    processor = load_processor(result.final_model_dir)
    base_loss = _batch_loss(base, processor, one_batch_data_dir)
    tuned = PeftModel.from_pretrained(base, result.final_model_dir)
    assert _batch_loss(tuned, processor, one_batch_data_dir) < base_loss


@pytest.mark.slow
def test_frozen_vision_tower_stays_put(tiny_model_dir, one_batch_data_dir, tmp_path, fast_config):
    from transformers import AutoModelForImageTextToText

    config = fast_config(max_steps=2, save_steps=100, freeze_vision=True)
    result = train(tiny_model_dir, one_batch_data_dir, tmp_path, config)
    before = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).state_dict()
    after = AutoModelForImageTextToText.from_pretrained(result.final_model_dir).state_dict()
    vision = [k for k in before if ".visual." in k]
    text = [k for k in before if ".language_model.layers." in k]
    assert vision and text
    assert all(torch.equal(before[k], after[k]) for k in vision)
    assert not all(torch.equal(before[k], after[k]) for k in text)


def test_bad_inputs_fail_before_training(tiny_model_dir, sample_data_dir, tmp_path, fast_config):
    with pytest.raises(TrainSetupError, match="has no config.json"):
        train(tmp_path, sample_data_dir, tmp_path / "out", fast_config())
    (tmp_path / "no-data").mkdir()
    with pytest.raises(DataError, match="no known dataset layout"):
        train(tiny_model_dir, tmp_path / "no-data", tmp_path / "out", fast_config())
    too_big = fast_config(max_pixels=1280 * 28 * 28, max_length=256)
    with pytest.raises(DataError, match="raise max_length or lower max_pixels"):
        train(tiny_model_dir, sample_data_dir, tmp_path / "out", too_big)
