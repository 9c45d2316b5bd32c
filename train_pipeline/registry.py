"""The dataset registry: named datasets (``configs/datasets.yaml``) the config refers to by name."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from train_pipeline.config import CONFIGS_DIR, ConfigError, DatasetSpec, FileSpec, PipelineConfig, format_validation_error, read_yaml

REGISTRY_ENV = "TRAIN_PIPELINE_REGISTRY"
DEFAULT_REGISTRY = CONFIGS_DIR / "datasets.yaml"
CUSTOM = "custom"


def registry_path(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY)


def load_registry(path: str | os.PathLike | None = None) -> dict[str, DatasetSpec]:
    """``{name: DatasetSpec}`` from the registry YAML (a top-level ``datasets:`` list)."""
    p = registry_path(path)
    data = read_yaml(p, what="dataset registry")
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), list):
        raise ConfigError(f"{p}: expected a top-level 'datasets:' list of entries; see configs/datasets.yaml")
    out: dict[str, DatasetSpec] = {}
    for i, entry in enumerate(data["datasets"]):
        try:
            spec = DatasetSpec.model_validate(entry)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, f"{p}: datasets.{i}")) from None
        if spec.name in out:
            raise ConfigError(f"{p}: datasets.{i}: name {spec.name!r} is already used; give each entry its own name")
        out[spec.name] = spec
    return out


def custom_dataset(urls: Iterable[str], base: DatasetSpec | None = None, name: str = CUSTOM) -> DatasetSpec:
    """The guide's ``--dataset custom --urls U ...``: a dataset made of the given URLs."""
    files = [{"url": u} for u in urls]
    data = (base.model_dump() if base else {"name": name, "extract_to": name}) | {"files": files}
    try:
        return DatasetSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "--urls")) from None


def get_dataset(name: str, registry: dict[str, DatasetSpec], source: str = "datasets") -> DatasetSpec:
    try:
        spec = registry[name]
    except KeyError:
        known = ", ".join(sorted(registry)) or "none"
        raise ConfigError(
            f"{source}: unknown dataset {name!r}; use one of {known} (train-pipeline datasets list) or add it to the registry"
        ) from None
    if not spec.files:
        raise ConfigError(f"{source}: dataset {name!r} has no files; pass its URLs (--urls U ...) or list them in the registry")
    return spec


def resolve_datasets(cfg: PipelineConfig, source: str = "config") -> list[DatasetSpec]:
    """The config's datasets as full specs (names looked up in the registry)."""
    names = [d for d in cfg.datasets if isinstance(d, str)]
    registry = load_registry(cfg.registry) if names else {}
    out = []
    for i, ref in enumerate(cfg.datasets):
        if isinstance(ref, str):
            out.append(get_dataset(ref, registry, source=f"{source}: datasets.{i}"))
        else:
            if not ref.files:
                raise ConfigError(f"{source}: datasets.{i}.files: dataset {ref.name!r} lists no files; add at least one url")
            out.append(ref)
    return out


ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst", ".tzst")


def is_archive(filename: str) -> bool:
    return filename.lower().endswith(ARCHIVE_SUFFIXES)


def download_path(data_dir: Path, ds: DatasetSpec, f: FileSpec) -> Path:
    """Where a dataset file is downloaded: ``<data_dir>/downloads/<dataset>/<file>``."""
    return data_dir / "downloads" / ds.name / f.filename


def extract_target(data_dir: Path, ds: DatasetSpec, f: FileSpec) -> Path | None:
    """Where an archive is extracted: ``<data_dir>/<extract_to>`` (one archive) or
    ``<data_dir>/<extract_to>/<archive stem>`` (several); None when not extracted."""
    if not ds.extract_to or not is_archive(f.filename):
        return None
    target = data_dir / ds.extract_to
    if sum(is_archive(x.filename) for x in ds.files) > 1:
        target = target / f.filename.split(".")[0]
    return target


__all__ = [
    "download_path", "extract_target", "is_archive","load_registry", "resolve_datasets", "custom_dataset", "get_dataset", "registry_path", "FileSpec"]
