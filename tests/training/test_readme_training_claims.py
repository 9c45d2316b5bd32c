"""train_pipeline/training/README.md claims reached through the public API (`train`), that no other
test covered:

- ``run.json``: a resume with other data, another model configuration, other settings or another
  world size is refused
  with one line (and ``resume: false`` starts over there, as that line says), also a model whose
  weights differ at the same shapes;
- bf16 ``"auto"``: fp32 on CPU -- the same per-step losses as ``bf16: false``, while ``bf16: true``
  (autocast) gives others;
- a row whose images could exceed ``max_length`` in image tokens is dropped and reported;
- trying it offline: ``python -m offline tiny-model DEST`` and ``sample-data DEST``, then
  ``python -m train_pipeline.training train MODEL DATA OUT --set ...`` (the entry points in-process).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from data_builders import billboards, write_json

from train_pipeline.training.finetune import TrainSetupError, train
from train_pipeline.training.metrics import read_metrics, train_rows


def _losses(out: Path) -> list[float]:
    return [r["loss"] for r in train_rows(read_metrics(out / "metrics.jsonl"))]


def _interrupted(out: Path) -> None:
    """The state a kill right after the last checkpoint leaves: checkpoints, no final/ or result."""
    shutil.rmtree(out / "final")
    (out / "train_result.json").unlink()
    assert any(p.name.startswith("checkpoint-") for p in out.iterdir())


@pytest.fixture(scope="module")
def trained(tiny_model_dir, one_batch_data_dir, tmp_path_factory, fast_config):
    """One step on one batch, checkpointed: the run a resume must match."""
    config = fast_config(max_steps=1, save_steps=1, logging_steps=1)
    out = tmp_path_factory.mktemp("readme-run-json")
    train(tiny_model_dir, one_batch_data_dir, out, config)
    return out, config


@pytest.fixture
def interrupted(trained, tmp_path):
    out, config = trained
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    _interrupted(copy)
    return copy, config


def _other_config_model(tiny_model_dir: Path, tmp_path: Path) -> Path:
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    config = json.loads((other / "config.json").read_text())
    config["initializer_range"] = 0.05  # another model configuration (a value training does not use)
    (other / "config.json").write_text(json.dumps(config))
    return other


@pytest.mark.slow
@pytest.mark.parametrize("change", ["other data", "another model configuration", "other settings",
                                    "another world size"])
def test_run_json_refuses_a_resume_with_other_inputs(interrupted, tiny_model_dir, one_batch_data_dir, sample_data_dir,
                                                     tmp_path, change):
    out, config = interrupted
    model, data, expected = tiny_model_dir, one_batch_data_dir, "inputs (model or data)"
    if change == "other data":
        data = sample_data_dir
    elif change == "another model configuration":
        model = _other_config_model(tiny_model_dir, tmp_path)
    elif change == "other settings":
        config, expected = config.model_copy(update={"learning_rate": 1e-3}), "config"
    else:  # README.md, Several GPUs: refused before any worker starts (it would change the global batch)
        from train_pipeline.training.settings import parse_train_config

        config = parse_train_config({**config.model_dump(mode="json"), "distributed": {"nproc_per_node": 2}})
        expected = "world size or strategy (1 processes, ddp; this run: 2, ddp"
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(TrainSetupError) as err:
        train(model, data, out, config)
    message = str(err.value)
    assert "\n" not in message and f"holds checkpoints of a training with other {expected}" in message, message
    assert "set resume: false to start over there" in message
    assert sorted(p.name for p in out.iterdir()) == before  # nothing touched


@pytest.mark.slow
def test_resume_false_starts_over_in_an_output_of_other_inputs(interrupted, tiny_model_dir, sample_data_dir):
    out, config = interrupted
    result = train(tiny_model_dir, sample_data_dir, out, config.model_copy(update={"resume": False}))
    assert result.resumed_from_step is None and result.steps == 1
    assert json.loads((out / "data_report.json").read_text())["train_examples"] == 16  # the new data's rows


@pytest.mark.slow
def test_run_json_refuses_a_resume_with_another_model_of_the_same_shapes(interrupted, one_batch_data_dir,
                                                                         tmp_path_factory):
    from offline.tiny_model import build_tiny_qwen2vl

    out, config = interrupted
    other = build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl-seed1"), seed=1)  # other random weights
    with pytest.raises(TrainSetupError):
        train(other, one_batch_data_dir, out, config)


@pytest.mark.slow
def test_bf16_auto_is_fp32_on_cpu(tiny_model_dir, one_batch_data_dir, tmp_path, fast_config):
    import torch

    if torch.cuda.is_available():
        pytest.skip("on CUDA, auto means bf16")
    losses = {}
    for bf16 in ("auto", False, True):
        out = tmp_path / str(bf16)
        config = fast_config(max_steps=2, save_steps=2, logging_steps=1, bf16=bf16)
        train(tiny_model_dir, one_batch_data_dir, out, config)
        losses[bf16] = _losses(out)
        args = torch.load(out / "checkpoint-2" / "training_args.bin", weights_only=False)  # Trainer's own record
        assert args.bf16 is (bf16 is True), (bf16, args.bf16)
    assert len(losses["auto"]) == 2
    assert losses["auto"] == losses[False]  # exactly fp32
    assert losses[True] != losses[False]  # autocast on CPU would show


@pytest.mark.slow
def test_the_offline_builders_then_the_train_command(tmp_path, capsys):
    from offline.__main__ import main as offline_main
    from train_pipeline.training.__main__ import main as train_main

    assert offline_main(["tiny-model", str(tmp_path / "model")]) == 0
    assert offline_main(["sample-data", str(tmp_path / "data"), "--images", "4"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "model"), str(tmp_path / "data")]
    code = train_main(["train", str(tmp_path / "model"), f"ads={tmp_path / 'data'}", str(tmp_path / "out"),
                       "--set", "max_steps=1", "--set", "per_device_train_batch_size=4", "--set", "max_pixels=12544",
                       "--set", "max_length=256"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 1 and result["datasets"] == ["ads"]
    assert (tmp_path / "out" / "final" / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_row_whose_images_could_exceed_max_length_is_dropped_and_reported(tiny_model_dir, one_batch_data_dir,
                                                                            tmp_path, fast_config):
    """max_pixels 112x112 = 16 image tokens an image; with max_length 64, three images (48 + 32 for the
    text) could not fit: that row is dropped and reported, the single-image rows train."""
    rows = billboards(one_batch_data_dir)
    data = tmp_path / "chats"
    (data / "img").mkdir(parents=True)
    for image, _ in rows:
        shutil.copy(image, data / "img" / image.name)
    names = [f"img/{image.name}" for image, _ in rows]
    records = [{"messages": [{"role": "user", "content": "<image>What does it show?"},
                             {"role": "assistant", "content": caption}], "images": [name]}
               for name, (_, caption) in zip(names, rows)]
    records.append({"messages": [{"role": "user", "content": "<image><image><image>Compare them."},
                                 {"role": "assistant", "content": "three billboards"}], "images": names[:3]})
    write_json(data / "chats.json", records)

    result = train(tiny_model_dir, data, tmp_path / "out", fast_config(max_steps=1, save_steps=1, max_length=64))
    assert result.examples == 4 and result.skipped_rows == 1
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    (dropped,) = report["dropped_for_length"]
    assert "3 images, up to 48 image tokens, over max_length 64" in dropped, dropped
