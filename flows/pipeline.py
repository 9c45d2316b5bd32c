"""The ``train-pipeline`` flow: fetch, verify and extract each dataset file, snapshot the model
(concurrently), then train.

    python flows/pipeline.py                                    # the offline sample, end to end
    python flows/pipeline.py --config configs/qwen2-vl-2b.yaml  # the real model (internet + GPU)

Every step is cached across runs in an explicit result storage, and trusted only while its output
on disk is still what the cached result describes (checked cheaply, never by re-hashing). A run
that failed at a step, re-run (or retried from the UI) once the cause is fixed, executes from that
step on; the steps before it are Cached.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python flows/pipeline.py` and Prefect's entrypoint loader
    sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
from contextlib import contextmanager, nullcontext  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow, get_run_logger  # noqa: E402
from prefect.artifacts import create_table_artifact  # noqa: E402
from prefect.futures import PrefectFuture, wait  # noqa: E402
from prefect.states import State  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from tasks.caching import cached, peek_cached  # noqa: E402
from tasks.download import fetch_batch, fetch_is_current, fetch_with_resume  # noqa: E402
from tasks.extract import extract, extraction_is_current  # noqa: E402
from tasks.model import model_snapshot, snapshot_is_current  # noqa: E402
from tasks.train import train, training_is_current  # noqa: E402
from tasks.verify import verify  # noqa: E402
from train_pipeline import report  # noqa: E402
from train_pipeline.config import ConfigError, DatasetSpec, FileSpec, ModelSpec, PipelineConfig, load_config  # noqa: E402
from train_pipeline.registry import download_path, extract_target, is_archive, resolve_datasets  # noqa: E402

SUMMARY_ARTIFACT = "download-summary"
BATCH_MIN_FILES = 5  # a dataset with more files than this fetches its small ones in one task
BATCH_MAX_SIZE = 16 << 20


@dataclass
class FileSteps:
    spec: FileSpec
    fetched: PrefectFuture
    verified: PrefectFuture
    extracted: PrefectFuture | None


@dataclass
class DatasetSteps:
    spec: DatasetSpec
    files: list[FileSteps]
    batch: PrefectFuture | None = None  # the small files, fetched together
    batch_specs: tuple[FileSpec, ...] = ()


@flow(name="train-pipeline", task_runner=ThreadPoolTaskRunner(max_workers=4))
def train_pipeline(config: PipelineConfig | None = None) -> dict[str, Any]:
    """Download the model and datasets (resumable, verified), extract, and fine-tune.

    ``config`` defaults to the offline sample profile (configs/sample.yaml).
    """
    cfg = config or load_config()
    storage = cfg.result_storage_ref()
    with sources(cfg) as (model_spec, dataset_specs):
        model = snapshot_step(model_spec, cfg, storage) if model_spec else None
        datasets = [dataset_steps(ds, cfg, storage) for ds in dataset_specs]
        trained = train_step(model, datasets[0], model_spec, cfg, storage) if cfg.train and model and datasets else None
        wait(all_futures(model, datasets, trained))
    publish_summary(model, model_spec, datasets)
    raise_first_failure(model, datasets, trained)
    return {
        "model": model.result().path if model else None,
        "datasets": {d.spec.name: str(cfg.path(cfg.data_dir) / (d.spec.extract_to or f"downloads/{d.spec.name}"))
                     for d in datasets},
        "final_model_dir": trained.result().final_model_dir if trained else None,
    }


# -- the steps ------------------------------------------------------------------------------
@contextmanager
def sources(cfg: PipelineConfig):
    """(model, datasets) to download: the config's, or the sample's served on 127.0.0.1."""
    if cfg.sample is not None:
        from train_pipeline.sample import serve_sample

        with serve_sample(cfg.sample) as s:
            yield s.model, list(s.datasets)
    else:
        with nullcontext():
            yield cfg.model, resolve_datasets(cfg)


def task_retries(cfg: PipelineConfig) -> dict[str, Any]:
    """Prefect retries on top of the engine's own (which back off within one attempt): few, and
    only for transient errors (see tasks.caching.transient_only)."""
    return {"retries": cfg.task_retries, "retry_delay_seconds": [cfg.task_retry_delay, 3 * cfg.task_retry_delay]}


def snapshot_step(spec: ModelSpec, cfg: PipelineConfig, storage) -> PrefectFuture:
    params = dict(repo_id=spec.repo_id, revision=spec.revision, dest_root=str(cfg.path(cfg.models_cache)),
                  include=spec.include, exclude=spec.exclude, endpoint=spec.endpoint, max_workers=cfg.max_workers)
    previous = peek_cached(model_snapshot, params, storage)
    valid = previous is not None and snapshot_is_current(previous.path)
    return cached(model_snapshot, storage, valid=valid, **task_retries(cfg)).submit(**params)


def small_files(ds: DatasetSpec) -> tuple[FileSpec, ...]:
    """Files fetched as one batch: known to be small, not archives, in a dataset of many files."""
    if len(ds.files) <= BATCH_MIN_FILES:
        return ()
    return tuple(f for f in ds.files if f.size is not None and f.size < BATCH_MAX_SIZE and not is_archive(f.filename))


def dataset_steps(ds: DatasetSpec, cfg: PipelineConfig, storage) -> DatasetSteps:
    data_dir = cfg.path(cfg.data_dir)
    batch, small = None, small_files(ds)
    if small:
        dests = [download_path(data_dir, ds, f) for f in small]
        on_disk = all(fetch_is_current(d, f.size, f.hash) for d, f in zip(dests, small))
        batch = cached(fetch_batch, storage, valid=on_disk, **task_retries(cfg)).submit(
            files=small, dest_dir=str(dests[0].parent), jobs=cfg.max_workers, connections=cfg.connections,
            retries=cfg.retries)
    steps = []
    for f in ds.files:
        if f in small:
            continue
        dest = download_path(data_dir, ds, f)
        on_disk = fetch_is_current(dest, f.size, f.hash)
        fetched = cached(fetch_with_resume, storage, valid=on_disk, **task_retries(cfg)).submit(
            url=f.url, dest=str(dest), size=f.size, hash=f.hash, mirrors=f.mirrors, connections=cfg.connections,
            retries=cfg.retries)
        verified = cached(verify, storage, valid=on_disk).submit(path=str(dest), fetched=fetched, size=f.size,
                                                                  hash=f.hash)
        extracted = None
        target = extract_target(data_dir, ds, f)
        if target is not None:
            extracted = cached(extract, storage, valid=extraction_is_current(dest, target)).submit(
                archive=fetched, digest=verified, target=str(target))
        steps.append(FileSteps(f, fetched, verified, extracted))
    return DatasetSteps(ds, steps, batch, small)


def train_step(model: PrefectFuture, data: DatasetSteps, spec: ModelSpec, cfg: PipelineConfig, storage) -> PrefectFuture:
    extracted = next((f.extracted for f in data.files if f.extracted is not None), None)
    if extracted is None:
        raise ConfigError(f"datasets: {data.spec.name!r} has no archive to extract; training needs an imagefolder "
                          "archive with extract_to set")
    output_dir = cfg.path(cfg.results_dir) / f"{spec.repo_id.split('/')[-1]}-{data.spec.name}"
    return cached(train, storage, valid=training_is_current(output_dir, cfg.train)).submit(
        model=model, data=extracted, output_dir=str(output_dir), config=cfg.train)


# -- reporting ------------------------------------------------------------------------------
def all_futures(model, datasets: list[DatasetSteps], trained) -> list[PrefectFuture]:
    futures = [model, trained]
    for d in datasets:
        futures.append(d.batch)
        for f in d.files:
            futures += [f.fetched, f.verified, f.extracted]
    return [f for f in futures if f is not None]


def _ok(state: State) -> bool:
    return state.is_completed()


def summary_rows(model: PrefectFuture | None, spec: ModelSpec | None, datasets: list[DatasetSteps]) -> list[report.Row]:
    rows = []
    for d in datasets:
        if d.batch is not None:
            rows += batch_rows(d)
        for f in d.files:
            fetch_state, verify_state = f.fetched.state, f.verified.state
            if not _ok(fetch_state):
                rows.append(report.file_row(f.spec.filename, f.spec.url, f.spec.size or -1, "failed", 0, 0.0, None))
                continue
            r = fetch_state.result()
            cached_run = fetch_state.name == "Cached"
            digest = verify_state.result() if _ok(verify_state) else None
            rows.append(report.file_row(r.path, r.url, r.size, "cached" if cached_run else r.status,
                                        0 if cached_run else r.bytes_transferred, 0.0 if cached_run else r.seconds,
                                        digest or ("NOT VERIFIED" if not _ok(verify_state) else r.digest)))
    if model is not None:
        state = model.state
        if _ok(state):
            s = state.result()
            cached_run = state.name == "Cached"
            rows.append(report.Row(f"{s.repo_id}@{s.commit[:12]} ({s.files} files)", s.bytes_total,
                                   report.source_of(spec.endpoint) if spec.endpoint else "huggingface.co",
                                   "cached" if cached_run else s.status, 0 if cached_run else s.bytes_transferred,
                                   0.0 if cached_run else s.seconds, f"commit:{s.commit}"))
        else:
            rows.append(report.Row("model snapshot", -1, "hub", "failed", 0, 0.0, ""))
    return rows


def batch_rows(d: DatasetSteps) -> list[report.Row]:
    state = d.batch.state
    if not _ok(state):
        return [report.file_row(f.filename, f.url, f.size or -1, "failed", 0, 0.0, None) for f in d.batch_specs]
    cached_run = state.name == "Cached"
    return [report.file_row(r.path, r.url, r.size, "cached" if cached_run else r.status,
                            0 if cached_run else r.bytes_transferred, 0.0 if cached_run else r.seconds, r.digest)
            for r in state.result()]


def publish_summary(model, spec: ModelSpec | None, datasets: list[DatasetSteps]) -> None:
    rows = summary_rows(model, spec, datasets)
    print("\n" + report.render(rows), flush=True)
    try:
        create_table_artifact(table=report.table(rows), key=SUMMARY_ARTIFACT,
                              description="Downloads of this run: status, bytes transferred, speed, verified hash")
    except Exception as exc:  # the terminal table is already out; the UI copy is best effort
        get_run_logger().warning("summary artifact not created: %s", exc)


def raise_first_failure(model, datasets: list[DatasetSteps], trained) -> None:
    for future in all_futures(model, datasets, trained):
        state = future.state
        if state.is_failed() or state.is_crashed():
            state.result()  # raises the step's own error: the flow run fails with it


# -- command line ---------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python flows/pipeline.py",
        description=(
            "Run the train-pipeline flow locally: snapshot the model and fetch/verify/extract the datasets "
            "(concurrently, resumable, cached across runs), then fine-tune. With no options it runs the "
            "offline sample end to end on 127.0.0.1 (a few minutes on CPU). A re-run after a failure "
            "executes only from the failed step on."
        ),
    )
    p.add_argument("--config", metavar="FILE",
                   help="pipeline YAML (default: configs/sample.yaml, the offline sample; "
                        "configs/qwen2-vl-2b.yaml is the real Qwen2-VL-2B profile)")
    p.add_argument("--check", action="store_true",
                   help="only validate the config (and the dataset names against the registry), then exit; no network")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.config or 'configs/sample.yaml'}: OK")
        return 0
    runner = ThreadPoolTaskRunner(max_workers=cfg.max_workers)
    state = train_pipeline.with_options(task_runner=runner)(config=cfg, return_state=True)
    if not state.is_completed():
        print(f"error: train-pipeline {state.type.value.lower()}: {state.message}; fix the cause and run the same "
              "command again: it continues from the failed step", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
