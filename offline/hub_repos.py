"""The Hub look-alike's repositories: plain folders read as single-commit git repositories.

``repos_root/<org>/<name>/...`` is a model repository, ``repos_root/datasets/<org>/<name>/...`` a
dataset one. The commit sha is derived from the content, so editing a file gives a new commit.
An optional ``.hub.json`` in the repository folder (never served) adds
``{"branches": [...], "tags": [...], "private": true, "gated": true | "denied"}``. Files over
``lfs_threshold`` bytes or matching ``lfs_patterns`` are LFS (identified by their sha256);
others by their git blob sha1.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub's own limit for plain git files
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.gguf", "*.onnx", "*.parquet", "*.arrow")
CONFIG_NAME = ".hub.json"


@dataclass(frozen=True)
class Entry:
    """One file of a repository at its single commit."""

    path: str
    file: Path
    size: int
    blob: str  # git blob sha1: sha1(b"blob <size>\0" + content)
    sha256: str | None  # set for LFS files only

    @property
    def pointer(self) -> bytes:
        """The git-lfs pointer file that git stores in place of an LFS file."""
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    @property
    def oid(self) -> str:
        """Tree ``oid``: the blob sha1 of the content, or of the pointer for LFS files (as on the Hub)."""
        if not self.sha256:
            return self.blob
        pointer = self.pointer
        return hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()

    @property
    def etag(self) -> str:
        return self.sha256 or self.blob

    def tree_json(self) -> dict:
        item = {"type": "file", "oid": self.oid, "size": self.size, "path": self.path}
        if self.sha256:
            item["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": len(self.pointer)}
        return item


@dataclass(frozen=True)
class Repo:
    repo_type: str  # "model" | "dataset"
    repo_id: str
    commit: str
    entries: dict[str, Entry]
    refs: frozenset[str]  # branch and tag names
    private: bool
    gated: bool | str

    def resolve(self, revision: str) -> str | None:
        return self.commit if revision == self.commit or revision in self.refs else None



class Digests:
    """(path, size, mtime) -> (blob sha1, sha256): a repo is re-hashed only where files changed."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, int], tuple[str, str]] = {}
        self._lock = threading.Lock()

    def get(self, file: Path, st: os.stat_result) -> tuple[str, str]:
        key = (str(file), st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._cache.get(key)
        if hit:
            return hit
        blob = hashlib.sha1(b"blob %d\0" % st.st_size)
        sha = hashlib.sha256()
        with open(file, "rb") as f:
            while chunk := f.read(1 << 20):
                blob.update(chunk)
                sha.update(chunk)
        value = (blob.hexdigest(), sha.hexdigest())
        with self._lock:
            self._cache[key] = value
        return value


def load_repo(repos_root: Path, repo_type: str, repo_id: str, *, lfs_threshold: int,
              lfs_patterns: tuple[str, ...], digests: Digests) -> Repo | None:
    """The repository ``repo_id`` as it is on disk now; None when there is no such repository."""
    parts = repo_id.split("/")
    if len(parts) != 2 or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    folder = repos_root / ("datasets" if repo_type == "dataset" else "") / parts[0] / parts[1]
    if not folder.is_dir() or (repo_type == "model" and parts[0] == "datasets"):
        return None
    config = json.loads((folder / CONFIG_NAME).read_text()) if (folder / CONFIG_NAME).is_file() else {}
    entries: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in sorted(filenames):
            file = Path(dirpath) / name
            rel = file.relative_to(folder).as_posix()
            if rel == CONFIG_NAME:
                continue
            st = file.stat()
            blob, sha = digests.get(file, st)
            lfs = st.st_size > lfs_threshold or any(fnmatch.fnmatch(name, p) for p in lfs_patterns)
            entries[rel] = Entry(rel, file, st.st_size, blob, sha if lfs else None)
    commit = hashlib.sha1("".join(f"{p}\0{e.blob}\n" for p, e in sorted(entries.items())).encode()).hexdigest()
    refs = frozenset(["main", *config.get("branches", []), *config.get("tags", [])])
    return Repo(repo_type, repo_id, commit, entries, refs, bool(config.get("private")), config.get("gated", False))
