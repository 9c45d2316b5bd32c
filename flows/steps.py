"""The flow's steps: each submits a task with its cache trusted only while the step's output is
still on disk as the cached result describes (a cheap check: stats and records, never a re-hash).

Downloads are submitted to the download fan-out's task runner (``TaskRunner.submit``: threads in
the flow-run process, or a Dask cluster), training to the flow's own. Submitting returns futures
at once: the model snapshot and the dataset files download concurrently, and training waits for both.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner

from resumable.redaction import redact
from tasks.caching import cached, peek_cached
from tasks.download import fetch_batch, fetch_is_current, fetch_with_resume
from tasks.extract import extract, extraction_is_current
from tasks.hub_source import hub_files, hub_files_current
from tasks.snapshot import model_snapshot, snapshot_is_current
from tasks.train import train, training_is_current
from tasks.verify import verify
from train_pipeline.config import DatasetSpec, FileSpec, ModelSpec, PipelineConfig
from train_pipeline.config.locations import training_output
from train_pipeline.config.registry import download_path, extract_target, extract_unwrap, is_archive
from train_pipeline.config.values import DOWNLOADS

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


@contextmanager
def sources(cfg: PipelineConfig, datasets: list[DatasetSpec]):
    """(model, datasets) to download: the config's (``datasets`` resolved from it), or the
    sample's served on 127.0.0.1."""
    if cfg.sample is not None:
        from offline.sample import serve_sample

        with serve_sample(cfg.sample) as s:
            yield s.model, list(s.datasets)
    else:
        with nullcontext():
            yield cfg.model, datasets


def task_retries(cfg: PipelineConfig) -> dict[str, Any]:
    """Prefect retries on top of the engine's own (which back off within one attempt): few, and
    only for transient errors (see tasks.caching.transient_only)."""
    return {"retries": cfg.task_retries, "retry_delay_seconds": [cfg.task_retry_delay, 3 * cfg.task_retry_delay]}


def snapshot_step(runner: TaskRunner, spec: ModelSpec, cfg: PipelineConfig, storage) -> PrefectFuture:
    params = dict(repo_id=spec.repo_id, revision=spec.revision, dest_root=str(cfg.path(cfg.models_cache)),
                  include=spec.include, exclude=spec.exclude, endpoint=spec.endpoint, max_workers=cfg.max_workers)
    previous = peek_cached(model_snapshot, params, storage, step=f"snapshot {spec.repo_id}@{spec.revision}")
    valid = previous is not None and snapshot_is_current(previous.path)
    return runner.submit(cached(model_snapshot, storage, valid=valid, **task_retries(cfg)), params)


def small_files(ds: DatasetSpec) -> tuple[FileSpec, ...]:
    """Files fetched as one batch: known to be small, not archives, in a dataset of many files."""
    if len(ds.files) <= BATCH_MIN_FILES:
        return ()
    return tuple(f for f in ds.files if f.size is not None and f.size < BATCH_MAX_SIZE and not is_archive(f.filename)
                 and not f.is_hub)


def dataset_steps(runner: TaskRunner, ds: DatasetSpec, cfg: PipelineConfig, storage) -> DatasetSteps:
    data_dir = cfg.path(cfg.data_dir)
    batch, small = None, small_files(ds)
    if small:
        dests = [download_path(data_dir, ds, f) for f in small]
        on_disk = all(fetch_is_current(d, f.size, f.hash) for d, f in zip(dests, small))
        batch = runner.submit(cached(fetch_batch, storage, valid=on_disk, **task_retries(cfg)), dict(
            files=small, dest_dir=str(dests[0].parent), jobs=cfg.max_workers, connections=cfg.connections,
            retries=cfg.retries))
    steps = [file_steps(runner, ds, f, cfg, storage) for f in ds.files if f not in small]
    return DatasetSteps(ds, steps, batch, small)


def file_steps(runner: TaskRunner, ds: DatasetSpec, f: FileSpec, cfg: PipelineConfig, storage) -> FileSteps:
    """fetch -> verify -> extract (an archive with a target) of one file; an hf:// source: hub_steps."""
    if f.is_hub:
        return hub_steps(runner, ds, f, cfg, storage)
    data_dir = cfg.path(cfg.data_dir)
    dest = download_path(data_dir, ds, f)
    on_disk = fetch_is_current(dest, f.size, f.hash)
    fetched = runner.submit(cached(fetch_with_resume, storage, valid=on_disk, **task_retries(cfg)), dict(
        url=f.url, dest=str(dest), size=f.size, hash=f.hash, mirrors=f.mirrors, connections=cfg.connections,
        retries=cfg.retries))
    verified = runner.submit(cached(verify, storage, valid=on_disk), dict(
        path=str(dest), fetched=fetched, size=f.size, hash=f.hash))
    extracted = None
    target = extract_target(data_dir, ds, f)
    if target is not None:
        unwrap = extract_unwrap(ds, f)
        extracted = runner.submit(cached(extract, storage, valid=extraction_is_current(dest, target, unwrap)), dict(
            archive=fetched, digest=verified, target=str(target), unwrap=unwrap))
    return FileSteps(f, fetched, verified, extracted)


def hub_steps(runner: TaskRunner, ds: DatasetSpec, f: FileSpec, cfg: PipelineConfig, storage) -> FileSteps:
    """An hf:// source: one task, the snapshot machinery into the dataset's downloads folder (its
    files under their repository paths, verified as they arrive: no separate verify or extract)."""
    # The dataset's other files land in the same folder under their names: never the source's to take.
    reserved = {o.filename: redact(o.url) for o in ds.files if not o.is_hub}
    params = dict(source=f.url, dest_dir=str(cfg.path(cfg.data_dir) / DOWNLOADS / ds.name), size=f.size, hash=f.hash,
                  endpoint=f.endpoint, max_workers=cfg.max_workers, reserved=reserved or None)
    previous = peek_cached(hub_files, params, storage, step=f"hf {f.url}")
    fetched = runner.submit(cached(hub_files, storage, valid=hub_files_current(previous), **task_retries(cfg)), params)
    return FileSteps(f, fetched, fetched, None)


def train_step(model: PrefectFuture, datasets: list[DatasetSteps], spec: ModelSpec, cfg: PipelineConfig,
               storage) -> PrefectFuture:
    """Fine-tune on every dataset of the run (mixed as ``train:`` says), in the flow-run process
    (the flow's own task runner), once all their files are fetched, verified and extracted."""
    data = {d.spec.name: training_inputs(d, cfg.path(cfg.data_dir)) for d in datasets}
    output_dir = training_output(cfg.path(cfg.results_dir), spec.repo_id, list(data))
    return cached(train, storage, valid=training_is_current(output_dir, cfg.train)).submit(
        model=model, data=data, output_dir=str(output_dir), config=cfg.train)


def training_inputs(d: DatasetSteps, data_dir) -> dict[str, list]:
    """What training reads of dataset ``d``: each archive's extraction target, and the downloads
    folder when the dataset has files that are not extracted (parquet shards, JSON, images); and
    what identifies that content for the cache key (archives by their extraction, other files by
    name and verified digest, batch-fetched files by their results)."""
    folders: list[str] = []
    content: list = []
    downloads = None
    for f in d.files:
        if f.extracted is not None:
            folders.append(str(extract_target(data_dir, d.spec, f.spec)))
            content.append(f.extracted)
        else:
            downloads = str(data_dir / DOWNLOADS / d.spec.name)  # download_path's folder; hf:// files land there too
            content.append((f.spec.filename, f.verified))
    if d.batch is not None:
        downloads = str(download_path(data_dir, d.spec, d.batch_specs[0]).parent)
        content.append(d.batch)
    if downloads is not None:
        folders.append(downloads)
    return {"folders": folders, "content": content}


def all_futures(model, datasets: list[DatasetSteps], trained) -> list[PrefectFuture]:
    futures = [model, trained]
    for d in datasets:
        futures.append(d.batch)
        for f in d.files:
            futures += [f.fetched, f.verified, f.extracted]
    return list({id(f): f for f in futures if f is not None}.values())  # an hf:// source's one task counts once
