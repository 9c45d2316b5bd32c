"""Prefect tasks of the train-pipeline flow: thin wrappers over the engine (``resumable``) and the
training code. Each returns small values (paths, digests, counts), never file contents, stored as
data only (tasks/results.py); what Prefect logs about them is stripped of URL secrets
(tasks/secrets.py, installed here: every process that imports a task has it)."""

from tasks.secrets import install_log_redaction

install_log_redaction()

from tasks.download import FetchedFile, fetch_with_resume  # noqa: E402
from tasks.extract import ExtractedDir, extract  # noqa: E402
from tasks.model import SnapshotInfo, model_snapshot  # noqa: E402
from tasks.train import TrainedModel, train  # noqa: E402
from tasks.verify import verify  # noqa: E402

__all__ = [
    "ExtractedDir", "FetchedFile", "SnapshotInfo", "TrainedModel",
    "extract", "fetch_with_resume", "model_snapshot", "train", "verify",
]
