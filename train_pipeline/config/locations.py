"""Where each step writes, checked as a whole before anything runs.

Some folders belong to one step, which replaces or deletes what is inside them: an extraction
target (replaced by a new version of its archive), a dataset's downloads folder, a model
snapshot folder, a training output folder (checkpoints, final/), the Prefect result storage, the
sample's build folder. Others only hold such folders (``data_dir``, ``results_dir``,
``models_cache``). A location equal to or inside a folder that another step owns could be
deleted or overwritten by that step: the config is refused with one line naming both settings.
Paths are compared as the system resolves them (symlinks followed), so a link cannot hide an
overlap.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from train_pipeline.config.registry import extract_target, is_archive
from train_pipeline.config.schema import DatasetSpec
from train_pipeline.config.values import DOWNLOADS, NAME_MAX, RESULT_STORAGE_ENV, ConfigError

if TYPE_CHECKING:  # the whole config brings the training settings: not needed to check datasets
    from train_pipeline.config.pipeline import PipelineConfig


@dataclass(frozen=True)
class Location:
    setting: str  # how the user names it: "results_dir", "datasets.1 (billboards) extract_to"
    path: Path  # absolute, symlinks resolved
    owner: str | None = None  # what the owning step does there ("extraction replaces it"); None: a holder only


def real_path(value: str | os.PathLike, base: Path | None = None) -> Path:
    """Absolute, ``~`` expanded, symlinks resolved as far as the path exists."""
    p = Path(os.path.expanduser(value))
    return Path(os.path.realpath(p if p.is_absolute() else (base or Path.cwd()) / p))


def training_output(results_dir: Path, repo_id: str, datasets: str | Sequence[str]) -> Path:
    """The training output folder of a model fine-tuned on the run's datasets:
    ``<results_dir>/<model>-<dataset>``, ``<model>-<a>+<b>`` for several, and for many whose joined
    names grow long ``<model>-<a>+<n>-more-<digest of all names>``."""
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    joined = "+".join(names)
    if len(names) > 1 and len(joined) > 100:
        digest = hashlib.sha256("\0".join(names).encode()).hexdigest()[:10]
        joined = f"{names[0]}+{len(names) - 1}-more-{digest}"
    return results_dir / f"{repo_id.split('/')[-1]}-{joined}"


def check_overlaps(locations: Iterable[Location], source: str, mine: Iterable[Location] | None = None) -> None:
    """ConfigError when a location equals or lies inside one that another step owns (or when two
    steps own one folder). Linear in the number of locations (each looks up its parents).
    ``mine``: only overlaps that involve one of these count (a command that writes only those;
    the others are there to be respected, not checked among themselves)."""
    by_path: dict[Path, list[Location]] = {}
    locations = list(locations)
    for loc in locations:
        by_path.setdefault(loc.path, []).append(loc)
    checked = None if mine is None else {id(loc) for loc in mine}
    for loc in locations:
        for other in by_path.get(loc.path, ()):
            if checked is not None and id(loc) not in checked and id(other) not in checked:
                continue
            if other is not loc and (loc.owner or other.owner):
                owner = loc if loc.owner else other
                raise ConfigError(f"{source}: {loc.setting} and {other.setting} are the same folder ({loc.path}), "
                                  f"where {owner.owner}: one would delete or overwrite the other's files; give each "
                                  "its own folder")
        for parent in loc.path.parents:
            for outer in by_path.get(parent, ()):
                if checked is not None and id(loc) not in checked and id(outer) not in checked:
                    continue
                if outer.owner:
                    raise ConfigError(f"{source}: {loc.setting} ({loc.path}) lies inside {outer.setting} "
                                      f"({outer.path}), where {outer.owner}: a run could delete or overwrite it; "
                                      "give each its own folder, side by side")


def dataset_locations(data_dir: Path, datasets: list[DatasetSpec], source: str,
                      prefix: str = "datasets", files_unknown: bool = False,
                      refuse_links: bool = True) -> list[Location]:
    """Each dataset's downloads folder and extraction targets (``prefix`` '': no index in names).
    A target that is a symlink is refused: extraction replaces the folder itself, never a link.
    ``files_unknown``: registry entries whose files come from the command line (``custom``):
    their whole ``extract_to`` counts as a target."""
    out = []
    for i, ds in enumerate(datasets):
        name = f"{prefix}.{i} ({ds.name})" if prefix else ds.name
        out.append(Location(f"{name} downloads folder", real_path(data_dir / DOWNLOADS / ds.name),
                            "the downloads write its files"))
        if files_unknown and ds.extract_to and not ds.files:
            out.append(Location(f"{name} extract_to", real_path(data_dir / ds.extract_to),
                                "extraction replaces it with the archive's content"))
        archives = [(f, t) for f in ds.files if (t := extract_target(data_dir, ds, f)) is not None]
        for f, target in archives:
            setting = f"{name} extract_to" + (f" (archive {f.filename})" if len(archives) > 1 else "")
            if refuse_links and target.is_symlink():
                raise ConfigError(f"{source}: {setting}: {target} is a symlink (to {os.path.realpath(target)}); "
                                  "extraction replaces its target folder as a whole: remove the link, or set "
                                  "data_dir/extract_to to the real folder")
            out.append(Location(setting, real_path(target), "extraction replaces it with the archive's content"))
    return out


def pipeline_locations(cfg: PipelineConfig, datasets: list[DatasetSpec], source: str = "config") -> list[Location]:
    """Every folder a run of ``cfg`` writes (``datasets``: the resolved datasets, or the sample's)."""
    from resumable.hub.snapshots import repo_folder

    data_dir, results_dir, models_cache = (real_path(cfg.path(v)) for v in (cfg.data_dir, cfg.results_dir, cfg.models_cache))
    out = [Location("models_cache", models_cache), Location("data_dir", data_dir), Location("results_dir", results_dir)]
    out += dataset_locations(data_dir, datasets, source)
    repo_id = _model_repo(cfg)
    if repo_id is not None:
        out.append(Location(f"the snapshot of {repo_id} (models_cache)", real_path(repo_folder(models_cache, repo_id)),
                            "the model snapshot writes the repository's files"))
        if cfg.train is not None and datasets:
            names = [d.name for d in datasets]
            out.append(Location(f"the training output (results_dir) of {'+'.join(names)}",
                                real_path(training_output(results_dir, repo_id, names)),
                                "training writes checkpoints and final/"))
    if any(isinstance(d, str) for d in cfg.datasets):
        from train_pipeline.config.registry import registry_path

        out.append(Location("registry", real_path(registry_path(cfg.registry))))  # a file: never inside a step's folder
    storage = cfg.result_storage_ref()
    if isinstance(storage, Path):
        setting = ("result_storage" if cfg.result_storage else
                   f"${RESULT_STORAGE_ENV}" if os.environ.get(RESULT_STORAGE_ENV) else "the result storage (results_dir)")
        out.append(Location(setting, real_path(storage), "Prefect keeps task results and cache records"))
    if cfg.sample is not None:
        out.append(Location("sample.build_dir", real_path(cfg.sample.build_dir), "the sample is built (and rebuilt)"))
    return out


def _model_repo(cfg: PipelineConfig) -> str | None:
    if cfg.sample is not None:
        from offline.sample import SAMPLE_REPO

        return SAMPLE_REPO
    return cfg.model.repo_id if cfg.model is not None else None


def check_layout(cfg: PipelineConfig | None, datasets: list[DatasetSpec], source: str = "config") -> None:
    """What only the resolved datasets tell (registry entries included): every archive extracts to
    its own folder, training finds something to read in every dataset it uses (and the datasets its
    settings name), and an output folder name it can create.
    ``cfg`` None: datasets from the command line (no training, no 'datasets.N' in messages)."""
    root = Path("/data")
    targets: list[tuple[PurePosixPath, DatasetSpec, str]] = []
    for i, ds in enumerate(datasets):
        at = f"datasets.{i}: " if cfg is not None else ""
        for f in ds.files:
            try:
                target = extract_target(root, ds, f)  # the extraction's own rule
            except ConfigError as exc:
                raise ConfigError(f"{source}: {at}{exc}") from None
            if target is None:
                continue
            t = PurePosixPath(target.relative_to(root))
            for other, other_ds, other_file in targets:
                if t == other or t in other.parents or other in t.parents:
                    fix = ("give the archives distinct names (set 'name')" if other_ds is ds
                           else "give each dataset its own extract_to")
                    raise ConfigError(f"{source}: {at}{ds.name}/{f.filename} would extract to {str(t)!r}, "
                                      f"{'the same folder as' if t == other else 'overlapping the folder of'} "
                                      f"{other_ds.name}/{other_file}; {fix}")
            targets.append((t, ds, f.filename))
    if cfg is None or cfg.train is None or (cfg.sample is None and cfg.model is None) or not datasets:
        return
    problem = cfg.train.check_dataset_names([d.name for d in datasets])
    if problem:
        raise ConfigError(f"{source}: {problem}")
    if cfg.sample is not None:
        return
    for i, ds in enumerate(datasets):
        used = cfg.train.dataset_settings(ds.name).weight > 0 or (cfg.train.eval and cfg.train.eval.dataset == ds.name)
        why = untrainable(ds) if used else None
        if why:
            raise ConfigError(f"{source}: datasets.{i}: training reads every dataset of the run, but {ds.name!r} {why}; "
                              f"or give it weight 0 (train.datasets: {{{ds.name}: {{weight: 0}}}}), or set 'train: null' "
                              "to only download")
    output = training_output(Path("/"), cfg.model.repo_id, [d.name for d in datasets]).name
    if len(output.encode()) > NAME_MAX:
        raise ConfigError(f"{source}: datasets.0: the training output folder {output[:40]!r}... is longer than "
                          f"{NAME_MAX} bytes; give the dataset a shorter name")


DATA_SUFFIXES = (".parquet", ".arrow", ".json", ".jsonl")


def untrainable(ds: DatasetSpec) -> str | None:
    """Why training could never find data in ``ds`` (one phrase), else None: it has an archive it
    extracts, or a file that may be data (a .parquet/.arrow/.json/.jsonl; a Hub source or a name
    without a suffix, which this check cannot judge)."""
    archives = [f for f in ds.files if is_archive(f.filename) and not f.is_hub]  # hf:// sources are not extracted
    if archives and ds.extract_to:
        return None
    if any(not is_archive(f.filename) and (f.filename.lower().endswith(DATA_SUFFIXES) or "." not in f.filename
                                           or f.is_hub) for f in ds.files):
        return None
    if archives:
        return "has archives and no extract_to: set extract_to so they are extracted"
    return ("has no archive to extract and no data file (.parquet, .arrow, .json, .jsonl): list its archive "
            "(and set extract_to) or its data files")


def check_training_folders(model_dir: Path, data_dir: Path, output_dir: Path) -> str | None:
    """Why ``output_dir`` cannot hold a training of ``model_dir`` on ``data_dir`` (one folder inside
    or equal to another: training would write into, or delete, what it reads), else None."""
    out = real_path(output_dir)
    for name, path in (("model_dir", model_dir), ("data_dir", data_dir)):
        p = real_path(path)
        if out == p or p in out.parents:
            return f"output_dir {output_dir} is {'the same folder as' if out == p else 'inside'} {name} {path}"
        if out in p.parents:
            return f"{name} {path} lies inside output_dir {output_dir}"
    return None
