"""What a snapshot is made of: its result, its files as the Hub lists them, and its error."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ResumableError

COMMIT = re.compile(r"^[0-9a-f]{40}$")


class SnapshotError(ResumableError):
    """A snapshot cannot be made; ``reason`` is one of repo, revision, file, auth, token, gated, offline,
    network, filter, integrity."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class SnapshotResult:
    path: Path  # the folder a plain from_pretrained(path) loads
    repo_id: str
    revision: str
    commit: str
    files: int
    bytes_total: int
    bytes_transferred: int
    status: str  # "downloaded" | "resumed" | "cached"
    seconds: float = 0.0  # the whole snapshot call, metadata included


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None  # LFS files
    blob: str | None  # git blob sha1 (of the content for non-LFS files)

    def to_json(self) -> dict:
        return {"size": self.size, "sha256": self.sha256, "blob": self.blob}

    @classmethod
    def from_json(cls, path: str, data: dict) -> "RemoteFile":
        return cls(path, int(data["size"]), data.get("sha256"), data.get("blob"))

