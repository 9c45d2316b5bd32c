"""Loading a pipeline config: read and validate the file, then check what only the whole config
tells (registry names, archive targets, every step's folder), all before any network."""

from __future__ import annotations

import os
from pathlib import Path

from train_pipeline.config.locations import check_layout, check_overlaps, pipeline_locations
from train_pipeline.config.pipeline import PipelineConfig, parse_config
from train_pipeline.config.reading import read_yaml
from train_pipeline.config.registry import resolve_datasets
from train_pipeline.config.schema import DatasetSpec
from train_pipeline.config.values import SAMPLE_CONFIG


def load_config(path: str | os.PathLike | None = None, *, check: bool = True) -> PipelineConfig:
    """Read and validate a YAML config; ``None`` means the offline sample profile. ``check``: also
    :func:`check_config`."""
    path = SAMPLE_CONFIG if path is None else Path(path)
    cfg = parse_config(read_yaml(path), source=str(path))
    if check:
        check_config(cfg, source=str(path))
    return cfg


def planned_datasets(cfg: PipelineConfig, source: str = "config") -> list[DatasetSpec]:
    """The datasets a run of ``cfg`` downloads: the registry's and inline ones, or the sample's."""
    if cfg.sample is not None:
        from offline.sample import sample_datasets

        return sample_datasets()
    return resolve_datasets(cfg, source=source)


def check_config(cfg: PipelineConfig, source: str = "config") -> list[DatasetSpec]:
    """Everything only the whole config tells, before any network: registry names exist, archives
    extract to folders of their own, training finds what it reads, and no step's folder overlaps
    another's (see the module doc). Returns the datasets, resolved."""
    datasets = planned_datasets(cfg, source)
    check_layout(cfg, datasets, source)
    check_overlaps(pipeline_locations(cfg, datasets, source), source)
    return datasets
