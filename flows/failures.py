"""How a failed run says what failed and what to do: one line naming the step, what it worked on
(the dataset and file, or the model), the cause, and, when no re-run can help, the setting to edit."""

from __future__ import annotations

import logging

from flows.steps import DatasetSteps, all_futures
from train_pipeline.config import ConfigError, ModelSpec


class StepFailed(Exception):
    """A step's error, prefixed with what the step worked on and (when no re-run can help) ending
    with what to edit. ``transient``: as the step's error; ``fix``: a setting must change."""

    def __init__(self, message: str, transient: bool, fix: bool):
        super().__init__(message)
        self.transient, self.fix = transient, fix


def raise_first_failure(model, model_spec: ModelSpec | None, datasets: list[DatasetSteps], trained,
                        origins: dict[str, str], config_source: str) -> None:
    """Raise the first failed step's error: a dataset's or the model's as a StepFailed, any other
    step's (training) as itself."""
    for d in datasets:
        steps = [("fetch", f"{len(d.batch_specs)} small files", False, d.batch)] if d.batch is not None else []
        for f in d.files:
            steps += [(step, f.spec.filename, f.spec.is_hub, future)
                      for step, future in (("fetch", f.fetched), ("verify", f.verified), ("extract", f.extracted))]
        for step, what, hub, future in steps:
            exc = _error_of(future)
            if exc is not None:
                # hf:// sources have no mirrors: their other setting is the endpoint; bytes that do
                # not match what the entry expects point at its hash or size first
                setting = ("the hash or size (or the url)" if _is_integrity(exc)
                           else "the url (or its endpoint)" if hub else "the url (and mirrors)")
                origin = origins.get(d.spec.name, f"dataset {d.spec.name!r}")
                _raise(f"dataset {d.spec.name!r}: {step} {what}", exc, step == "fetch", f"{setting} of {origin}")
    exc = _error_of(model)
    if exc is not None and model_spec is not None:
        # a wrong name, revision, token or filter: the config must change (the network: it may pass)
        settled = getattr(exc, "reason", None) in ("repo", "revision", "auth", "gated", "filter", "offline")
        _raise(f"model {model_spec.repo_id!r}: snapshot", exc, settled,
               f"model (repo_id, revision, include/exclude, endpoint) in {config_source}, or HF_TOKEN")
    for future in all_futures(model, datasets, trained):
        if _error_of(future) is not None:
            future.state.result()  # raises the step's own error: the flow run fails with it


def _is_integrity(exc: Exception) -> bool:
    from resumable.errors import IntegrityError

    return isinstance(exc, IntegrityError)


def _error_of(future) -> Exception | None:
    state = future.state if future is not None else None
    if state is None or not (state.is_failed() or state.is_crashed()):
        return None
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as error:  # a result that cannot be read back: report that
        return error
    if not isinstance(exc, Exception):
        state.result()  # raises whatever it holds
    return exc if isinstance(exc, Exception) else None


def _raise(where: str, exc: Exception, may_need_fix: bool, setting: str) -> None:
    from resumable.retry import is_transient

    transient = is_transient(exc)
    fix = may_need_fix and not transient
    text = " ".join(str(exc).split())  # one line, whatever the error held
    raise StepFailed(f"{where}: {text}" + (f"; fix {setting}" if fix else ""), transient, fix) from exc


def failure_reason(state) -> str:
    """The failed run's error as one line, ending with what to do next."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:
        exc = None
    again = "run the same command again: it continues from the failed step"
    if isinstance(exc, StepFailed):
        return f"{exc}; then {again}" if exc.fix else f"{exc}; fix the cause and {again}"
    return f"{state.message}; fix the cause and {again}"


class _KnownErrorsWithoutTraceback(logging.Filter):
    """The flow run's log gets one line for an error the pipeline reports itself (a download, a
    config, a step): its traceback says nothing more. A bug keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and isinstance(exc, _KNOWN):
            record.exc_info, record.exc_text = None, None
        return True


def _known_errors() -> tuple[type[BaseException], ...]:
    from resumable.errors import ResumableError

    return StepFailed, ResumableError, ConfigError


_KNOWN = _known_errors()
logging.getLogger("prefect.flow_runs").addFilter(_KnownErrorsWithoutTraceback())
