"""Safe, atomic, idempotent archive extraction (zip, tar, tar.gz/bz2/xz/zst, single .gz/.bz2/.xz/.zst).

    result = extract("data/coco.tar.gz", "data/coco", archive_digest=fetch_result.digest)
    if extraction_is_current("data/coco.tar.gz", "data/coco"): ...   # a few stats, no hashing

The target folder becomes exactly the archive's content, published by one rename; a completion
record next to it (``.<name>.extract.json``) makes a re-run a no-op.
"""

from ..errors import ArchiveTooLargeError, CorruptArchiveError, ExtractError, UnsafeArchiveError
from .core import ExtractResult, extract, extraction_is_current
from .formats import FORMATS, detect_format
from .limits import DEFAULT_MAX_RATIO, DEFAULT_MAX_TOTAL_SIZE

__all__ = [
    "ArchiveTooLargeError",
    "CorruptArchiveError",
    "DEFAULT_MAX_RATIO",
    "DEFAULT_MAX_TOTAL_SIZE",
    "ExtractError",
    "ExtractResult",
    "FORMATS",
    "UnsafeArchiveError",
    "detect_format",
    "extract",
    "extraction_is_current",
]
