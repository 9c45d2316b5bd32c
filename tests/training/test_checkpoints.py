"""Half-written checkpoints (what a SIGKILL during a save leaves) are told apart from complete ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from train_pipeline.training.checkpoints import (
    is_complete_checkpoint,
    latest_complete_checkpoint,
    remove_incomplete_checkpoints,
)


@pytest.fixture()
def run_copy(finished_run, tmp_path) -> Path:
    result, _, _ = finished_run
    dest = tmp_path / "run"
    dest.mkdir()
    for name in ("checkpoint-3", "checkpoint-6"):
        shutil.copytree(result.output_dir / name, dest / name)
    return dest


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.slow
def test_trainer_checkpoints_are_complete(run_copy):
    assert is_complete_checkpoint(run_copy / "checkpoint-3")
    assert latest_complete_checkpoint(run_copy) == run_copy / "checkpoint-6"


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda c: _truncate(c / "model.safetensors"), id="weights-cut"),
        pytest.param(lambda c: _truncate(c / "model.safetensors", keep=0.001), id="weights-header-cut"),
        pytest.param(lambda c: (c / "model.safetensors").unlink(), id="weights-missing"),
        pytest.param(lambda c: _truncate(c / "optimizer.pt"), id="optimizer-cut"),
        pytest.param(lambda c: (c / "scheduler.pt").unlink(), id="scheduler-missing"),
        pytest.param(lambda c: (c / "rng_state.pth").unlink(), id="rng-missing"),
        pytest.param(lambda c: (c / "trainer_state.json").unlink(), id="state-missing"),
        pytest.param(lambda c: _truncate(c / "trainer_state.json"), id="state-cut"),
        pytest.param(
            lambda c: (c / "trainer_state.json").write_text(json.dumps({"global_step": 3})), id="state-other-step"
        ),
    ],
)
def test_damaged_latest_checkpoint_is_skipped(run_copy, damage):
    latest = run_copy / "checkpoint-6"
    damage(latest)
    assert not is_complete_checkpoint(latest)
    assert latest_complete_checkpoint(run_copy) == run_copy / "checkpoint-3"
    assert remove_incomplete_checkpoints(run_copy) == [latest]
    assert not latest.exists() and (run_copy / "checkpoint-3").is_dir()


def test_only_an_empty_folder_means_no_checkpoint(tmp_path):
    (tmp_path / "checkpoint-5").mkdir()
    (tmp_path / "checkpoint-x").mkdir()
    assert latest_complete_checkpoint(tmp_path) is None
    assert latest_complete_checkpoint(tmp_path / "absent") is None
