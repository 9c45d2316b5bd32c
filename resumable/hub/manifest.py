"""The manifest beside a snapshot's files, the selection of files, and safe local paths."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from ..redaction import redact
from ..state import RECORD_DIR, ensure_record_dir, read_json, write_json
from .common import RemoteFile, SnapshotError

if TYPE_CHECKING:
    from .api import HubAPI

MANIFEST = ".snapshot.json"
MANIFEST_FORMAT = 1


def snapshot_is_complete(path: str | Path) -> bool:
    """Cheap: the manifest is there and every file it lists exists with its size (no hashing)."""
    path = Path(path)
    manifest = read_json(path / MANIFEST)
    if not manifest or not isinstance(manifest.get("tree"), dict) or not manifest.get("files"):
        return False
    try:
        return all((path / name).stat().st_size == int(manifest["tree"][name]["size"]) for name in manifest["files"])
    except (OSError, KeyError, TypeError, ValueError):
        return False


def manifest_tree(manifest: dict | None, repo_id: str, commit: str) -> list[RemoteFile] | None:
    if not manifest or manifest.get("format") != MANIFEST_FORMAT or manifest.get("commit") != commit \
            or manifest.get("repo_id") != repo_id or not isinstance(manifest.get("tree"), dict):
        return None
    return [RemoteFile.from_json(p, d) for p, d in manifest["tree"].items()]


def write_manifest(snap_dir: Path, hub: "HubAPI", revision: str, commit: str, tree: list[RemoteFile],
                   done: set[str]) -> None:
    """Adds ``done`` to the manifest's files; the lock keeps two runs with other filters from
    dropping each other's files."""
    from filelock import FileLock

    ensure_record_dir(snap_dir / MANIFEST)
    # Named after the manifest, a name no repository file may take (see safe_dest).
    with FileLock(str(snap_dir / RECORD_DIR / f"{MANIFEST}.lock"), mode=0o644):
        current = read_json(snap_dir / MANIFEST)
        if manifest_tree(current, hub.repo_id, commit) is not None:
            done = done | set(current.get("files", []))
        write_json(snap_dir / MANIFEST, {
            "format": MANIFEST_FORMAT,
            "repo_id": hub.repo_id,
            "repo_type": hub.repo_type,
            "endpoint": redact(hub.endpoint),  # a mirror's address may carry user:password
            "revision": revision,
            "commit": commit,
            "tree": {f.path: f.to_json() for f in tree},
            "files": sorted(done),
        })


def select_files(tree: list[RemoteFile], include: list[str] | None, exclude: list[str] | None, repo_id: str,
                 revision: str) -> list[RemoteFile]:
    """The files of ``tree`` that ``include`` (huggingface_hub's allow_patterns) and ``exclude`` keep.
    A plain name in ``include`` is a file, or a folder when the repository has files under it; one
    that is neither, or patterns that keep nothing, is a one-line error listing what the repository has."""
    from huggingface_hub.utils import filter_repo_objects

    if include:
        names = {f.path for f in tree}
        folders = {p for f in tree for p in _parents(f.path)}
        include = [f"{p}/" if _plain(p) and p not in names and p in folders else p for p in include]
        missing = [p for p in include if _plain(p) and not p.endswith("/") and p not in names]
        if missing:  # a plain name that matches nothing is a missing file, not an empty snapshot
            raise SnapshotError(f"file {missing[0]!r} is not in '{repo_id}' at '{revision}'; "
                                f"check the name ({repository_has(tree)})", "file")
    wanted = list(filter_repo_objects(tree, allow_patterns=include, ignore_patterns=exclude, key=lambda f: f.path))
    if not wanted:
        raise SnapshotError(f"no file of '{repo_id}' at '{revision}' matches include={include} exclude={exclude}; "
                            f"check the patterns ({repository_has(tree)})", "filter")
    return sorted(wanted, key=lambda f: f.path)


def repository_has(tree: list[RemoteFile], shown: int = 5) -> str:
    """'the repository has a, b, c and 12 more': a few of its paths, for an error message."""
    paths = sorted(f.path for f in tree)
    if not paths:
        return "the repository has no files"
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return "the repository has " + ", ".join(repr(p)[1:-1] for p in paths[:shown]) + more


def _plain(pattern: str) -> bool:
    return not any(c in pattern for c in "*?[")


def _parents(path: str):
    parts = path.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        yield "/".join(parts[:i])


def safe_dest(snap_dir: Path, name: str) -> Path:
    """The local path of a repository file; a listing must never write outside the snapshot, into
    the engine's record folders, or under a name no file system takes."""
    parts = PurePosixPath(name).parts if isinstance(name, str) else ()
    if (not parts or name.startswith("/") or "\\" in name or name == MANIFEST
            or any(p in ("..", ".", "", RECORD_DIR) or len(os.fsencode(p)) > 255 for p in parts)
            or any(ord(c) < 0x20 or ord(c) == 0x7f for c in name)):
        raise SnapshotError(f"the server listed an unsafe file name {name!r}; refusing to write it", "integrity")
    return snap_dir.joinpath(*parts)

