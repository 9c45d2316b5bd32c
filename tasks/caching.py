"""How the pipeline's tasks cache: across flow runs, in an explicit result storage, and only
while the task's output on disk is still what the cached result describes.

Prefect's default policy includes the run id (no hits across runs), so tasks use their inputs
(plus their source code). An inputs cache alone would return Cached for a deleted or modified
output, so the flow checks each output cheaply first (never re-hashing an unchanged file) and
asks for a refresh when it is gone or changed: :func:`cached`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import TASK_SOURCE, CachePolicy
from prefect.context import TaskRunContext
from prefect.utilities.hashing import hash_objects

from resumable.errors import ResumableError, TransferError


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
        drop = set(self.exclude)
        if self.pinned_by is not None and inputs.get(self.pinned_by) is None:
            drop -= set(self.unpinned_keep)
        kept = {k: _identity(v) for k, v in sorted(inputs.items()) if k not in drop}
        source = TASK_SOURCE.compute_key(task_ctx, inputs, flow_parameters, **kwargs)
        return hash_objects(kept, source, raise_on_failure=True)


def _identity(value: Any) -> Any:
    if hasattr(value, "cache_identity"):
        return value.cache_identity()
    if isinstance(value, (list, tuple)):
        return [_identity(v) for v in value]
    return value


STABLE_INPUTS = StableInputs()


def cached(task, storage: str | Path, *, valid: bool, **options):
    """``task`` persisting to ``storage``; ``valid=False`` (output missing/changed) refreshes its cache."""
    return task.with_options(result_storage=storage, persist_result=True, refresh_cache=not valid, **options)


def transient_only(task, task_run, state) -> bool:
    """Prefect retry condition: retry a task only when trying again can help."""
    try:
        state.result(raise_on_failure=True)
    except TransferError as exc:
        return bool(getattr(exc, "transient", True))
    except ResumableError:
        return False
    except (ConnectionError, TimeoutError, OSError) as exc:
        return not isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError))
    except Exception:
        return False
    return False


def file_identity(path: str | os.PathLike) -> tuple[int, int, int]:
    """(size, mtime_ns, inode): changes whenever the file is replaced or rewritten."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


def peek_cached(task, inputs: dict[str, Any], storage: str | Path) -> Any | None:
    """The value a cached run of ``task`` with these ``inputs`` (every parameter, by name) would
    return, or None. Lets the flow check an output whose location only the result knows (a
    snapshot folder named after a commit) before deciding whether to trust the cache."""
    from types import SimpleNamespace

    from prefect.results import ResultStore, resolve_result_storage

    try:
        key = task.cache_policy.compute_key(task_ctx=SimpleNamespace(task=task), inputs=inputs, flow_parameters={})
        if not key:
            return None
        store = ResultStore(result_storage=resolve_result_storage(storage))
        if not store.exists(key):
            return None
        return store.read(key).result
    except Exception:  # an unreadable record is a cache miss, never an error
        return None


def run_name(step: str, parameter: str):
    """A task_run_name callable: '<step> <file name of the parameter>' (full paths are noise in the UI)."""

    def name() -> str:
        from prefect.runtime import task_run

        value = task_run.parameters.get(parameter)
        if hasattr(value, "path"):
            value = value.path
        return f"{step} {Path(str(value)).name}" if value else step

    return name
