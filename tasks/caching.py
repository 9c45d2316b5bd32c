"""How the pipeline's tasks cache: across flow runs, in an explicit result storage, and only
while the task's output on disk is still what the cached result describes.

Prefect's default policy includes the run id (no hits across runs), so tasks use their inputs
(plus their source code). An inputs cache alone would return Cached for a deleted or modified
output, so the flow checks each output cheaply first (never re-hashing an unchanged file) and
asks for a refresh when it is gone or changed: :func:`cached`.

Results are stored as data only, and every cache record is checked before Prefect reads it
(a planted pickle or a JSON record naming a class is a cache miss with a warning, never
decoded): see tasks/results.py.
"""

from __future__ import annotations

import functools
import inspect
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.utilities.hashing import hash_objects

from tasks.results import RecordGuard, tag_of_hint


@dataclass
class StableInputs(CachePolicy):
    """The task's inputs and source code, where

    - inputs that only say *how* or *from where* are left out (``exclude``: a URL whose bytes a
      hash pins down, an endpoint on a random port, a connection count), and
    - an upstream result counts by what it *is*, not how it was obtained: a value with a
      ``cache_identity()`` method (a file's path, digest and inode, a commit) is hashed through
      it, so a re-download of the same bytes leaves downstream steps Cached while a different
      file makes them run.
    """

    exclude: tuple[str, ...] = ()
    pinned_by: str | None = None  # e.g. 'hash': when it is None, the inputs in `unpinned_keep` count
    unpinned_keep: tuple[str, ...] = ()  # e.g. ('url',): without a hash the URL names the content

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        return self.key_for(task_ctx.task, inputs)

    def key_for(self, task, inputs: dict[str, Any]) -> str:
        """The cache key of ``task`` run with ``inputs`` (every parameter, by name): what Prefect
        computes in the task run, computed here from the task alone (the flow peeks with it)."""
        drop = set(self.exclude)
        if self.pinned_by is not None and inputs.get(self.pinned_by) is None:
            drop -= set(self.unpinned_keep)
        kept = {k: cache_identity(v) for k, v in sorted(inputs.items()) if k not in drop}
        return hash_objects(kept, _source_key(task), raise_on_failure=True)


def _source_key(task) -> str:
    """The task's source code, hashed as Prefect's TASK_SOURCE policy does (the source Prefect
    captured when the task was defined travels with it to Dask workers)."""
    lines = getattr(task, "source_code", None)
    if lines is None:
        lines = inspect.getsource(task.fn)
    return hash_objects(lines, raise_on_failure=True)


@functools.singledispatch
def cache_identity(value: Any) -> Any:
    """What a cache key sees of an input: the value itself, unless its type registers what it
    *is* (each step's module registers its result type: a file by path, digest and inode, a
    snapshot by commit), so that how a result was obtained never changes a downstream key."""
    if hasattr(value, "cache_identity"):
        return value.cache_identity()
    if isinstance(value, (list, tuple)):
        return [cache_identity(v) for v in value]
    if isinstance(value, dict):
        return {k: cache_identity(v) for k, v in value.items()}
    return value


STABLE_INPUTS = StableInputs()


def cached(task, storage: str | Path, *, valid: bool, **options):
    """``task`` persisting to ``storage``; ``valid=False`` (output missing/changed) refreshes its cache.

    Its results are written as data only, and its cache records are read through a RecordGuard
    (tasks/results.py): a record that is not ours is a cache miss with a warning."""
    guard = record_guard(task, storage)
    return task.with_options(result_storage=storage, persist_result=True, refresh_cache=not valid,
                             result_serializer=guard.serializer(),
                             cache_policy=task.cache_policy.configure(key_storage=guard), **options)


def record_guard(task, storage: str | Path, step: str = "") -> RecordGuard:
    """The guard of ``task``'s cache records in ``storage`` (expecting the task's return type)."""
    expect = tag_of_hint(typing.get_type_hints(task.fn)["return"])
    return RecordGuard.for_storage(storage, expect, step=step or task.name)


def transient_only(task, task_run, state) -> bool:
    """Prefect retry condition: retry a task only when trying again can help (the engine's rule:
    resumable.retry.is_transient). A host name that does not exist, a connection refused before
    any byte came, an HTTP 401/403/404/410 are not: such a task runs once, so
    Prefect's retries never multiply the engine's (tests/flow/test_unreachable.py counts it)."""
    from resumable.retry import is_transient

    try:
        state.result(raise_on_failure=True)
    except Exception as exc:
        return is_transient(exc)
    return False


def file_identity(path: str | os.PathLike) -> tuple[int, int, int] | None:
    """(size, mtime_ns, inode): changes whenever the file is replaced or rewritten; None when gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


def peek_cached(task, inputs: dict[str, Any], storage: str | Path, step: str = "") -> Any | None:
    """The value a cached run of ``task`` with these ``inputs`` (every parameter, by name) would
    return, or None: none stored, or a stored record refused (with a warning naming ``step``).
    Lets the flow check an output whose location only the result knows (a snapshot folder named
    after a commit) before deciding whether to trust the cache."""
    return record_guard(task, storage, step).load(task.cache_policy.key_for(task, inputs))


def run_name(step: str, parameter: str):
    """A task_run_name callable: '<step> <file name of the parameter>' (full paths are noise in the UI)."""

    def name() -> str:
        from prefect.runtime import task_run

        value = task_run.parameters.get(parameter)
        if hasattr(value, "path"):
            value = value.path
        return f"{step} {Path(str(value)).name}" if value else step

    return name
