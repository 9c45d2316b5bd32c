"""The dataset registry: named datasets (``configs/datasets.yaml``) the config refers to by name."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from pydantic import ValidationError

from train_pipeline.config.reading import format_validation_error, read_yaml
from train_pipeline.config.schema import DatasetSpec, FileSpec
from train_pipeline.config.values import CONFIGS_DIR, ConfigError

if TYPE_CHECKING:  # the whole config brings the training settings: not needed to check datasets
    from train_pipeline.config.pipeline import PipelineConfig

REGISTRY_ENV = "TRAIN_PIPELINE_REGISTRY"
DEFAULT_REGISTRY = CONFIGS_DIR / "datasets.yaml"
CUSTOM = "custom"


def registry_path(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY)


def load_registry(path: str | os.PathLike | None = None) -> Registry:
    """``{name: DatasetSpec}`` from the registry YAML (a top-level ``datasets:`` list). Read once
    while the file is unchanged (the config check and the flow both ask for it)."""
    p = registry_path(path)
    try:
        st = p.stat()
        stamp = (os.path.realpath(p), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
    except OSError:
        stamp = None
    with _READ_LOCK:
        hit = _READ.get(stamp) if stamp else None
    if hit is not None:
        return Registry(hit, path=p)
    entries = _read_registry(p)
    if stamp is not None:
        with _READ_LOCK:
            _READ.clear()  # the last registry read is all a run needs
            _READ[stamp] = entries
    return Registry(entries, path=p)


class Registry(dict):
    """``{name: DatasetSpec}`` that knows the file it was read from (for errors that say what to edit)."""

    def __init__(self, entries=(), path: Path | None = None):
        super().__init__(entries)
        self.path = path


_READ: dict[tuple, dict[str, DatasetSpec]] = {}
_READ_LOCK = threading.Lock()


def _read_registry(p: Path) -> dict[str, DatasetSpec]:
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
        cli = source.startswith("datasets download")  # the command line can give the files instead
        raise ConfigError(f"{source}: {missing_source(name, getattr(registry, 'path', None), cli=cli)}")
    return spec


def missing_source(name: str, path: Path | None, cli: bool = False) -> str:
    """What to do about a registry entry that lists no files (one line): set its files where it is
    written; ``cli``: or give them on the command line."""
    where = f"in {path}" if path is not None else "in the registry"
    fix = f"set its files (- url: hf://datasets/ORG/NAME@REVISION/PATH or https://HOST/FILE) {where}"
    if name == CUSTOM:
        return f"dataset {name!r} takes its files from the command line: datasets download {name} --urls U [U ...]"
    if cli:
        fix += ", or give them with --urls U [U ...]"
    return f"dataset {name!r} has no source yet: {fix}"


def dataset_origins(cfg: PipelineConfig, source: str = "the config") -> dict[str, str]:
    """{dataset name: where it is written}, for errors that say which file to edit: a registry
    entry ("entry 'x' in configs/datasets.yaml") or an inline dataset ("datasets.0 ('x') in FILE")."""
    out: dict[str, str] = {}
    for i, ref in enumerate(cfg.datasets):
        if isinstance(ref, str):
            out[ref] = f"entry {ref!r} in {registry_path(cfg.registry)}"
        else:
            out[ref.name] = f"datasets.{i} ({ref.name!r}) in {source}"
    return out


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
    """Where an archive is extracted; None when not extracted. One archive in the dataset:
    ``<data_dir>/<extract_to>``. Several: each its own ``<data_dir>/<extract_to>/<folder>``, the
    folder being the file name minus its archive suffix (``a.v2.zip`` -> ``a.v2``), or the whole
    file name where two archives would share that (``a.tar.gz`` and ``a.zip``). The rule depends
    only on the dataset's file list: no two archives of a dataset ever extract into one folder."""
    if not ds.extract_to or f.is_hub or not is_archive(f.filename):  # hf:// sources are never extracted
        return None
    target = data_dir / ds.extract_to
    folders = archive_folders(ds)
    return target / folders[f.filename] if len(folders) > 1 else target


def extract_unwrap(ds: DatasetSpec, f: FileSpec) -> str | None:
    """What to pass as ``resumable.extract.extract(..., unwrap=)`` for this file: where the dataset
    has several archives, each gets a folder named after it, and an archive that holds nothing but
    a folder of its own name (``a.tar.gz`` with ``a/``) fills that folder with its content instead of
    nesting it (``custom/a/``, not ``custom/a/a/``). None for a dataset's only archive: its target is
    ``extract_to`` itself and keeps the archive's layout."""
    if not ds.extract_to or f.is_hub or not is_archive(f.filename) or len(archive_folders(ds)) < 2:
        return None
    stem = archive_stem(f.filename)
    return stem if stem not in ("", ".", "..") else None


def archive_stem(filename: str) -> str:
    """The file name minus its archive suffix: ``a.v2.zip`` -> ``a.v2``, ``b.TAR.GZ`` -> ``b``."""
    lower = filename.lower()
    suffix = max((s for s in ARCHIVE_SUFFIXES if lower.endswith(s)), key=len, default="")
    return filename[: len(filename) - len(suffix)]


def _folder_name(name: str) -> str:
    # Our bookkeeping beside a target is hidden (.<target>.extract.json, .<target>.extracting-*):
    # a folder of our own never starts with '.', so it can never be taken for another's.
    return name if name and not name.startswith(".") else f"_{name}"


def archive_folders(ds: DatasetSpec) -> Mapping[str, str]:
    """{file name: its folder under extract_to} for the dataset's archives, all distinct.

    The stem where no other archive has the same one; else the whole file name (file names are
    unique in a dataset). A whole name can equal another archive's stem (``a.zip`` next to
    ``a.zip.tar``): that one then takes its whole name too, until nothing is shared."""
    with _FOLDERS_LOCK:
        hit = _FOLDERS.get(id(ds.files))
    if hit is not None and hit[0] is ds.files:  # called once per archive: 10,000 shards stay linear
        return hit[1]
    try:
        folders = MappingProxyType(_archive_folders([f.filename for f in ds.files if is_archive(f.filename) and not f.is_hub]))
    except ValueError as exc:
        raise ConfigError(f"dataset {ds.name!r}: {exc}") from None
    with _FOLDERS_LOCK:
        if len(_FOLDERS) >= 16:
            _FOLDERS.pop(next(iter(_FOLDERS)))
        _FOLDERS[id(ds.files)] = (ds.files, folders)  # holds the (immutable) tuple: its id stays its own
    return folders


_FOLDERS: dict[int, tuple[tuple[FileSpec, ...], Mapping[str, str]]] = {}
_FOLDERS_LOCK = threading.Lock()


def _archive_folders(names: list[str]) -> dict[str, str]:
    folder = {n: _folder_name(archive_stem(n)) for n in names}
    while True:
        seen = Counter(folder.values())
        shared = [n for n in names if seen[folder[n]] > 1 and folder[n] != _folder_name(n)]
        if not shared:
            break
        for n in shared:
            folder[n] = _folder_name(n)
    clash = [n for n in names if seen[folder[n]] > 1]  # only '_.x.zip' beside '.x.zip' gets here
    if clash:
        raise ValueError(f"the archives {clash[0]!r} and {clash[1]!r} would extract into one folder "
                         f"({folder[clash[0]]!r}); give one of them another 'name'")
    return folder


__all__ = [
    "archive_folders", "archive_stem", "download_path", "extract_target", "extract_unwrap", "is_archive","load_registry", "resolve_datasets", "custom_dataset", "get_dataset", "registry_path", "FileSpec",
    "Registry", "missing_source", "dataset_origins"]
