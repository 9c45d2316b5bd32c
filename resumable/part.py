"""The partial file of one download and its resume record: which bytes it holds, from which
URL and version, and when they can be trusted to continue."""

from __future__ import annotations

import hashlib
import os
import stat
import uuid
from pathlib import Path

import requests

from . import http
from .body import READ_SIZE
from .hashes import ExpectedHash, update_from_fd
from .state import PartState, open_regular, part_path, private_part_path, state_path, url_id


class PartFile:
    """``dest``'s ``.part`` and its state record (``.part.json``), for bytes from ``url``.

    ``private``: a part file of this writer's own (lock-free mode), never recorded, that nobody
    else resumes. ``owner`` marks the record as this writer's while it writes.
    """

    def __init__(self, dest: Path, url: str, expected: ExpectedHash | None, private: bool):
        self.dest, self.url, self.expected, self.private = dest, url, expected, private
        self.owner = uuid.uuid4().hex
        self.path = private_part_path(dest, self.owner) if private else part_path(dest)
        self.state: PartState | None = None

    def is_regular(self) -> bool:
        """A regular file of its own (not a symlink, FIFO or device, nor a hard link to some other
        file, that someone put in its place)."""
        try:
            st = os.lstat(self.path)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_nlink == 1

    def size(self) -> int:
        return os.lstat(self.path).st_size

    def load(self) -> PartState | None:
        """The record of bytes this download can continue (now owned by this writer), or None
        (and the part discarded) when there is none that can be trusted."""
        self.state = None if self.private else self._trusted(PartState.load(self.dest))
        if self.state is not None:
            self.state.owner = self.owner
            self.state.save(self.dest)
        return self.state

    def _trusted(self, state: PartState | None) -> PartState | None:
        if state is None or not self.is_regular():
            self.discard()
            return None
        if state.expected_hash and self.expected and state.expected_hash != str(self.expected):
            self.discard()  # bytes of another file
            return None
        if state.total is not None and not state.segments and self.size() > state.total:
            self.discard()  # more bytes than the file has: not ours to trust
            return None
        if state.source != url_id(self.url):
            if not (self.expected and state.expected_hash == str(self.expected)):
                self.discard()  # another source, nothing to prove the bytes match
                return None
            # Same expected hash from a mirror: keep the bytes, its validator means nothing here.
            state.source, state.url, state.validator = url_id(self.url), http.redact(self.url), None
        return state

    def start(self, resp: requests.Response, total: int | None, segments=()) -> PartState:
        """A new record for the bytes of ``resp`` (its validator, the file's ``total`` size)."""
        self.state = PartState(url_id(self.url), http.redact(self.url), http.strong_validator(resp), total,
                               str(self.expected) if self.expected else None, self.owner,
                               [list(s) for s in segments])
        self.save()
        return self.state

    def save(self) -> None:
        if not self.private and not self.unrecorded():
            self.state.save(self.dest)

    def unrecorded(self) -> bool:
        """A body that arrives in one read gains nothing from a resume record (a kill costs at
        most that read), and writing one is a file creation per small file."""
        s = self.state
        return s is not None and not s.segments and s.total is not None and s.total <= READ_SIZE

    def record_partial(self, pos: int) -> None:
        """A small body cut short after all: its bytes are worth resuming, so record them now."""
        if pos and not self.private and self.unrecorded() and not os.path.lexists(state_path(self.dest)):
            self.state.save(self.dest)

    def discard(self) -> None:
        paths = (self.path,) if self.private else (self.path, state_path(self.dest))
        for path in paths:
            if not os.path.lexists(path):
                continue  # an unlink that finds nothing still waits for the folder's lock (~25 us)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def sync(self) -> None:
        sync_file(self.path)

    def identity(self) -> tuple | None:
        """The part file's (device, inode, size, mtime) now; None when it is gone."""
        try:
            return identity(os.lstat(self.path))
        except FileNotFoundError:
            return None

    def digest(self, algorithm: str) -> dict[str, str]:
        """{algorithm: hex digest} of the bytes in the part file."""
        h = hashlib.new(algorithm)
        fd = open_regular(self.path, os.O_RDONLY)
        try:
            update_from_fd(h, fd)
        finally:
            os.close(fd)
        return {algorithm: h.hexdigest()}


def identity(st: os.stat_result) -> tuple:
    """What changes when another writer replaces or rewrites a file: its device, inode, size, mtime."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def sync_file(path: Path) -> None:
    """fsync the regular file at ``path`` (never through a symlink or into a FIFO)."""
    fd = open_regular(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
