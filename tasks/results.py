"""Stored task results: data only, and checked before Prefect reads them.

Prefect (3.9) persists a task result as a record whose metadata names the serializer to decode
it with, and decodes with the serializer named *in the record*, not the task's
(``ResultRecord.deserialize`` in prefect/_internal/result_records.py). Whoever can write to the
result storage therefore picks how a later run decodes it: ``pickle`` runs code, ``json``
imports any class a ``{"__class__": ...}`` names, and merely validating the metadata imports the
module a serializer names (``picklelib``, ``compressionlib``). And ``ResultStore.exists`` -- the
cache lookup itself -- decodes the whole record. So here:

- every task result is written by :class:`DataOnlyJSON`: plain JSON of our result types
  (registered with :func:`result_type`), ``str`` and lists of them; decoding checks every field's
  type and never imports or calls anything else;
- the cache records (metadata) are kept apart from the results, in the cache policy's
  ``key_storage``: a :class:`RecordGuard`, through which Prefect reads every record. It checks the
  raw bytes before Prefect parses them -- JSON, our serializer with the task's return type, the
  result's storage key for this cache key, a result that decodes to that type -- and otherwise
  refuses the record with a warning naming the step: Prefect then counts the step as not cached,
  runs it and overwrites the record.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import types
import typing
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, PrivateAttr
from prefect.filesystems import LocalFileSystem, WritableFileSystem
from prefect.serializers import Serializer

from resumable.redaction import redact_text

SERIALIZER_TYPE = "train-pipeline-json"
RECORDS_DIR = "records"  # the cache records, under the result storage; the results stay at its top
MAX_BYTES = 16 << 20  # a result is a few hundred bytes: anything this large is not ours

_TYPES: dict[str, type] = {}
_HINTS: dict[str, dict[str, Any]] = {}
log = logging.getLogger(__name__)


class UnsafeRecord(ValueError):
    """A stored record or result that is not data this pipeline wrote: never decoded further."""


class StoredError(Exception):
    """A task failure read back from storage (its type's name and redacted message, as data)."""


def result_type(cls: type) -> type:
    """Class decorator (or a call, for the engine's own result types): the dataclass may be stored
    as a task result (fields of str, int, float, bool, None, Path, fixed or variadic tuples of
    those, and ``X | None``)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        _check_supported(hints[field.name], f"{cls.__name__}.{field.name}")
    _TYPES[cls.__name__] = cls
    _HINTS[cls.__name__] = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    return cls


def _check_supported(hint: Any, where: str) -> None:
    if hint in (str, int, float, bool, type(None), Path):
        return
    if typing.get_origin(hint) in (typing.Union, types.UnionType, tuple):
        for arg in typing.get_args(hint):
            if arg is not Ellipsis:
                _check_supported(arg, where)
        return
    raise TypeError(f"{where}: {hint!r} cannot be stored as data")


# -- encoding -------------------------------------------------------------------------------------
def tag_of_hint(hint: Any) -> str:
    """'FetchResult', 'list[FetchResult]', 'str': the tag of a task's return annotation."""
    if hint is str:
        return "str"
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return f"list[{tag_of_hint(item)}]"
    if isinstance(hint, type) and _TYPES.get(hint.__name__) is hint:
        return hint.__name__
    raise TypeError(f"{hint!r} is not a storable result type (see tasks.results.result_type)")


def _encode(value: Any, nested: bool = False) -> dict:
    if isinstance(value, str):
        return {"type": "str", "value": value}
    if isinstance(value, list) and not nested:
        return {"type": "list", "value": [_encode(v, nested=True) for v in value]}
    if isinstance(value, BaseException) and not nested:
        return {"type": "error", "value": {"error": type(value).__name__, "message": redact_text(str(value))}}
    name = type(value).__name__
    if _TYPES.get(name) is type(value):
        return {"type": name, "value": {f: _plain(getattr(value, f)) for f in _HINTS[name]}}
    raise TypeError(f"{type(value).__name__} is not a storable result type (see tasks.results.result_type)")


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):  # tuple[Path, ...] fields: each Path as text (JSON writes tuples as lists)
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def _decode(data: Any, nested: bool = False) -> Any:
    if not isinstance(data, dict) or set(data) != {"type", "value"} or not isinstance(data["type"], str):
        raise UnsafeRecord("not a tagged value")
    kind, value = data["type"], data["value"]
    if kind == "str":
        return _conform(value, str)
    if kind == "list" and not nested:
        if not isinstance(value, list):
            raise UnsafeRecord("list: not a list")
        return [_decode(v, nested=True) for v in value]
    if kind == "error" and not nested:
        if not isinstance(value, dict) or set(value) != {"error", "message"}:
            raise UnsafeRecord("error: not an error record")
        return StoredError(f"{_conform(value['error'], str)}: {_conform(value['message'], str)}")
    hints = _HINTS.get(kind)
    if hints is None:
        raise UnsafeRecord(f"{kind[:40]!r} is not a result type of this pipeline")
    if not isinstance(value, dict) or set(value) != set(hints):
        raise UnsafeRecord(f"{kind}: fields do not match")
    return _TYPES[kind](**{k: _conform(value[k], hint, f"{kind}.{k}") for k, hint in hints.items()})


def _conform(value: Any, hint: Any, where: str = "value") -> Any:
    origin = typing.get_origin(hint)
    if hint is type(None) and value is None:
        return None
    if hint is str and isinstance(value, str):
        return value
    if hint is Path and isinstance(value, str):
        return Path(value)
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            try:
                return _conform(value, arg, where)
            except UnsafeRecord:
                pass
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_conform(v, args[0], where) for v in value)
        if len(args) == len(value):
            return tuple(_conform(v, a, where) for v, a in zip(value, args))
    raise UnsafeRecord(f"{where}: {type(value).__name__} where {getattr(hint, '__name__', hint)} belongs")


def conforms(value: Any, tag: str | None) -> bool:
    """``value`` is of the type ``tag`` names (any storable value when ``tag`` is None)."""
    if tag is None:
        return not isinstance(value, StoredError)
    if tag.startswith("list[") and tag.endswith("]"):
        return isinstance(value, list) and all(conforms(v, tag[5:-1]) for v in value)
    if tag == "str":
        return isinstance(value, str)
    return _TYPES.get(tag) is type(value)


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return "a list of " + ", ".join(sorted({type(v).__name__ for v in value}) or ["nothing"])
    return f"a {type(value).__name__}"


class DataOnlyJSON(Serializer):
    """Task results as plain JSON of our result types; ``expect`` (a tag like 'FetchResult') is
    the task's return type, enforced when decoding. Task failures are written as data too (type
    name and redacted message)."""

    type: str = Field(default=SERIALIZER_TYPE, frozen=True)
    expect: str | None = None

    def dumps(self, obj: Any) -> bytes:
        return json.dumps(_encode(obj), separators=(",", ":")).encode()

    def loads(self, blob: bytes) -> Any:
        value = _decode(_parse_json(blob, "result"))
        if not isinstance(value, StoredError) and not conforms(value, self.expect):
            raise UnsafeRecord(f"the result is {_describe(value)}, not a {self.expect}")
        return value


def _parse_json(blob: bytes | str, what: str) -> Any:
    if len(blob) > MAX_BYTES:
        raise UnsafeRecord(f"the {what} is {len(blob)} bytes, far larger than any of ours")
    try:
        return json.loads(blob)
    except (ValueError, UnicodeDecodeError):
        raise UnsafeRecord(f"the {what} is not JSON") from None


# -- the cache records ----------------------------------------------------------------------------
_METADATA_KEYS = {"storage_key", "expiration", "serializer", "prefect_version", "storage_block_id"}


class RecordGuard(WritableFileSystem):
    """The cache records of one task in one result storage (Prefect's ``key_storage``): written
    under ``records/`` of that storage, and handed to Prefect only once checked (module doc)."""

    _block_type_name: ClassVar[str] = "train-pipeline record guard"

    folder: str | None = Field(None, description="the result storage folder")
    block: str | None = Field(None, description="or the saved storage block, 'type/name'")
    expect: str = Field(description="the task's return type, e.g. 'FetchResult'")
    step: str = Field("", description="the step, for warnings outside a task run")

    _storage: WritableFileSystem | None = PrivateAttr(None)
    _store: Any = PrivateAttr(None)  # prefect.results.ResultStore over _storage

    @classmethod
    def for_storage(cls, storage: str | Path, expect: str, step: str = "") -> RecordGuard:
        """``storage``: a folder (Path) or a saved block ('type/name'), as tasks' ``result_storage``."""
        if isinstance(storage, Path):
            return cls(folder=str(storage), expect=expect, step=step)
        return cls(block=str(storage), expect=expect, step=step)

    @property
    def storage(self) -> WritableFileSystem:
        """The result storage itself, resolved as Prefect resolves the tasks' ``result_storage``."""
        if self._storage is None:
            from prefect.results import resolve_result_storage

            self._storage = resolve_result_storage(Path(self.folder) if self.folder else self.block, _sync=True)
        return self._storage

    def serializer(self) -> DataOnlyJSON:
        return DataOnlyJSON(expect=self.expect)

    # Prefect's key-storage interface. It calls these with _sync=True, or the a* variants.
    def read_path(self, path: str, **_: Any) -> bytes:
        content = self._call("read_path", self._record(path))  # a missing record: Prefect's own miss
        try:
            self.check(path, content)
        except UnsafeRecord as exc:
            self._warn(path, exc)
            raise
        return content

    def write_path(self, path: str, content: bytes, **_: Any) -> Any:
        return self._call("write_path", self._record(path), content=content)

    async def aread_path(self, path: str) -> bytes:
        return self.read_path(path)

    async def awrite_path(self, path: str, content: bytes) -> Any:
        return self.write_path(path, content)

    # ---------------------------------------------------------------------------------------------
    def check(self, key: str, record: bytes) -> Any:
        """The value the record ``record`` at ``key`` stands for, or UnsafeRecord: it must be our
        metadata for exactly this key and type, and its result must decode to that type."""
        meta = _parse_json(record, "cache record")
        if not isinstance(meta, dict) or not set(meta) <= _METADATA_KEYS:
            raise UnsafeRecord("the cache record is not one of Prefect's records")
        serializer = meta.get("serializer")
        if serializer != self.serializer().model_dump():
            kind = serializer.get("type") if isinstance(serializer, dict) else serializer
            raise UnsafeRecord(f"the cache record names the serializer {str(kind)[:40]!r}, not {SERIALIZER_TYPE!r} "
                               f"for a {self.expect}")
        expected = self._expected(key)
        if meta.get("storage_key") != expected.storage_key:
            raise UnsafeRecord("the cache record points at another result")
        block_id = expected.storage_block_id
        if meta.get("storage_block_id") != (None if block_id is None else str(block_id)):
            raise UnsafeRecord("the cache record points at another storage")
        if not isinstance(meta.get("expiration"), (str, type(None))):
            raise UnsafeRecord("the cache record's expiration is not a date")
        result = self._read_if_present(self.result_key(key))
        if result is None:
            raise UnsafeRecord("the cache record's result is missing")
        value = self.serializer().loads(result)
        if isinstance(value, StoredError):
            raise UnsafeRecord("the cache record holds a failure")
        return value

    def load(self, key: str) -> Any | None:
        """The cached value at ``key`` if a checked record is there; None when there is none or it
        is refused (with a warning)."""
        record = self._read_if_present(self._record(key))
        if record is None:
            return None
        try:
            return self.check(key, record)
        except (UnsafeRecord, OSError) as exc:  # OSError: the result beside it is unreadable or gone
            self._warn(key, exc)
            return None

    def result_key(self, key: str) -> str:
        """Where Prefect writes the result of ``key``, as its own ResultStore names it."""
        return self._expected(key).storage_key

    def _expected(self, key: str):
        """The metadata Prefect writes for ``key`` in this storage (its public ResultStore API)."""
        if self._store is None:
            from prefect.results import ResultStore

            self._store = ResultStore(result_storage=self.storage)
        return self._store.create_result_record(None, key=key).metadata

    def _record(self, key: str) -> str:
        return f"{RECORDS_DIR}/{key}"

    def _read_if_present(self, path: str) -> bytes | None:
        storage = self.storage
        if isinstance(storage, LocalFileSystem):
            file = Path(path) if os.path.isabs(path) else Path(storage.basepath or ".").expanduser() / path
            if not file.is_file():  # (also refuses a FIFO or device planted there)
                return None
            with open(file, "rb") as f:
                return f.read(MAX_BYTES + 1)  # bounded: _parse_json refuses anything larger
        try:
            return self._call("read_path", path)
        except Exception as exc:  # remote storages report a missing object each in their own way
            log.debug("no cache record at %s: %s", path, exc)
            return None

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return getattr(self.storage, method)(path, _sync=True, **kwargs)

    def _warn(self, key: str, why: Exception) -> None:
        from prefect.context import TaskRunContext
        from prefect.exceptions import MissingContextError
        from prefect.logging import get_run_logger

        try:
            logger = get_run_logger()
        except MissingContextError:
            logger = log
        step = "" if TaskRunContext.get() is not None or not self.step else f"{self.step}: "
        logger.warning("%signoring the cached result %s…: %s; the step runs again", step, key[:12], why)
