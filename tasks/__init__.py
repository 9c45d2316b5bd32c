"""Prefect tasks of the train-pipeline flow: thin wrappers over the engine (``resumable``) and the
training code. Each returns its step's own result type (the engine's FetchResult, ExtractResult,
SnapshotResult, training's TrainResult: paths, digests, counts, never file contents), stored as
data only (tasks/results.py); what Prefect logs about them is stripped of URL secrets
(tasks/secrets.py, installed here: every process that imports a task has it)."""

from tasks.secrets import install_log_redaction

install_log_redaction()

from tasks.download import fetch_batch, fetch_with_resume  # noqa: E402
from tasks.extract import extract  # noqa: E402
from tasks.snapshot import model_snapshot  # noqa: E402
from tasks.train import train  # noqa: E402
from tasks.verify import verify  # noqa: E402

__all__ = ["extract", "fetch_batch", "fetch_with_resume", "model_snapshot", "train", "verify"]
