"""The whole pipeline config (PipelineConfig: what to download, where to put it, how to train)
and its validation from a mapping (parse_config)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from train_pipeline.config.reading import format_validation_error
from train_pipeline.config.schema import DatasetSpec, ModelSpec, SampleSpec, TaskRunnerSpec, _Strict
from train_pipeline.config.values import (BLOCK_PREFIX, MAX_CONNECTIONS, MAX_RETRIES, RESULT_STORAGE_ENV, _BLOCK_SLUG,
                                          ConfigError, check_path)
from train_pipeline.training.settings import TrainConfig


class PipelineConfig(_Strict):
    """Everything the ``train-pipeline`` flow needs. Unknown keys are errors."""

    sample: SampleSpec | None = Field(
        None, description="run on the built-in offline sample (model and dataset served on 127.0.0.1)"
    )
    model: ModelSpec | None = Field(None, description="the model to fine-tune (not with sample)")
    datasets: tuple[str | DatasetSpec, ...] = Field(
        (), description="registry names (configs/datasets.yaml) or inline datasets"
    )
    models_cache: str = Field("./models_cache", description="model snapshots")
    data_dir: str = Field("./data", description="dataset downloads and extracted data")
    results_dir: str = Field("./results", description="training outputs")
    result_storage: str | None = Field(
        None,
        description=(
            "where Prefect keeps task results and cache records: a folder, or 'block:TYPE/NAME' for a saved "
            f"storage block; default ${RESULT_STORAGE_ENV}, else <results_dir>/.prefect-results"
        ),
    )
    registry: str | None = Field(None, description="dataset registry file (default configs/datasets.yaml)")
    max_workers: int = Field(4, ge=1, le=64, description="downloads running at the same time")
    connections: int | str = Field(
        "auto", description="HTTP connections per large file: 'auto' adds connections while they raise the speed "
                            "(up to 8), a number forces it")
    retries: int = Field(5, ge=0, le=MAX_RETRIES, description="engine retries per transfer (exponential backoff)")
    task_retries: int = Field(2, ge=0, le=10, description="Prefect retries of a download task after transient errors")
    task_retry_delay: float = Field(
        10.0, ge=0, le=3600, description="seconds before a download task's first Prefect retry (the second waits 3x)"
    )
    train: TrainConfig | None = Field(default_factory=TrainConfig, description="fine-tuning settings; null = download only")
    task_runner: TaskRunnerSpec = Field(
        default_factory=TaskRunnerSpec,
        description="where downloads run: {type: threads} (default) or {type: dask, address: null|tcp://..., n_workers: 2}",
    )

    @field_validator("sample", mode="before")
    @classmethod
    def _sample_true(cls, v: Any) -> Any:
        if v is True:
            return {}
        if v is False:
            return None
        return v

    @field_validator("connections", mode="before")
    @classmethod
    def _connections(cls, v: Any) -> int | str:
        if v == "auto" or (type(v) is int and 1 <= v <= MAX_CONNECTIONS):
            return v
        raise ValueError(f"{v!r}: use 'auto' (add connections while they raise the speed) or 1 to {MAX_CONNECTIONS}")

    @field_validator("task_runner", mode="before")
    @classmethod
    def _task_runner_name(cls, v: Any) -> Any:
        return {"type": v} if isinstance(v, str) else v  # `task_runner: dask` is short for {type: dask}

    @field_validator("models_cache", "data_dir", "results_dir", "registry")
    @classmethod
    def _check_paths(cls, v: str | None) -> str | None:
        return v if v is None else check_path(v)

    @field_validator("result_storage")
    @classmethod
    def _check_result_storage(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if v.startswith(BLOCK_PREFIX):
            if not _BLOCK_SLUG.fullmatch(v[len(BLOCK_PREFIX):]):
                raise ValueError(f"{v!r} names no saved block; write it as 'block:TYPE/NAME' (lowercase letters, digits "
                                 "and '-'), e.g. block:s3-bucket/results")
            return v
        if "://" in v:
            raise ValueError(f"{v!r} is a URL, not a folder; for remote storage save a Prefect block and write "
                             "'block:TYPE/NAME'")
        return check_path(v)

    @model_validator(mode="after")
    def _sources(self) -> PipelineConfig:
        if self.sample is not None and (self.model is not None or self.datasets):
            raise ValueError("sample: the sample brings its own model and dataset; remove 'model'/'datasets' or 'sample'")
        if self.sample is None and self.model is None and not self.datasets:
            raise ValueError("nothing to do: set 'model' and/or 'datasets' (or 'sample: true' for the offline sample)")
        if self.train is not None and self.sample is None and (self.model is None or not self.datasets):
            raise ValueError("train: training needs both 'model' and 'datasets'; add them or set 'train: null' to only download")
        names = [d if isinstance(d, str) else d.name for d in self.datasets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"datasets: {dupes[0]!r} is listed twice; keep one")
        return self

    # -- resolved locations ---------------------------------------------------------------
    def path(self, value: str, base: Path | None = None) -> Path:
        p = Path(os.path.expanduser(value))
        return (p if p.is_absolute() else (base or Path.cwd()) / p).resolve()  # '..' after a symlink: as the system does

    def result_storage_ref(self) -> str | Path:
        """A Path (LocalFileSystem) or a saved block slug, never PREFECT_HOME-dependent."""
        value = self.result_storage or os.environ.get(RESULT_STORAGE_ENV) or str(Path(self.results_dir) / ".prefect-results")
        if value.startswith(BLOCK_PREFIX):
            return value[len(BLOCK_PREFIX) :]
        return self.path(value)


def parse_config(data: Mapping[str, Any] | None, source: str = "config") -> PipelineConfig:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping of keys (got {type(data).__name__}); see configs/sample.yaml")
    try:
        return PipelineConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None
