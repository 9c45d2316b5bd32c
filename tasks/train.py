"""train: fine-tune the snapshot on the extracted dataset (resuming from the latest checkpoint)."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from tasks.caching import STABLE_INPUTS, run_name
from resumable.extract import ExtractResult
from resumable.hub import SnapshotResult
from tasks.results import DataOnlyJSON, result_type
from train_pipeline.training.finetune import TrainResult
from train_pipeline.training.settings import TrainConfig


result_type(TrainResult)

# Caching: the key is the model snapshot (by commit), the extracted data (by archive digest), the
# output folder and the settings; the flow trusts a cached result only while training_is_current
# (the final model and result file in place, made with these settings).


@task(cache_policy=STABLE_INPUTS, persist_result=True, result_serializer=DataOnlyJSON(),
      task_run_name=run_name("train", "output_dir"))
def train(model: SnapshotResult, data: ExtractResult, output_dir: str, config: TrainConfig) -> TrainResult:
    """Fine-tune ``model`` on the extracted dataset ``data``; resumes from the latest checkpoint."""
    from train_pipeline.training.finetune import train as run_training

    logger = get_run_logger()

    def progress(p) -> None:
        logger.info("step %d/%d loss %s lr %s", p.step, p.total_steps,
                    "?" if p.loss is None else f"{p.loss:.4f}", "?" if p.learning_rate is None else f"{p.learning_rate:.2e}")

    r = run_training(model.path, dataset_root(data.target), output_dir, config, progress=progress)
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

    rows = [("model", f"{model.repo_id}@{model.commit[:12]}"), ("steps", r.steps),
            ("final loss", fmt(r.final_loss, ".4f")), ("examples", f"{r.examples} ({r.skipped_rows} rows skipped)"),
            ("tokens/s", fmt(r.tokens_per_second, ".0f")), ("runtime (this session)", fmt(r.train_runtime_s, ".1f") + " s"),
            ("resumed from step", r.resumed_from_step if r.resumed_from_step is not None else "– (from scratch)"),
            ("final model", f"`{r.final_model_dir}`" + (" (LoRA adapter)" if r.is_adapter else "")),
            ("metrics", f"`{r.metrics_path}`")]
    table = "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])
    curve = ""
    if Path(r.curve_path).is_file():
        png = base64.b64encode(Path(r.curve_path).read_bytes()).decode()
        curve = f"\n\n![loss curve](data:image/png;base64,{png})\n\n`{r.curve_path}`"
    create_markdown_artifact(markdown=f"## Training\n\n{table}{curve}", key=TRAINING_ARTIFACT,
                             description="Fine-tuning: final numbers and loss curve")


def training_is_current(output_dir: str | Path, config: TrainConfig) -> bool:
    from train_pipeline.training.finetune import training_is_complete

    return training_is_complete(output_dir, config)


def dataset_root(target: str | Path) -> Path:
    """The folder holding metadata.jsonl: the target itself or its single top-level folder."""
    target = Path(target)
    if (target / "metadata.jsonl").is_file():
        return target
    subdirs = [p for p in target.iterdir() if p.is_dir() and not p.name.startswith(".")] if target.is_dir() else []
    if len(subdirs) == 1 and (subdirs[0] / "metadata.jsonl").is_file():
        return subdirs[0]
    return target
