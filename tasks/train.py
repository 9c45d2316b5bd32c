"""train: fine-tune the snapshot on every dataset of the run (resuming from the latest checkpoint)."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from tasks.caching import STABLE_INPUTS, run_name
from resumable.hub import SnapshotResult
from tasks.results import DataOnlyJSON, result_type
from train_pipeline.training.finetune import TrainResult
from train_pipeline.training.settings import TrainConfig


result_type(TrainResult)

# Caching: the key is the model snapshot (by commit), every dataset of the run -- its folders and
# its content (each archive by digest and extracted tree, each other file by its verified digest,
# small files fetched together by path, size and digest) --, the output folder and the settings
# (data settings included: format, fields, weights, eval); the flow trusts a cached result only
# while training_is_current (the final model and result file in place, made with these settings).
# The training itself refuses to resume checkpoints made from other rows or images (run.json).


@task(cache_policy=STABLE_INPUTS, persist_result=True, result_serializer=DataOnlyJSON(),
      task_run_name=run_name("train", "output_dir"))
def train(model: SnapshotResult, data: dict[str, dict[str, list]], output_dir: str, config: TrainConfig) -> TrainResult:
    """Fine-tune ``model`` on the run's datasets: ``data`` is ``{name: {"folders": [folder, ...],
    "content": [upstream results]}}`` (the folders are read; the results only identify the content
    and make this step wait for it). Resumes from the latest checkpoint."""
    from train_pipeline.training.dataset import DatasetSource
    from train_pipeline.training.finetune import train as run_training

    logger = get_run_logger()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights", "Writing model shards": the step lines say it all

    def progress(p) -> None:
        if p.eval_loss is not None:
            logger.info("step %d/%d eval loss %.4f", p.step, p.total_steps, p.eval_loss)
            return
        logger.info("step %d/%d loss %s lr %s", p.step, p.total_steps,
                    "?" if p.loss is None else f"{p.loss:.4f}", "?" if p.learning_rate is None else f"{p.learning_rate:.2e}")

    sources = [DatasetSource(name, tuple(Path(f) for f in spec["folders"])) for name, spec in data.items()]
    # distributed settings above one process: torchrun's workers, each line of theirs logged here as
    # "[rank N] ..."; a cancelled or killed flow run ends them all (train_pipeline/training/distributed.py)
    r = run_training(model.path, sources, output_dir, config, progress=progress, log=logger.info)
    logger.info("trained %d steps, final loss %s -> %s", r.steps, r.final_loss, r.final_model_dir)
    publish_training_artifact(r, model)
    return r


TRAINING_ARTIFACT = "training-summary"


def publish_training_artifact(r: TrainResult, model: SnapshotResult) -> None:
    """The final numbers and the loss curve, in the Prefect UI (the PNG inlined: the UI cannot
    read the worker's disk)."""
    import base64

    from prefect.artifacts import create_markdown_artifact

    def fmt(value, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    rows = [("model", f"{model.repo_id}@{model.commit[:12]}"), ("datasets", ", ".join(r.datasets) or "–"),
            ("steps", r.steps), ("final loss", fmt(r.final_loss, ".4f")),
            ("examples", f"{r.examples} per epoch ({r.skipped_rows} rows skipped)"),
            ("eval loss", _eval_losses(r) if r.eval_examples else "– (no eval split)"),
            ("tokens/s", fmt(r.tokens_per_second, ".0f")), ("runtime (this session)", fmt(r.train_runtime_s, ".1f") + " s"),
            ("resumed from step", r.resumed_from_step if r.resumed_from_step is not None else "– (from scratch)"),
            ("final model", f"`{r.final_model_dir}`" + (" (LoRA adapter)" if r.is_adapter else "")),
            ("metrics", f"`{r.metrics_path}`"), ("data report", f"`{r.data_report_path}`")]
    table = "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])
    curve = ""
    if Path(r.curve_path).is_file():
        png = base64.b64encode(Path(r.curve_path).read_bytes()).decode()
        curve = f"\n\n![loss curve](data:image/png;base64,{png})\n\n`{r.curve_path}`"
    create_markdown_artifact(markdown=f"## Training\n\n{table}{curve}", key=TRAINING_ARTIFACT,
                             description="Fine-tuning: final numbers and loss curve")


def _eval_losses(r: TrainResult, last: int = 8) -> str:
    """'step 10: 1.234, step 20: 0.987 (64 examples)': the last evaluations in metrics.jsonl."""
    import json

    evals = []
    try:
        for line in Path(r.metrics_path).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if isinstance(row, dict) and isinstance(row.get("eval_loss"), (int, float)):
                evals.append(f"step {row.get('step')}: {row['eval_loss']:.4f}")
    except (OSError, ValueError):
        pass
    shown = ("…, " if len(evals) > last else "") + ", ".join(evals[-last:])
    return f"{shown or '–'} ({r.eval_examples} examples)"


def training_is_current(output_dir: str | Path, config: TrainConfig) -> bool:
    from train_pipeline.training.finetune import training_is_complete

    return training_is_complete(output_dir, config)
