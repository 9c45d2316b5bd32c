"""resumable: downloads that survive a killed process, verified byte for byte.

The engine of train-pipeline. It imports neither Prefect nor torch, so it starts fast and
stands alone.
"""

from .batch import FetchItem, fetch_many
from .downloader import ResumableDownloader
from .errors import (
    DiskSpaceError,
    HTTPStatusError,
    IntegrityError,
    LocalFileError,
    ResumableError,
    StalledError,
    TransferError,
    UsageError,
)
from .hashes import file_digest, parse_hash
from .progress import human_size, progress_bar
from .transfer import FetchResult, fetch
from .verify import is_verified, verify_file

__all__ = [
    "DiskSpaceError", "FetchItem", "FetchResult", "HTTPStatusError", "IntegrityError", "LocalFileError", "ResumableDownloader",
    "ResumableError", "StalledError", "TransferError", "UsageError", "fetch", "fetch_many", "file_digest", "human_size",
    "is_verified", "parse_hash", "progress_bar", "verify_file",
]
