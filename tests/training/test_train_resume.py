"""Kill training with SIGKILL, start it again: it resumes from the latest complete checkpoint and
continues exactly. The per-step losses, gradient norms and learning rates of the interrupted +
resumed run equal those of an uninterrupted run with the same seed, and so do the final weights.

Equality is exact (==): on CPU with one thread the kernels are deterministic and Trainer restores
data order, optimizer, scheduler and RNG states, so any difference is a resume bug (such as
transformers#43701, where resumed Qwen2-VL runs silently restarted from the base weights).
Each run is a child process (tests/training/train_child.py, forked from a process that has
imported torch and transformers: children.py), so the kill is a real SIGKILL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from safetensors.torch import load_file

from children import Children, forked_children
from train_pipeline.training.checkpoints import checkpoint_dirs, is_complete_checkpoint
from train_pipeline.training.metrics import eval_rows, read_metrics, train_rows

pytestmark = pytest.mark.slow

# 12 steps of 2 micro-batches of 4 over 16 images: crosses epoch boundaries, checkpoints at 4, 8, 12.
BASE = {
    "max_steps": 12,
    "save_steps": 4,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 2,
    "learning_rate": 3e-3,
    "min_pixels": 56 * 56,
    "max_pixels": 112 * 112,
    "max_length": 256,
    "seed": 7,
}
LORA = {**BASE, "learning_rate": 1e-2, "lora": {"r": 4, "alpha": 8, "dropout": 0.1}}  # dropout draws from the RNG
# An eval split (4 of the 16 rows held out) evaluated every 3 steps: evaluation between and at
# checkpoints must leave the resumed run's steps (and eval losses) exactly as they were.
EVAL = {**LORA, "eval": {"fraction": 0.25, "steps": 3}}
# 11 steps: the last one is mid-epoch (2 optimizer steps per epoch) and not a multiple of
# save_steps, so the final checkpoint is the end-of-training save, checkpoint-11.
END_FULL = {**BASE, "max_steps": 11}
END_LORA = {**LORA, "max_steps": 11}


def _child(model_dir: Path, data_dir: Path, out: Path, config: dict, kill_at: int | str | None = None) -> list[str]:
    """train_child.py's arguments; ``kill_at``: a step number or one of its named kill points."""
    args = [str(model_dir), str(data_dir), str(out), json.dumps(config)]
    return args + ([str(kill_at)] if kill_at else [])


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")


_CHILDREN: list[Children] = []


@pytest.fixture(scope="module", autouse=True)
def children(tmp_path_factory):
    with forked_children(tmp_path_factory.mktemp("children")) as c:
        _CHILDREN.append(c)
        try:
            yield c
        finally:
            _CHILDREN.remove(c)


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return _CHILDREN[-1].run(args, _env(), timeout=240)


def _finish(args: list[str]) -> dict:
    proc = _run(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_same_training(resumed: Path, reference: Path, max_steps: int = 12) -> None:
    keys = ("step", "epoch", "loss", "grad_norm", "learning_rate", "num_input_tokens_seen")
    got = [{k: r[k] for k in keys} for r in train_rows(read_metrics(resumed / "metrics.jsonl"))]
    want = [{k: r[k] for k in keys} for r in train_rows(read_metrics(reference / "metrics.jsonl"))]
    assert [r["step"] for r in want] == list(range(1, max_steps + 1))
    assert got == want
    keys = ("step", "epoch", "eval_loss")
    assert ([{k: r[k] for k in keys} for r in eval_rows(read_metrics(resumed / "metrics.jsonl"))]
            == [{k: r[k] for k in keys} for r in eval_rows(read_metrics(reference / "metrics.jsonl"))])
    name = "adapter_model.safetensors" if (reference / "final" / "adapter_model.safetensors").exists() else "model.safetensors"
    a, b = load_file(resumed / "final" / name), load_file(reference / "final" / name)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.fixture(scope="module")
def reference(children, tiny_model_dir, sample_data_dir, tmp_path_factory):
    """Uninterrupted runs, one per config, computed on first use."""
    cache: dict[str, Path] = {}

    def get(name: str, config: dict) -> Path:
        if name not in cache:
            out = tmp_path_factory.mktemp(f"reference-{name}")
            _finish(_child(tiny_model_dir, sample_data_dir, out, config))
            cache[name] = out
        return cache[name]

    return get


@pytest.mark.parametrize(("name", "config"), [("full", BASE), ("lora", LORA), ("eval", EVAL)])
def test_sigkill_between_checkpoints_then_resume_matches(name, config, reference, tiny_model_dir, sample_data_dir, tmp_path):
    ref = reference(name, config)
    if name == "eval":
        assert [r["step"] for r in eval_rows(read_metrics(ref / "metrics.jsonl"))] == [3, 6, 9, 12]
    killed = _run(_child(tiny_model_dir, sample_data_dir, tmp_path, config, kill_at=10))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [step for step, _ in checkpoint_dirs(tmp_path)] == [4, 8]
    assert not (tmp_path / "final").exists()

    result = _finish(_child(tiny_model_dir, sample_data_dir, tmp_path, config))
    assert result["resumed_from_step"] == 8 and result["steps"] == 12
    _assert_same_training(tmp_path, ref)


@pytest.mark.parametrize(("kill_at", "resumed_from"), [("saving:8", 4), ("saving:4", None)])
def test_sigkill_while_saving_then_resume_matches(kill_at, resumed_from, reference, tiny_model_dir, sample_data_dir,
                                                  tmp_path):
    """Killed while Trainer writes a checkpoint (its weights, optimizer and scheduler there, its RNG
    state and trainer_state.json not yet); also leave a half-written checkpoint-12 behind, as a kill
    during that save would. The resume skips both: it continues from checkpoint-4 when that one is
    whole, and starts over when no checkpoint is."""
    ref = reference("full", BASE)
    killed = _run(_child(tiny_model_dir, sample_data_dir, tmp_path, BASE, kill_at=kill_at))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    step = int(kill_at.removeprefix("saving:"))
    half = tmp_path / f"checkpoint-{step}"
    assert (half / "optimizer.pt").is_file() and not is_complete_checkpoint(half)  # half-written, by Trainer
    assert [s for s, p in checkpoint_dirs(tmp_path) if is_complete_checkpoint(p)] == ([4] if step == 8 else [])

    partial = tmp_path / "checkpoint-12"
    partial.mkdir()
    weights = (tiny_model_dir / "model.safetensors").read_bytes()  # same size as a checkpoint's
    (partial / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    shutil.copy(tiny_model_dir / "config.json", partial / "config.json")
    assert not is_complete_checkpoint(partial)

    result = _finish(_child(tiny_model_dir, sample_data_dir, tmp_path, BASE))
    assert result["resumed_from_step"] == resumed_from and result["steps"] == 12
    _assert_same_training(tmp_path, ref)
    assert is_complete_checkpoint(tmp_path / "checkpoint-12")  # rewritten whole by the resumed run


def test_sigkill_before_the_rotation_then_the_resume_keeps_save_total_limit(reference, tiny_model_dir,
                                                                           sample_data_dir, tmp_path):
    """Killed once checkpoint-11 (the last) is whole but before Trainer's rotation removed
    checkpoint-4 (save_total_limit 2): the resume has no step left, so Trainer never saves or
    rotates again; the run removes the extra checkpoint itself (chaos campaign seed 115)."""
    ref = reference("full-end", END_FULL)
    killed = _run(_child(tiny_model_dir, sample_data_dir, tmp_path, END_FULL, kill_at="unrotated:11"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [step for step, _ in checkpoint_dirs(tmp_path)] == [4, 8, 11]
    result = _finish(_child(tiny_model_dir, sample_data_dir, tmp_path, END_FULL))
    assert result["resumed_from_step"] == 11 and result["steps"] == 11
    _assert_same_training(tmp_path, ref, max_steps=11)
    assert [step for step, _ in checkpoint_dirs(tmp_path)] == [8, 11]


@pytest.mark.parametrize("kill_at", ["saved:11", "final-partial", "final"])
@pytest.mark.parametrize(("name", "config"), [("full-end", END_FULL), ("lora-end", END_LORA)])
def test_sigkill_after_last_checkpoint_then_resume_does_no_step(
    name, config, kill_at, reference, tiny_model_dir, sample_data_dir, tmp_path
):
    """Killed once the final checkpoint (checkpoint-11 = max_steps, mid-epoch) is whole, or while
    or after final/ is written but before train_result.json: the resume has nothing left to train.
    It must save final/ from checkpoint-11 as is; no step 12 (Trainer used to take one, at LR 0)."""
    ref = reference(name, config)
    killed = _run(_child(tiny_model_dir, sample_data_dir, tmp_path, config, kill_at=kill_at))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [step for step, _ in checkpoint_dirs(tmp_path)] == [8, 11]
    assert not (tmp_path / "train_result.json").exists()
    assert (tmp_path / "final").is_dir() == (kill_at == "final")
    assert (tmp_path / "final.partial").is_dir() == (kill_at == "final-partial")

    result = _finish(_child(tiny_model_dir, sample_data_dir, tmp_path, config))
    assert result["resumed_from_step"] == 11 and result["steps"] == 11
    _assert_same_training(tmp_path, ref, max_steps=11)
    assert [step for step, _ in checkpoint_dirs(tmp_path)] == [8, 11]  # no checkpoint-12
    assert (tmp_path / "loss_curve.png").read_bytes() == (ref / "loss_curve.png").read_bytes()
    assert not (tmp_path / "final.partial").exists()
