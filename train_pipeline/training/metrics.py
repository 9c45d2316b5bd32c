"""Per-step training metrics (JSON lines) and the loss-curve PNG.

``metrics.jsonl`` holds a record per logged training step (``loss``, learning rate, grad norm,
throughput, peak GPU memory on CUDA) and, with an eval split, one per evaluation (``eval_loss``, ``eval_runtime``), both
with their ``step``: ``train_rows``/``eval_rows`` tell them apart."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

METRICS_NAME = "metrics.jsonl"
CURVE_NAME = "loss_curve.png"


@dataclass(frozen=True)
class TrainProgress:
    """What the progress hook sees after each logged step."""

    step: int
    total_steps: int
    loss: float | None
    learning_rate: float | None
    epoch: float | None
    eval_loss: float | None = None  # set (and loss None) when the record is an evaluation


def train_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if "loss" in r]


def eval_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if "eval_loss" in r]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            break  # a kill mid-append leaves a cut last line
    return rows


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop records after ``last_step`` (steps a killed run did past its last checkpoint)."""
    rows = [r for r in read_metrics(path) if r.get("step", 0) <= last_step]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


class MetricsCallback(TrainerCallback):
    """Appends one JSON line per logged step (loss, learning rate, grad norm, throughput) and one per
    evaluation (eval loss); the time spent evaluating does not count in the throughput."""

    def __init__(self, path: Path, progress: Callable[[TrainProgress], None] | None = None):
        self.path = path
        self.progress = progress
        self._t0: float | None = None
        self._tokens0 = 0
        self._step0 = 0
        self._paused = 0.0  # seconds spent evaluating since the last mark

    def on_step_begin(self, args, state, control, **kwargs):
        if self._t0 is None:
            self._mark(state)

    def _mark(self, state) -> None:
        self._t0, self._tokens0, self._step0 = time.perf_counter(), state.num_input_tokens_seen, state.global_step
        self._paused = 0.0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self._paused += float((metrics or {}).get("eval_runtime") or 0.0)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "eval_loss" in logs:
            self._log_eval(state, logs)
            return
        if not logs or "loss" not in logs or self._t0 is None:
            return  # the end-of-training summary has train_loss instead; Trainer keeps it
        elapsed = max(time.perf_counter() - self._t0 - self._paused, 1e-9)
        steps = max(state.global_step - self._step0, 1)
        tokens = state.num_input_tokens_seen - self._tokens0
        samples = steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        record = {
            "step": state.global_step,
            "epoch": logs.get("epoch", state.epoch),
            "loss": logs["loss"],
            "learning_rate": logs.get("learning_rate"),
            "grad_norm": logs.get("grad_norm"),
            "num_input_tokens_seen": state.num_input_tokens_seen,
            "seconds_per_step": elapsed / steps,
            "tokens_per_second": tokens / elapsed,
            "samples_per_second": samples / elapsed,
        }
        if torch.cuda.is_available():  # this rank's peak since the start (rank 0's is the one written)
            record["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated()
        self._append(state, record)
        self._mark(state)
        if self.progress is not None:
            self.progress(
                TrainProgress(state.global_step, state.max_steps, record["loss"], record["learning_rate"], record["epoch"])
            )

    def _append(self, state, record: dict[str, Any]) -> None:
        # Every rank logs the same values (Trainer gathers the loss); rank 0 alone writes them.
        if state.is_world_process_zero:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

    def _log_eval(self, state, logs) -> None:
        record = {"step": state.global_step, "epoch": logs.get("epoch", state.epoch), "eval_loss": logs["eval_loss"],
                  **{k: logs[k] for k in ("eval_runtime", "eval_samples_per_second") if k in logs}}
        self._append(state, record)
        if self.progress is not None:
            self.progress(TrainProgress(state.global_step, state.max_steps, None, None, record["epoch"],
                                        eval_loss=record["eval_loss"]))


def plot_loss_curve(rows: list[dict[str, Any]], dest: Path, title: str = "Training loss") -> Path:
    """The training loss (and learning rate) per step; evaluations as a second series."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on workers
    import matplotlib.pyplot as plt

    evals = eval_rows(rows)
    rows = train_rows(rows)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["loss"] for r in rows], marker="." if len(rows) < 60 else None, label="train loss")
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], marker="o", color="tab:green",
                label="eval loss")
        ax.legend(loc="upper right", fontsize="small")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    lrs = [r.get("learning_rate") for r in rows]
    if any(lr is not None for lr in lrs):
        ax2 = ax.twinx()
        ax2.plot(steps, [lr if lr is not None else float("nan") for lr in lrs], color="tab:orange", alpha=0.6)
        ax2.set_ylabel("learning rate", color="tab:orange")
    fig.tight_layout()
    fig.savefig(dest, metadata={"Software": None})  # no version stamp: same data, same bytes
    plt.close(fig)
    return dest
