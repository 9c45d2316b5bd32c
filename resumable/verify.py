"""Verification of files on disk against an expected size and hash, remembered cheaply."""

from __future__ import annotations

import logging
from pathlib import Path

from .hashes import ExpectedHash, file_digest, parse_hash
from .state import VerifiedRecord

log = logging.getLogger("resumable")


def check(size: int, digests: dict[str, str], expected_size: int | None, expected: ExpectedHash | None) -> str | None:
    """Why the observed size/digests fail the expectations, or None when they pass."""
    if expected_size is not None and size != expected_size:
        return f"size is {size} bytes, expected {expected_size}"
    if expected is not None and digests.get(expected.algorithm) != expected.hexdigest:
        got = digests.get(expected.algorithm, "?")
        return f"{expected.algorithm} is {got}, expected {expected.hexdigest}"
    return None


def is_verified(path: str | Path, size: int | None = None, hash: str | ExpectedHash | None = None) -> bool:
    """True when ``path`` is unchanged since a verification that meets these expectations.

    Never reads the file: this is the cheap check a cache uses to trust an old result.
    """
    path = Path(path)
    record = VerifiedRecord.load(path)
    if record is None or not record.matches(path):
        return False
    expected = parse_hash(hash)
    if expected is not None and expected.algorithm not in record.digests:
        return False
    return check(record.size, record.digests, size, expected) is None


def verify_file(path: str | Path, size: int | None = None, hash: str | ExpectedHash | None = None,
                hash_algorithm: str | None = None) -> bool:
    """Size and hash check of a file on disk; the result is remembered so an unchanged file is not re-hashed."""
    path = Path(path)
    expected = parse_hash(hash, hash_algorithm)
    if not path.is_file():
        return False
    if is_verified(path, size, expected):
        return True
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        log.warning("%s: size is %d bytes, expected %d", path, actual_size, size)
        return False
    algorithm = expected.algorithm if expected else "sha256"
    record = VerifiedRecord.load(path)
    digests = dict(record.digests) if record and record.matches(path) else {}
    digests[algorithm] = file_digest(path, algorithm)
    problem = check(actual_size, digests, size, expected)
    if problem:
        log.warning("%s: %s", path, problem)
        return False
    VerifiedRecord.of(path, digests).save(path)
    return True
