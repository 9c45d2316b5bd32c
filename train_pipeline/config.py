"""The pipeline config: what to download, where to put it, how to train.

Validated completely before any network: every problem is reported as one line that names the
key and the fix (:class:`ConfigError`). No heavy imports here (no prefect, torch, transformers).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from resumable.errors import UsageError
from resumable.hashes import parse_hash
from resumable.http import check_url
from train_pipeline.training.config import TrainConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIGS_DIR = PROJECT_ROOT / "configs"
SAMPLE_CONFIG = CONFIGS_DIR / "sample.yaml"
RESULT_STORAGE_ENV = "TRAIN_PIPELINE_RESULT_STORAGE"
BLOCK_PREFIX = "block:"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ConfigError(ValueError):
    """The config is invalid; the message is one line naming the key and the fix."""


class _Strict(BaseModel):
    # frozen: hashable, so Prefect can use these in cache keys.
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileSpec(_Strict):
    """One file of a dataset."""

    url: str = Field(description="http(s) URL of the file")
    mirrors: tuple[str, ...] = Field((), description="other URLs of the same bytes, tried in order when a source fails")
    size: int | None = Field(None, ge=0, description="expected size in bytes (optional)")
    hash: str | None = Field(None, description="expected digest, 'sha256:HEX' (also md5/sha1/sha512) or bare hex")
    name: str | None = Field(None, description="file name on disk; default: the URL's last path segment")

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        return check_url(v)

    @field_validator("mirrors")
    @classmethod
    def _check_mirrors(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for m in v:
            check_url(m)
        return v

    @field_validator("hash")
    @classmethod
    def _check_hash(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            return str(parse_hash(v))  # normalised 'alg:hex'
        except UsageError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str | None) -> str | None:
        if v is not None and (not _NAME.match(v) or v in (".", "..")):
            raise ValueError(f"{v!r} is not a plain file name; use letters, digits, '.', '_' or '-' (no '/')")
        return v

    def cache_identity(self) -> tuple:
        """What a cache key sees: the bytes (name, size, hash); the URL only when no hash pins them."""
        return (self.filename, self.size, self.hash) if self.hash else (self.filename, self.size, self.url)

    @property
    def filename(self) -> str:
        if self.name:
            return self.name
        base = PurePosixPath(unquote(urlsplit(self.url).path)).name
        return base or "download"


class DatasetSpec(_Strict):
    """A named set of files, downloaded to ``<data_dir>/downloads/<name>/`` and extracted to
    ``<data_dir>/<extract_to>/``."""

    name: str = Field(description="registry name, e.g. outdoor_advertising")
    description: str = ""
    files: tuple[FileSpec, ...] = ()
    extract_to: str | None = Field(None, description="folder under data_dir for the extracted archives; null = no extraction")

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r} is not a valid dataset name; use letters, digits, '.', '_' or '-'")
        return v

    @field_validator("extract_to")
    @classmethod
    def _check_extract_to(cls, v: str | None) -> str | None:
        if v is not None:
            p = PurePosixPath(v)
            if p.is_absolute() or ".." in p.parts or not p.parts:
                raise ValueError(f"{v!r} must be a relative folder inside data_dir (no '..', not absolute)")
        return v

    @model_validator(mode="after")
    def _unique_names(self) -> DatasetSpec:
        names = [f.filename for f in self.files]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"two files would both be saved as {dupes[0]!r}; give one of them a distinct 'name'")
        return self


class ModelSpec(_Strict):
    """A Hub model repository, snapshotted into ``models_cache``."""

    repo_id: str = Field(description="Hub repository, e.g. Qwen/Qwen2-VL-2B-Instruct")
    revision: str = Field("main", min_length=1, description="branch, tag or commit sha")
    include: tuple[str, ...] | None = Field(None, description="glob patterns of files to download (default: all)")
    exclude: tuple[str, ...] | None = Field(None, description="glob patterns of files to skip")
    endpoint: str | None = Field(None, description="Hub endpoint URL (default: HF_ENDPOINT or huggingface.co)")

    @field_validator("repo_id")
    @classmethod
    def _check_repo(cls, v: str) -> str:
        if not _REPO_ID.match(v):
            raise ValueError(f"{v!r} is not a Hub repository id; write it as org/name")
        return v

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, v: str | None) -> str | None:
        return None if v is None else check_url(v).rstrip("/")


class SampleSpec(_Strict):
    """The offline sample: a tiny Qwen2-VL and a synthetic billboard dataset, built once and
    served on 127.0.0.1 for the duration of the run."""

    n_images: int = Field(24, ge=2, le=10_000)
    seed: int = Field(0, ge=0)
    build_dir: str = Field("./build/sample", description="where the sample model and archive are built (once)")


class TaskRunnerSpec(_Strict):
    """Where the download fan-out runs (model snapshot, fetch, verify, extract). Training always
    runs in the flow-run process."""

    type: str = Field("threads", description="'threads' (in the flow-run process, max_workers at a time) or 'dask'")
    address: str | None = Field(
        None, description="dask: scheduler address of an existing cluster (tcp://host:8786); null = a LocalCluster per run"
    )
    n_workers: int = Field(2, ge=1, le=256, description="dask LocalCluster: worker processes")
    threads_per_worker: int = Field(2, ge=1, le=64, description="dask LocalCluster: downloads at a time per worker")

    @field_validator("type")
    @classmethod
    def _check_type(cls, v: str) -> str:
        if v not in ("threads", "dask"):
            raise ValueError(f"{v!r} is not a task runner; use 'threads' or 'dask'")
        return v

    @field_validator("address")
    @classmethod
    def _check_address(cls, v: str | None) -> str | None:
        if v is not None:
            parts = urlsplit(v)
            if parts.scheme not in ("tcp", "tls", "ws", "wss", "inproc") or not (parts.hostname or parts.scheme == "inproc"):
                raise ValueError(f"{v!r} is not a Dask scheduler address; write it as tcp://host:8786")
        return v

    @model_validator(mode="after")
    def _address_needs_dask(self) -> TaskRunnerSpec:
        if self.address is not None and self.type != "dask":
            raise ValueError("address: only used with type: dask; set 'type: dask' or remove 'address'")
        return self


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
    connections: int = Field(1, ge=1, le=32, description="HTTP connections per large file")
    retries: int = Field(5, ge=0, le=50, description="engine retries per transfer (exponential backoff)")
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

    @field_validator("task_runner", mode="before")
    @classmethod
    def _task_runner_name(cls, v: Any) -> Any:
        return {"type": v} if isinstance(v, str) else v  # `task_runner: dask` is short for {type: dask}

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
        return p if p.is_absolute() else ((base or Path.cwd()) / p).resolve()

    def result_storage_ref(self) -> str | Path:
        """A Path (LocalFileSystem) or a saved block slug, never PREFECT_HOME-dependent."""
        value = self.result_storage or os.environ.get(RESULT_STORAGE_ENV) or str(Path(self.results_dir) / ".prefect-results")
        if value.startswith(BLOCK_PREFIX):
            return value[len(BLOCK_PREFIX) :]
        return self.path(value)


def _loc(err: Mapping[str, Any]) -> str:
    # Drop pydantic's union-branch tags ('str', 'DatasetSpec', 'function-after[...]').
    parts = [str(p) for p in err["loc"] if not (isinstance(p, str) and (p[:1].isupper() or "[" in p or p in ("str", "bool", "int")))]
    return ".".join(parts) or "config"


def _message(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"]).removeprefix("Value error, ")
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key; check its spelling (see configs/sample.yaml and the README for the keys)"
    if kind == "missing":
        return "required key is missing; add it"
    if kind in ("string_type", "int_type", "int_parsing", "bool_type", "float_type", "float_parsing", "tuple_type", "model_type", "dict_type"):
        return f"{msg} (got {err.get('input')!r}); fix the value's type"
    return msg


def format_validation_error(exc: ValidationError, source: str) -> str:
    errors = [(_loc(err), err) for err in exc.errors()]
    seen: dict[str, str] = {}
    for loc, err in errors:
        # A union (str | DatasetSpec) reports each branch; keep the dataset branch's details.
        if err["type"] == "string_type" and any(other.startswith(loc + ".") for other, _ in errors):
            continue
        seen.setdefault(loc, _message(err))
    return f"{source}: " + "; ".join(f"{k}: {v}" for k, v in seen.items())


def parse_config(data: Mapping[str, Any] | None, source: str = "config") -> PipelineConfig:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping of keys (got {type(data).__name__}); see configs/sample.yaml")
    try:
        return PipelineConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def read_yaml(path: str | os.PathLike, what: str = "config file") -> Any:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {str(path)!r} not found; check the path (e.g. --config configs/sample.yaml)")
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{where}: {problem}; fix the YAML syntax") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {str(path)!r} cannot be read ({exc.__class__.__name__}); check permissions and encoding") from None


def load_config(path: str | os.PathLike | None = None) -> PipelineConfig:
    """Read and validate a YAML config; ``None`` means the offline sample profile."""
    path = SAMPLE_CONFIG if path is None else Path(path)
    cfg = parse_config(read_yaml(path), source=str(path))
    # Registry names must exist: check now, before any network.
    from train_pipeline.registry import resolve_datasets

    resolve_datasets(cfg, source=str(path))
    return cfg
