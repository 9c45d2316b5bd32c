"""The parts of the pipeline config: files, datasets, the model, the sample, the task runner
(the whole, with its training settings: pipeline.py; the dataset registry and its commands need
only these, and start without the training settings' models).

Validated completely before any network (see reading.py for how problems are reported).
"""

from __future__ import annotations

from collections import Counter
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from resumable.errors import UsageError
from resumable.hashes import parse_hash
from resumable.http import check_url
from resumable.hub.snapshots import check_endpoint, check_repo_id, check_revision
from resumable.hub.uri import is_hf_uri, parse as parse_hf_uri
from resumable.redaction import redact
from resumable.state import RECORD_DIR
from train_pipeline.config.values import (DOWNLOADS, MAX_FILE_SIZE, NAME_MAX, _CONTROL, _REPO_ID, _encoded,
                                          check_file_name, check_path)


class _Strict(BaseModel):
    # frozen: hashable, so Prefect can use these in cache keys.
    model_config = ConfigDict(extra="forbid", frozen=True)


class _WithEndpoint(_Strict):
    """A spec with a Hub ``endpoint`` (a file's hf:// source, the model): checked by the snapshot's
    own rule, and stored without userinfo or query."""

    @field_validator("endpoint", check_fields=False)
    @classmethod
    def _check_endpoint(cls, v: str | None) -> str | None:
        return None if v is None else check_endpoint(v)

    @field_serializer("endpoint", when_used="json", check_fields=False)
    def _endpoint_redacted(self, v: str | None) -> str | None:
        return None if v is None else redact(v)


def last_segment(path: str) -> str:
    """``PurePosixPath(path).name`` without building the path (a file name per URL, several times
    each: a tenth of the start-up of a 1,000-file ``datasets download``): empty and '.' segments
    do not count."""
    for segment in reversed(path.split("/")):
        if segment and segment != ".":
            return segment
    return ""


class FileSpec(_WithEndpoint):
    """One file of a dataset."""

    url: str = Field(description="http(s) URL of the file, or an hf:// source (hf://datasets/ORG/NAME[@REV][/PATH-OR-GLOB])")
    mirrors: tuple[str, ...] = Field((), description="other URLs of the same bytes, tried in order when a source fails")
    size: int | None = Field(None, ge=0, le=MAX_FILE_SIZE, description="expected size in bytes (optional)")
    hash: str | None = Field(None, description="expected digest, 'sha256:HEX' (also md5/sha1/sha512) or bare hex")
    name: str | None = Field(None, description="file name on disk; default: the URL's last path segment")
    endpoint: str | None = Field(None, description="hf:// sources: the Hub's address (default HF_ENDPOINT or huggingface.co)")

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        if is_hf_uri(v):
            parse_hf_uri(v)  # a one-line error naming it and the valid form
            return v
        return check_url(v)


    @field_validator("mirrors")
    @classmethod
    def _check_mirrors(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for m in v:
            check_url(m)
        return v

    # Prefect stores a flow run's parameters as JSON (model_dump(mode="json")): signed URLs keep
    # their query and userinfo out of its database; the running flow has the real ones.
    @field_serializer("url", when_used="json")
    def _url_redacted(self, v: str) -> str:
        return redact(v)

    @field_serializer("mirrors", when_used="json")
    def _mirrors_redacted(self, v: tuple[str, ...]) -> list[str]:
        return [redact(m) for m in v]

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
        return v if v is None else check_file_name(v)

    @model_validator(mode="after")
    def _check_file(self) -> FileSpec:
        if self.is_hub:
            return self._check_hub()
        if self.endpoint is not None:
            raise ValueError("endpoint: only for hf:// sources (the Hub's address); remove it, or write the url as "
                             "hf://datasets/ORG/NAME...")
        if self.name is None:
            derived = self.filename
            if derived in ("..", RECORD_DIR) or len(_encoded(derived)) > NAME_MAX:
                raise ValueError(f"url: its last path segment {derived[:60]!r} cannot be a file name "
                                 f"({'too long' if len(_encoded(derived)) > NAME_MAX else 'reserved'}); "
                                 "give the file a 'name' (in the config or the registry) to save it as")
        for i, m in enumerate(self.mirrors):
            if m == self.url or m in self.mirrors[:i]:
                raise ValueError(f"mirrors.{i}: {redact(m)!r} is {'the url itself' if m == self.url else 'listed twice'}; "
                                 "a mirror is another source of the same bytes: remove it")
        if self.hash is not None and self.size is not None:
            expected = parse_hash(self.hash)
            empty = expected.new().hexdigest() == expected.hexdigest
            if (self.size == 0) != empty:
                what = "the digest of no bytes" if empty else "not the digest of no bytes"
                raise ValueError(f"hash: {self.hash} is {what}, but size is {self.size}; no file can match both: "
                                 "fix the size or the hash")
        return self

    def _check_hub(self) -> FileSpec:
        """An hf:// source: the Hub lists each file's size and hash, and the files keep their paths."""
        uri = parse_hf_uri(self.url)
        if self.mirrors:
            raise ValueError("mirrors: an hf:// source is fetched through the Hub API, which has no mirrors list; for "
                             "a Hub mirror set 'endpoint' (or HF_ENDPOINT), else remove mirrors")
        if self.name is not None:
            raise ValueError("name: the files of an hf:// source keep their paths in the repository; remove 'name'")
        if (self.size is not None or self.hash is not None) and not uri.single_file:
            raise ValueError(f"size/hash: {self.url} selects {'a whole repository' if uri.path is None else 'several files'}, "
                             "and size/hash describe one file; remove them (the Hub lists every file's size and hash, "
                             "and each download is checked against them)")
        return self

    @property
    def is_hub(self) -> bool:
        """An hf:// source (fetched through the Hub API into the dataset's downloads folder)."""
        return is_hf_uri(self.url)

    def cache_identity(self) -> tuple:
        """What a cache key sees: the bytes (name, size, hash); the URL only when no hash pins them."""
        return (self.filename, self.size, self.hash) if self.hash else (self.filename, self.size, self.url)

    @property
    def filename(self) -> str:
        """The file's name on disk; an hf:// source's own spelling (its files keep their repository paths)."""
        if self.is_hub:
            return self.url
        if self.name:
            return self.name
        return last_segment(unquote(urlsplit(self.url).path)) or "download"


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
        return check_file_name(v, "dataset name")

    @field_validator("extract_to")
    @classmethod
    def _check_extract_to(cls, v: str | None) -> str | None:
        if v is not None:
            p = PurePosixPath(v)
            if p.is_absolute() or ".." in p.parts or not p.parts:
                raise ValueError(f"{v!r} must be a relative folder inside data_dir (no '..', not absolute)")
            check_path(v)
            if p.parts[0] == DOWNLOADS:
                raise ValueError(f"{v!r}: <data_dir>/{DOWNLOADS}/ holds the downloaded files; extract to another folder")
            if p.name.startswith("."):  # .<target>.extracting-*, .<target>.extract.json: the extraction's own
                raise ValueError(f"{v!r}: names starting with '.' are kept for the extraction's temporary folders "
                                 "and records; use a name without the leading '.'")
        return v

    @model_validator(mode="after")
    def _unique_names(self) -> DatasetSpec:
        dupes = sorted(n for n, count in Counter(f.filename for f in self.files).items() if count > 1)
        if dupes:
            raise ValueError(f"two files would both be saved as {dupes[0]!r}; give one of them a distinct 'name'")
        return self


class ModelSpec(_WithEndpoint):
    """A Hub model repository, snapshotted into ``models_cache``."""

    repo_id: str = Field(description="Hub repository, e.g. Qwen/Qwen2-VL-2B-Instruct")
    revision: str = Field("main", min_length=1, description="branch, tag or commit sha")
    include: tuple[str, ...] | None = Field(None, description="glob patterns of files to download (default: all)")
    exclude: tuple[str, ...] | None = Field(None, description="glob patterns of files to skip")
    endpoint: str | None = Field(None, description="Hub endpoint URL (default: HF_ENDPOINT or huggingface.co)")

    @model_validator(mode="before")
    @classmethod
    def _from_hf_uri(cls, v: Any) -> Any:
        """``model: hf://ORG/NAME[@REVISION][/PATH-OR-GLOB]`` is the same as repo_id, revision, include."""
        if not is_hf_uri(v):
            return v
        try:
            uri = parse_hf_uri(v)
        except UsageError as exc:
            raise ValueError(str(exc)) from None
        if uri.repo_type != "model":
            raise ValueError(f"{uri}: 'model' takes a model repository (hf://ORG/NAME...), not a dataset; "
                             "list datasets under 'datasets'")
        return {"repo_id": uri.repo_id, "revision": uri.revision or "main", "include": uri.patterns}

    @field_validator("repo_id")
    @classmethod
    def _check_repo(cls, v: str) -> str:
        if not _REPO_ID.fullmatch(v):
            raise ValueError(f"{v!r} is not a Hub repository id; write it as org/name")
        return check_repo_id(v)  # the snapshot's own rule (no '--' or '..', at most 96 characters)

    @field_validator("revision")
    @classmethod
    def _check_revision(cls, v: str) -> str:
        return check_revision(v)  # the snapshot's own rule

    @field_validator("include", "exclude", mode="before")
    @classmethod
    def _one_pattern(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v  # `include: '*.json'` is one pattern, as snapshot() takes it

    @field_validator("include", "exclude")
    @classmethod
    def _check_patterns(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for pattern in v or ():
            if not pattern.strip() or _CONTROL.search(pattern):
                raise ValueError(f"pattern {pattern!r} can match no file name; write a glob like '*.json'")
        return v



class SampleSpec(_Strict):
    """The offline sample: a tiny Qwen2-VL and a synthetic billboard dataset, built once and
    served on 127.0.0.1 for the duration of the run."""

    n_images: int = Field(24, ge=2, le=10_000)
    seed: int = Field(0, ge=0, le=2**64 - 1, description="torch.manual_seed takes at most 2**64-1")
    build_dir: str = Field("./build/sample", description="where the sample model and archive are built (once)")

    @field_validator("build_dir")
    @classmethod
    def _check_build_dir(cls, v: str) -> str:
        return check_path(v)


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
        if v is None:
            return v
        # An address another process can connect to (distributed.comm.addressing): scheme, host and
        # port, nothing else. inproc:// only exists inside the process that created it.
        if _CONTROL.search(v):
            raise ValueError(f"{v!r} contains a control character; write it as tcp://host:8786")
        try:
            parts = urlsplit(v)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"{v!r}: {exc}; write it as tcp://host:8786") from None
        if parts.scheme not in ("tcp", "tls", "ws", "wss") or not parts.hostname:
            raise ValueError(f"{v!r} is not a Dask scheduler address; write it as tcp://host:8786")
        if port is None:
            raise ValueError(f"{v!r} has no port; write it as tcp://host:8786")
        if parts.path or parts.query or parts.fragment or v.endswith(("?", "#")):
            raise ValueError(f"{v!r}: a scheduler address is only scheme://host:port; remove what follows the port")
        return v

    @model_validator(mode="after")
    def _address_needs_dask(self) -> TaskRunnerSpec:
        if self.address is not None and self.type != "dask":
            raise ValueError("address: only used with type: dask; set 'type: dask' or remove 'address'")
        return self
