"""Prefect tasks of the train-pipeline flow: thin wrappers over the engine (``resumable``) and the
training code. Each returns small values (paths, digests, counts), never file contents."""

from tasks.download import FetchedFile, fetch_with_resume
from tasks.extract import ExtractedDir, extract
from tasks.model import SnapshotInfo, model_snapshot
from tasks.train import TrainedModel, train
from tasks.verify import verify

__all__ = [
    "ExtractedDir", "FetchedFile", "SnapshotInfo", "TrainedModel",
    "extract", "fetch_with_resume", "model_snapshot", "train", "verify",
]
