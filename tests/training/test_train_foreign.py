"""Training writes only what is its own: files others put into its output folder (or into final/)
survive a new training there, a file in the way of the new final model stops it before anything
is replaced, and the output folder can never be (or hold) the model or data folder it reads."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from resumable.foreign import ForeignFileError
from train_pipeline.training.finetune import TrainSetupError, train, training_is_complete


def _snapshot(paths):
    return {p: (p.read_bytes(), p.stat().st_ino) for p in paths}


@pytest.mark.slow
def test_a_new_training_keeps_others_files_in_its_output_folder(tiny_model_dir, one_batch_data_dir, tmp_path,
                                                                 fast_config):
    out = tmp_path / "out"
    first = train(tiny_model_dir, one_batch_data_dir, out, fast_config(max_steps=2, save_steps=100))
    weights_before = (first.final_model_dir / "model.safetensors").read_bytes()
    foreign = [out / "notes.txt", out / "final" / "MODEL_CARD.md", out / "final" / "eval" / "scores.json"]
    for path in foreign:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(64))
    kept = _snapshot(foreign)

    config = fast_config(max_steps=2, save_steps=100, learning_rate=1e-2, resume=False)  # start over there
    second = train(tiny_model_dir, one_batch_data_dir, out, config)
    assert training_is_complete(out, config)
    assert (second.final_model_dir / "model.safetensors").read_bytes() != weights_before  # the new model
    assert _snapshot(foreign) == kept  # same bytes, same inode
    owned = json.loads((out / ".final.owned.json").read_text())
    assert "MODEL_CARD.md" not in owned["files"] and "eval" not in owned["dirs"] and "config.json" in owned["files"]
    assert not (out / "final.partial").exists()


@pytest.mark.slow
def test_a_foreign_file_where_the_new_final_model_writes_stops_the_swap(tiny_model_dir, one_batch_data_dir, tmp_path,
                                                                        fast_config):
    out = tmp_path / "out"
    train(tiny_model_dir, one_batch_data_dir, out, fast_config(max_steps=1, save_steps=100))
    mine = out / "final" / "adapter_config.json"  # the user's; a LoRA training writes one of its own
    mine.write_text('{"mine": true}')
    lora = fast_config(max_steps=1, save_steps=100, resume=False, lora={"r": 4, "alpha": 8, "dropout": 0.0})
    with pytest.raises(ForeignFileError) as err:
        train(tiny_model_dir, one_batch_data_dir, out, lora)
    assert "\n" not in str(err.value) and str(mine) in str(err.value) and "move it out" in str(err.value)
    assert mine.read_text() == '{"mine": true}' and (out / "final" / "model.safetensors").is_file()  # untouched
    mine.rename(tmp_path / "kept.json")  # the fix the message names
    assert train(tiny_model_dir, one_batch_data_dir, out, lora).is_adapter


@pytest.mark.parametrize("layout", ["output inside the model", "output is the data", "data inside the output",
                                    "output links to the data"])
def test_the_output_folder_never_overlaps_what_training_reads(tiny_model_dir, one_batch_data_dir, tmp_path,
                                                               fast_config, layout):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    data = tmp_path / "data"
    if layout == "data inside the output":
        data = tmp_path / "out" / "data"
    shutil.copytree(one_batch_data_dir, data)
    out = {"output inside the model": model / "out", "output is the data": data,
           "data inside the output": tmp_path / "out", "output links to the data": tmp_path / "link"}[layout]
    if layout == "output links to the data":
        out.symlink_to(data)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(TrainSetupError, match="training writes checkpoints and final/ there") as err:
        train(model, data, out, fast_config(max_steps=1))
    assert "\n" not in str(err.value)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


@pytest.mark.slow
@pytest.mark.parametrize("case", ["made by hand", "damaged record", "a symlink"])
def test_a_final_folder_without_a_valid_record_is_refused_before_training(tiny_model_dir, one_batch_data_dir, tmp_path,
                                                                          fast_config, case):
    """final/ that no record describes may hold only the user's files: say so before training
    (not after it), and touch nothing."""
    out = tmp_path / "out"
    if case == "made by hand":
        (out / "final").mkdir(parents=True)
        (out / "final" / "README.md").write_text("card")
    elif case == "damaged record":
        train(tiny_model_dir, one_batch_data_dir, out, fast_config(max_steps=1, save_steps=100))
        (out / "final" / "NOTES.md").write_text("notes")
        (out / ".final.owned.json").write_text('{"dirs": [], "files": ["config.json",')
    else:
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "x.txt").write_text("x")
        out.mkdir()
        (out / "final").symlink_to(tmp_path / "mine")
    def files():
        return {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.name != ".train.lock"}

    before = files()
    with pytest.raises(TrainSetupError, match="no record says what training wrote into it") as err:
        train(tiny_model_dir, one_batch_data_dir, out, fast_config(max_steps=1, save_steps=100, resume=False,
                                                                   learning_rate=1e-2))
    assert "\n" not in str(err.value)
    assert files() == before  # checkpoints of the earlier training included (resume: false did not run)


def test_a_swap_killed_between_its_two_renames_puts_the_old_final_back(tmp_path, monkeypatch):
    """Without renameat2's exchange, final/ is moved aside before the new one is renamed in: a kill
    there leaves no final/. The next training puts the old one back (with the user's files)
    before anything else, so the next swap carries them over."""
    from resumable.extract import atomic
    from train_pipeline.training import final as final_folder

    class Saver:  # the two calls save_final makes: trainer.save_model and processor.save_pretrained
        def __init__(self, version):
            self.version = version

        def save_model(self, path):
            os.makedirs(path, exist_ok=True)
            with open(os.path.join(path, "model.safetensors"), "w") as f:
                f.write(self.version)

        def save_pretrained(self, path):
            with open(os.path.join(path, "processor_config.json"), "w") as f:
                f.write("{}")

    out = tmp_path / "out"
    out.mkdir()
    final_folder.save_final(Saver("1"), Saver("1"), out)
    (out / "final" / "notes.txt").write_text("the user's notes")
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    real_rename, calls = os.rename, []

    def rename(src, dst, *args, **kwargs):
        calls.append(dst)
        if str(dst).endswith(os.sep + "final") and any(str(c).endswith("-old") for c in calls):
            raise KeyboardInterrupt  # killed: the old final/ is aside, the new one not yet in place
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        final_folder.save_final(Saver("2"), Saver("2"), out)
    monkeypatch.setattr(os, "rename", real_rename)
    assert not (out / "final").exists()
    final_folder.save_final(Saver("3"), Saver("3"), out)
    assert (out / "final" / "notes.txt").read_text() == "the user's notes"
    assert (out / "final" / "model.safetensors").read_text() == "3"
    assert not list(out.glob(".final.*-old"))
