"""Verification of files on disk against an expected size and hash, remembered cheaply."""

from __future__ import annotations

import logging
import os
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
    before = os.stat(path)
    if size is not None and before.st_size != size:
        log.warning("%s: size is %d bytes, expected %d", path, before.st_size, size)
        return False
    algorithm = expected.algorithm if expected else "sha256"
    record = VerifiedRecord.load(path)
    kept = record if record and record.matches(path) else None
    digests = dict(kept.digests) if kept else {}
    digests[algorithm] = file_digest(path, algorithm)
    problem = check(before.st_size, digests, size, expected)
    if problem:
        log.warning("%s: %s", path, problem)
        return False
    after = VerifiedRecord.of(path, digests, kept.source if kept else None, kept.validator if kept else None)
    if (after.size, after.mtime_ns, after.inode) == (before.st_size, before.st_mtime_ns, before.st_ino):
        after.save(path)  # only what was hashed is remembered: a file that changed meanwhile is not
    return True
