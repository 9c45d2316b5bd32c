"""Fine-tune Qwen2-VL on the run's datasets with transformers Trainer, resumably.

Layout of ``output_dir``::

    run.json            config + input fingerprints; a resume must match it
    checkpoint-N/       Trainer checkpoints (weights, optimizer, scheduler, RNG, trainer state)
    metrics.jsonl       one line per logged step (and per evaluation: eval_loss)
    data_report.json    per dataset: format, files, rows read, rows skipped and why, examples used
    final/              model (or LoRA adapter) + processor, loadable with from_pretrained
    loss_curve.png
    train_result.json   written last: its presence means the training is complete
    .train.lock         held while a training runs there (released by the OS if it is killed)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from resumable.hashes import file_digest
from resumable.state import RECORD_DIR, VerifiedRecord, write_json
from train_pipeline.training.checkpoints import (
    checkpoint_dirs,
    latest_complete_checkpoint,
    remove_checkpoints_beyond,
    remove_incomplete_checkpoints,
)
from train_pipeline.config.locations import check_training_folders
from train_pipeline.training.settings import TrainConfig
from train_pipeline.training.dataset import DataError, as_sources, load_run_data
from train_pipeline.training.final import FINAL_NAME, FINAL_UNKNOWN, final_owned, save_final
from train_pipeline.training.final import recover as recover_final

logger = logging.getLogger(__name__)

RUN_NAME = "run.json"
RESULT_NAME = "train_result.json"
DATA_REPORT_NAME = "data_report.json"
LOCK_NAME = ".train.lock"
SESSION_NAME = ".train_session.json"  # rank 0's steps and runtime, for node 0's parent (distributed)


class TrainSetupError(ValueError):
    """Inputs or output folder are unusable; one line naming the input and the fix."""


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    final_model_dir: Path
    steps: int
    final_loss: float | None  # loss of the last logged step
    metrics_path: Path
    curve_path: Path
    resumed_from_step: int | None  # None: started from scratch (or was already complete)
    is_adapter: bool = False  # final_model_dir holds a LoRA adapter, not full weights
    examples: int = 0
    skipped_rows: int = 0
    train_runtime_s: float | None = None  # this session only (a resumed run counts its own part)
    tokens_per_second: float | None = None  # mean over the logged steps of the whole training
    data_report_path: Path | None = None  # rows read, rows skipped and why (JSON)
    datasets: tuple[str, ...] = ()  # the run's datasets, in order
    eval_examples: int = 0
    eval_loss: float | None = None  # loss of the last evaluation
    world_size: int = 1  # processes that trained (this session)

    def to_json(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainResult:
        paths = {"output_dir", "final_model_dir", "metrics_path", "curve_path", "data_report_path"}
        return cls(**{k: Path(v) if k in paths and v is not None else tuple(v) if isinstance(v, list) else v
                      for k, v in data.items()})


def training_is_complete(output_dir: str | os.PathLike, config: TrainConfig | None = None) -> bool:
    """Cheap check: the final model and result file exist (and were made with ``config``, if given)."""
    out = Path(output_dir)
    result = _read_result(out)
    if result is None:
        return False
    final = result.final_model_dir
    weights = ("adapter_model.safetensors",) if result.is_adapter else ("model.safetensors", "model.safetensors.index.json")
    if not any((final / w).is_file() for w in weights) or not (final / "processor_config.json").is_file():
        return False
    if config is not None:
        run = _read_json(out / RUN_NAME)
        return run is not None and run.get("config") == run_config(config)
    return True


def run_config(config: TrainConfig) -> dict[str, Any]:
    """The settings a resume must match (run.json): all but ``distributed``, whose launch details
    (node rank, rendezvous) change nothing; the world size it gives is recorded on its own."""
    return config.model_dump(mode="json", exclude={"distributed"})


def train(
    model_dir: str | os.PathLike,
    data_dir: Any,
    output_dir: str | os.PathLike,
    config: TrainConfig,
    *,
    progress: Callable[[Any], None] | None = None,
    callbacks: Sequence[Any] = (),
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Fine-tune the model in ``model_dir`` on ``data_dir``; resume from ``output_dir``'s latest
    complete checkpoint when there is one. Returns at once if the same training already finished.

    With ``config.distributed`` asking for more than one process, the training runs in worker
    processes started by torchrun (distributed.py); ``log`` receives their output lines, prefixed
    with the rank (default: this module's logger). This is node 0's call; the other nodes run
    ``join_training``.

    ``data_dir``: one dataset folder, or the run's datasets (``dataset.as_sources``: DatasetSources,
    ``NAME=PATH`` strings, a {name: folder(s)} mapping); all are read and mixed as ``config`` says.

    ``progress`` receives a ``metrics.TrainProgress`` after every logged step; ``callbacks`` are
    extra transformers ``TrainerCallback``s.
    """
    model_dir, out = Path(model_dir), Path(output_dir)
    sources = as_sources(data_dir)
    if not (model_dir / "config.json").is_file():
        raise TrainSetupError(f"model_dir {model_dir} has no config.json: point it at the downloaded model snapshot")
    for folder in (f for s in sources for f in s.folders):
        overlap = check_training_folders(model_dir, folder, out)
        if overlap:  # training rewrites its output folder: never the folders it reads
            raise TrainSetupError(f"{overlap}: training writes checkpoints and final/ there; use an output_dir beside them")
    if config.distributed.node_rank > 0:
        raise TrainSetupError(
            f"distributed.node_rank is {config.distributed.node_rank}: node 0 runs the training step (and writes "
            "the output); on this machine run `python -m train_pipeline.training train ...` with this node's rank"
        )
    world = _world_size(config)
    if world > 1 and callbacks:
        raise TrainSetupError("callbacks cannot reach worker processes: train with distributed world size 1 to use them")
    data = load_run_data(sources, config)
    run = run_fingerprint(model_dir, config, data, world)
    out.mkdir(parents=True, exist_ok=True)
    # One training per output_dir at a time; the OS drops the lock when a killed process dies.
    lock = FileLock(out / LOCK_NAME)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise TrainSetupError(
            f"output_dir {out} is in use by another training: wait for it, or use another output_dir"
        ) from None
    try:
        if _read_json(out / RUN_NAME) == run and training_is_complete(out):
            logger.info("%s already holds this finished training; nothing to do", out)
            return _read_result(out)  # type: ignore[return-value]
        resume_from = _prepare_output_dir(out, run, config.resume, config.save_total_limit)
        if world > 1:
            return _run_distributed(model_dir, sources, out, config, data, resume_from, world, progress, log)
        return _run_trainer(model_dir, out, config, data, resume_from, progress, callbacks)
    finally:
        lock.release()


def join_training(
    model_dir: str | os.PathLike,
    data_dir: Any,
    output_dir: str | os.PathLike,
    config: TrainConfig,
    *,
    log: Callable[[str], None] | None = None,
) -> None:
    """Node ``distributed.node_rank`` > 0 of a multi-node training: start this machine's workers
    and wait for them. Node 0 (``train``) prepares and finishes ``output_dir``, which every node
    must see at the same path (a shared file system): checkpoints are written by rank 0, wherever
    the rendezvous places it, and read by every rank on resume."""
    from train_pipeline.training.distributed import run_workers

    d = config.distributed
    if d.node_rank == 0:
        raise TrainSetupError("distributed.node_rank is 0: node 0 runs `train` (it prepares and finishes the output)")
    _world_size(config)
    model_dir, sources = Path(model_dir), as_sources(data_dir)
    if not (model_dir / "config.json").is_file():
        raise TrainSetupError(f"model_dir {model_dir} has no config.json: point it at the downloaded model snapshot")
    spec = _worker_spec(model_dir, sources, Path(output_dir), config, resume_from=None)
    run_workers(d, spec, log=log)


def run_fingerprint(model_dir: Path, config: TrainConfig, data: Any, world: int) -> dict[str, Any]:
    """What run.json records and a resume must match: settings, model, rows read, and (above 1)
    the world size and strategy, which fix the global batch and the checkpoint layout."""
    run: dict[str, Any] = {"config": run_config(config), "model": _fingerprint_model(model_dir), "data": data.fingerprint}
    if world > 1:
        run["distributed"] = {"world_size": world, "strategy": config.distributed.strategy}
    return run


def _world_size(config: TrainConfig) -> int:
    if not config.distributed.multi_process:
        return 1
    from train_pipeline.training.distributed import backend, world_size

    world = world_size(config.distributed)
    if world > 1 and config.distributed.strategy == "fsdp" and backend(config.distributed) != "nccl":
        # accelerate applies an FSDP plugin only on GPUs: on CPU it would silently train DDP replicas.
        raise TrainSetupError("distributed.strategy fsdp needs CUDA GPUs (nccl): on CPU use strategy: ddp")
    return world


def _worker_spec(model_dir: Path, sources: Sequence[Any], out: Path, config: TrainConfig,
                 resume_from: Path | None) -> dict[str, Any]:
    return {
        "model_dir": str(model_dir.resolve()),
        "sources": [{"name": s.name, "folders": [str(Path(f).resolve()) for f in s.folders]} for s in sources],
        "output_dir": str(out.resolve()),
        "config": config.model_dump(mode="json"),
        "resume_from": str(resume_from.resolve()) if resume_from else None,
    }


def _run_distributed(
    model_dir: Path,
    sources: Sequence[Any],
    out: Path,
    config: TrainConfig,
    data: Any,
    resume_from: Path | None,
    world: int,
    progress: Callable[[Any], None] | None,
    log: Callable[[str], None] | None,
) -> TrainResult:
    """Node 0: workers train (rank 0 writes checkpoints, metrics and final/), this process
    checked the data before (one-line errors, data_report.json) and writes the result after."""
    from train_pipeline.training.distributed import run_workers
    from train_pipeline.training.metrics import TrainProgress
    from train_pipeline.training.processor import load_processor

    processor = load_processor(model_dir, min_pixels=config.min_pixels, max_pixels=config.max_pixels)
    _check_length_budget(processor, config, data)
    write_json(out / DATA_REPORT_NAME, data.report_dict(), readable=True)
    _remove(out / SESSION_NAME)

    def on_progress(record: dict[str, Any]) -> None:
        if progress is not None:
            progress(TrainProgress(**record))

    run_workers(config.distributed, _worker_spec(model_dir, sources, out, config, resume_from), log=log,
                progress=on_progress)
    session = _read_json(out / SESSION_NAME)
    if session is None:
        raise TrainSetupError(f"the workers finished without writing {out / SESSION_NAME}: see their log above")
    _remove(out / SESSION_NAME)
    return _finish(out, config, data, resume_from, session, world)


def _prepare_output_dir(out: Path, run: dict[str, Any], resume: bool, save_total_limit: int | None = None
                        ) -> Path | None:
    """Check ``out`` belongs to this run, drop half-written state, pick the checkpoint to resume."""
    from train_pipeline.training.metrics import METRICS_NAME, truncate_metrics

    previous = _read_json(out / RUN_NAME)
    has_state = bool(checkpoint_dirs(out)) or (out / RESULT_NAME).exists()
    if resume and has_state and previous != run:
        what = "inputs (model or data)"
        if previous and previous.get("config") != run["config"]:
            what = "config"
        elif previous and previous.get("distributed") != run.get("distributed"):
            was, now = (r.get("distributed", {"world_size": 1, "strategy": "ddp"}) for r in (previous, run))
            what = (f"world size or strategy ({was['world_size']} processes, {was['strategy']}; this run: "
                    f"{now['world_size']}, {now['strategy']}: the global batch or the checkpoint layout differs)")
        raise TrainSetupError(
            f"output_dir {out} holds checkpoints of a training with other {what}: "
            "use a new output_dir, or set resume: false to start over there"
        )
    recover_final(out)
    if os.path.lexists(out / FINAL_NAME) and final_owned(out) is None:  # say so now, not after the training
        raise TrainSetupError(FINAL_UNKNOWN.format(final=out / FINAL_NAME))
    _remove(out / RESULT_NAME)  # final/ stays until the new one replaces it (keeping others' files)
    if not resume:
        for _, path in checkpoint_dirs(out):
            shutil.rmtree(path)
    for path in remove_incomplete_checkpoints(out):
        logger.warning("removed %s: it was interrupted while saving", path)
    for path in remove_checkpoints_beyond(out, save_total_limit):
        logger.info("removed %s: beyond save_total_limit (a kill came before the rotation)", path)
    checkpoint = latest_complete_checkpoint(out) if resume else None
    metrics = out / METRICS_NAME
    if checkpoint is None:
        _remove(metrics)
    else:
        truncate_metrics(metrics, int(checkpoint.name.split("-")[1]))
        logger.info("resuming from %s", checkpoint)
    write_json(out / RUN_NAME, run, readable=True)
    return checkpoint


def _run_trainer(
    model_dir: Path,
    out: Path,
    config: TrainConfig,
    data: Any,
    resume_from: Path | None,
    progress: Callable[[Any], None] | None,
    callbacks: Sequence[Any],
) -> TrainResult:
    from train_pipeline.training.processor import load_processor

    processor = load_processor(model_dir, min_pixels=config.min_pixels, max_pixels=config.max_pixels)
    _check_length_budget(processor, config, data)
    write_json(out / DATA_REPORT_NAME, data.report_dict(), readable=True)
    session = train_session(model_dir, out, config, data, resume_from, processor, progress, callbacks)
    return _finish(out, config, data, resume_from, session, 1)


def train_session(
    model_dir: Path,
    out: Path,
    config: TrainConfig,
    data: Any,
    resume_from: Path | None,
    processor: Any,
    progress: Callable[[Any], None] | None,
    callbacks: Sequence[Any],
    world: int = 1,
) -> dict[str, Any]:
    """Train (every rank runs this; rank 0 alone writes checkpoints, metrics.jsonl and final/).
    Returns ``{"steps", "train_runtime_s"}``."""
    import torch
    from transformers import PrinterCallback, set_seed

    from train_pipeline.training.collate import ChatCollator
    from train_pipeline.training.metrics import METRICS_NAME, MetricsCallback
    from train_pipeline.training.model import load_model_for_training

    cuda = torch.cuda.is_available()
    bf16 = cuda if config.bf16 == "auto" else bool(config.bf16)
    set_seed(config.seed)  # before the model: LoRA's initial weights are random
    model = load_model_for_training(model_dir, config, resume_from)

    args = _training_arguments(out, config, cuda, bf16, evaluate=bool(data.eval), world=world)
    trainer = _resumable_trainer_class()(
        model=model,
        args=args,
        train_dataset=_ExampleDataset(data.train),
        eval_dataset=_ExampleDataset(data.eval) if data.eval else None,
        data_collator=ChatCollator(processor, config.max_length),
        processing_class=processor,
        callbacks=[MetricsCallback(out / METRICS_NAME, progress), *callbacks],
    )
    trainer.remove_callback(PrinterCallback)  # MetricsCallback records each step instead of printing dicts
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    save_final(trainer, processor, out)
    return {"steps": trainer.state.global_step, "train_runtime_s": output.metrics.get("train_runtime")}


def _finish(out: Path, config: TrainConfig, data: Any, resume_from: Path | None, session: dict[str, Any],
            world: int) -> TrainResult:
    """The loss curve and train_result.json (written last: it marks the training complete)."""
    from train_pipeline.training.metrics import CURVE_NAME, METRICS_NAME, eval_rows, plot_loss_curve, read_metrics, train_rows

    metrics_path, curve_path = out / METRICS_NAME, out / CURVE_NAME
    all_rows = read_metrics(metrics_path)
    rows, evals = train_rows(all_rows), eval_rows(all_rows)
    if rows:
        plot_loss_curve(all_rows, curve_path)
    tps = [r["tokens_per_second"] for r in rows if r.get("tokens_per_second")]
    reports = [u.report for u in data.uses if u.report is not None]
    result = TrainResult(
        output_dir=out,
        final_model_dir=out / FINAL_NAME,
        steps=session["steps"],
        final_loss=rows[-1]["loss"] if rows else None,
        metrics_path=metrics_path,
        curve_path=curve_path,
        resumed_from_step=int(resume_from.name.split("-")[1]) if resume_from else None,
        is_adapter=config.lora is not None,
        examples=len(data.train),
        skipped_rows=sum(len(r.skipped) for r in reports) + len(data.dropped),
        train_runtime_s=session.get("train_runtime_s"),
        tokens_per_second=sum(tps) / len(tps) if tps else None,
        data_report_path=out / DATA_REPORT_NAME,
        datasets=tuple(u.name for u in data.uses),
        eval_examples=len(data.eval),
        eval_loss=evals[-1]["eval_loss"] if evals else None,
        world_size=world,
    )
    write_json(out / RESULT_NAME, result.to_json(), readable=True)  # last: marks the training complete
    return result


def _training_arguments(out: Path, config: TrainConfig, cuda: bool, bf16: bool, evaluate: bool = False,
                        world: int = 1) -> Any:
    from transformers import TrainingArguments

    evaluation: dict[str, Any] = {}
    if world > 1:
        from train_pipeline.training.distributed import backend, fsdp_arguments

        # Each rank's loss is its labelled tokens' sum over the global count of labelled tokens (times
        # the world size, which DDP's gradient mean divides out): the same loss and gradient as one
        # process with the whole batch (average_tokens_across_devices, transformers' default, said here).
        # Every row has an image (formats refuse rows without), so every trainable weight gets a gradient
        # each step: DDP need not search the graph for unused ones.
        evaluation.update(ddp_backend=backend(config.distributed), average_tokens_across_devices=True,
                          save_on_each_node=False, ddp_find_unused_parameters=False)
        if config.distributed.strategy == "fsdp":
            evaluation.update(fsdp_arguments(config))
    if evaluate:  # the eval loss every eval.steps optimizer steps (logged before that step's checkpoint)
        evaluation.update(eval_strategy="steps", eval_steps=config.eval.steps or config.save_steps,
                          per_device_eval_batch_size=config.per_device_train_batch_size, prediction_loss_only=True)
    return TrainingArguments(
        **evaluation,
        output_dir=str(out),
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        bf16=bf16,
        use_cpu=not cuda,
        # under FSDP, its own activation checkpointing per wrapped block (fsdp_config) replaces Trainer's
        activation_checkpointing=config.gradient_checkpointing and "fsdp" not in evaluation,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        seed=config.seed,
        data_seed=config.seed,
        remove_unused_columns=False,  # the model needs mm_token_type_ids, pixel_values, image_grid_thw
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda,
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        disable_tqdm=True,
    )


def _resumable_trainer_class() -> type:
    import transformers
    from transformers import Trainer

    for hook in ("_load_from_checkpoint", "_init_training_state", "_save_rng_state"):
        # Private Trainer methods: if an upgrade renames one, the override below would silently stop applying.
        if not callable(getattr(Trainer, hook, None)):
            raise RuntimeError(
                f"transformers {transformers.__version__}: Trainer has no {hook}, which ResumableTrainer "
                "overrides for exact resumes: pin transformers or port train_pipeline/training/finetune.py"
            )

    class ResumableTrainer(Trainer):
        """Trainer whose resume leaves full-model weights to ``load_model_for_training`` and never
        trains past ``max_steps``.

        Its own loader would run ``load_state_dict(strict=False)`` on mismatched key names: a no-op
        with a misleading missing-keys warning (see model.load_model_for_training). Optimizer,
        scheduler, RNG and trainer state are still restored by Trainer; LoRA adapters too.
        """

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            from peft import PeftModel

            if isinstance(model if model is not None else self.model, PeftModel):
                super()._load_from_checkpoint(resume_from_checkpoint, model)

        def _save_rng_state(self, output_dir):
            """Every rank saves its own RNG state (rng_state_N.pth) and rank 0 then writes
            trainer_state.json, which makes the checkpoint count as complete: wait for all the RNG
            files first, or a kill in between leaves a 'complete' checkpoint missing one, and that
            rank would resume with fresh RNG (Trainer only warns)."""
            super()._save_rng_state(output_dir)
            if self.args.world_size > 1:
                self.accelerator.wait_for_everyone()

        def _init_training_state(self, max_steps, *args, **kwargs):
            """Trainer turns the restored global_step into (epochs done, batches done in the current
            epoch) without comparing it to max_steps, and its loop only checks max_steps after a step.
            A checkpoint at max_steps that ends mid-epoch (max_steps not a multiple of the optimizer
            steps per epoch) thus re-enters the last epoch and trains one step past the end, at
            learning rate 0. Such a checkpoint has no epoch left to run: skip the loop."""
            epochs_trained, batches_trained = super()._init_training_state(max_steps, *args, **kwargs)
            if self.state.global_step >= max_steps:
                return self.state.num_train_epochs, 0
            return epochs_trained, batches_trained

    return ResumableTrainer


class _ExampleDataset:
    """Map-style dataset over parsed examples; the collator does the heavy lifting."""

    def __init__(self, examples: list[Any]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Any:
        return self.examples[index]


def _check_length_budget(processor: Any, config: TrainConfig, data: Any) -> None:
    """Fail before training if max_pixels allows more image tokens than max_length can hold; drop
    (and report) the rows with several images whose image tokens together could exceed it."""
    ip = processor.image_processor
    max_image_tokens = config.max_pixels // (ip.patch_size * ip.merge_size) ** 2
    if max_image_tokens + 32 > config.max_length:
        raise DataError(
            f"max_pixels {config.max_pixels} allows {max_image_tokens} image tokens, too many for max_length "
            f"{config.max_length}: raise max_length or lower max_pixels"
        )

    def fits(e) -> bool:
        return len(e.images) * max_image_tokens + 32 <= config.max_length

    for rows in (data.train, data.eval):
        dropped = [e for e in rows if not fits(e)]
        if dropped:
            data.dropped += sorted({f"{e.origin}: {len(e.images)} images, up to {len(e.images) * max_image_tokens} "
                                    f"image tokens, over max_length {config.max_length}" for e in dropped})
            rows[:] = [e for e in rows if fits(e)]
    if data.dropped:
        logger.warning("dropped %d rows with too many images for max_length %d (raise max_length or lower max_pixels): %s",
                       len(data.dropped), config.max_length, "; ".join(data.dropped[:3]))
    if not data.train:
        raise DataError(f"no training row fits max_length {config.max_length} with its images: raise max_length or "
                        "lower max_pixels")


def _fingerprint_model(model_dir: Path) -> str:
    """Each file's name and sha256: another fine-tune of the same shapes is another model. The
    digest comes from the engine's record where the file is unchanged since the snapshot verified
    it (no re-hash of gigabytes), else the file is hashed here. The engine's own records
    (``.resumable/``) are not the model."""
    h = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file() and RECORD_DIR not in p.relative_to(model_dir).parts):
        h.update(f"{path.relative_to(model_dir).as_posix()}:{_sha256_of(path)}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _sha256_of(path: Path) -> str:
    record = VerifiedRecord.load(path)
    if record is not None and "sha256" in record.digests and record.matches(path):
        return record.digests["sha256"]
    return file_digest(path.resolve(), "sha256")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_result(out: Path) -> TrainResult | None:
    data = _read_json(out / RESULT_NAME)
    try:
        return TrainResult.from_json(data) if data else None
    except TypeError:
        return None


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
