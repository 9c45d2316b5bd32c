"""``hf://`` sources fetched into a plain folder, through the snapshot machinery.

:func:`fetch_hf` parses the source (:mod:`.uri`), takes a :func:`~.snapshots.snapshot` of the
repository with the source's path or glob as ``include`` (revision pinned to a commit through the
Hub API, every file fetched by the resumable engine and verified by LFS sha256 or git blob sha1,
a manifest, offline re-runs from it) and then publishes the selected files where the caller wants
them, as hard links (a copy where the file system has none):

    DEST_DIR/<path in the repository>                        fetch -d DIR, datasets download, the flow
    OUTPUT                                                   fetch -o FILE (exactly one file selected)
    <folder>/.resumable/hf/<org>--<name>/<commit>/...        the snapshot itself (datasets--<org>--<name>)

The snapshot lives in the folder's ``.resumable/`` (the engine's record folder), so a kill resumes
there and nothing but complete, verified files ever appears in the folder. A file this source
published earlier (recorded in ``.resumable/hf/published.json``) that the repository no longer
has at the new commit, or the selection no longer selects, is removed if it is unchanged; files
of others are never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..hashes import parse_hash
from ..state import RECORD_DIR, VerifiedRecord, check_destination, ensure_record_dir, read_json, temp_path, write_json
from ..verify import verify_file
from .common import RemoteFile, SnapshotError
from .manifest import MANIFEST, manifest_tree, select_files
from .uri import HfUri, parse

HUB_DIR = "hf"  # <folder>/.resumable/hf/: snapshots of hf:// sources published into <folder>
PUBLISHED = "published.json"


@dataclass
class HubFiles:
    """The files of one ``hf://`` source, in place and verified."""

    source: str  # the hf:// source as given (canonical spelling)
    repo_type: str
    repo_id: str
    revision: str
    commit: str
    snapshot: Path  # the snapshot folder the files are linked from
    paths: tuple[str, ...]  # their paths in the repository
    files: tuple[Path, ...]  # where they were published (same order)
    bytes_total: int
    bytes_transferred: int
    status: str  # "downloaded" | "resumed" | "cached"
    seconds: float = 0.0

    def cache_identity(self) -> tuple:
        # What downstream steps see: these files of this commit, here.
        return self.source, self.commit, tuple(str(f) for f in self.files)


def hub_cache(folder: str | os.PathLike) -> Path:
    """Where the snapshots of hf:// sources published into ``folder`` live."""
    return Path(folder).expanduser().absolute() / RECORD_DIR / HUB_DIR


def fetch_hf(source: str | HfUri, dest_dir: str | os.PathLike | None = None, *, output: str | os.PathLike | None = None,
             size: int | None = None, hash: str | None = None, endpoint: str | None = None,
             token: str | bool | None = None, offline: bool | None = None, max_workers: int = 4,
             progress=None) -> HubFiles:
    """Fetch the files an ``hf://`` source names into ``dest_dir`` (under their repository paths) or,
    for exactly one file, to ``output``. Resumable after a kill, verified, offline from the manifest
    (``offline=None`` follows HF_HUB_OFFLINE). ``size``/``hash``: only for a source naming one file;
    the published file is checked against them too."""
    from .snapshots import snapshot

    uri = parse(source) if isinstance(source, str) else source
    if (dest_dir is None) == (output is None):
        raise UsageError("fetch_hf: give either dest_dir or output")
    parse_hash(hash)  # a malformed hash is refused before any network
    if (size is not None or hash is not None) and not uri.single_file:
        raise UsageError(f"{uri}: size/hash describe one file, and this source selects "
                         f"{'a whole repository' if uri.path is None else 'several files'}; remove them (the Hub "
                         "lists every file's size and sha256 or git blob sha1, and each download is checked against them)")
    output = Path(output).expanduser().absolute() if output is not None else None
    folder = output.parent if output is not None else Path(dest_dir).expanduser().absolute()
    folder.mkdir(parents=True, exist_ok=True)
    ensure_record_dir(folder / "x")
    root = hub_cache(folder)
    t0 = time.monotonic()
    try:
        snap = snapshot(uri.repo_id, revision=uri.revision or "main", dest_root=root, include=uri.patterns,
                        endpoint=endpoint, token=token, offline=offline, max_workers=max_workers,
                        repo_type=uri.repo_type, progress=progress)
    except SnapshotError as exc:
        raise SnapshotError(f"{uri}: {exc}", exc.reason) from None
    tree = manifest_tree(read_json(snap.path / MANIFEST), uri.repo_id, snap.commit)
    if tree is None:  # written by the snapshot just now
        raise SnapshotError(f"{uri}: the snapshot's manifest in {snap.path} is missing; run again", "integrity")
    chosen = select_files(tree, uri.patterns, None, uri.repo_id, uri.revision or "main")
    if output is not None:
        if len(chosen) != 1:
            raise UsageError(f"{uri} selects {len(chosen)} files; -o FILE takes one: use -d DIR for several")
        targets = [(chosen[0], output)]
    else:
        targets = [(f, folder.joinpath(*f.path.split("/"))) for f in chosen]
    key = str(uri.without_revision()) + (f" -> {output.name}" if output is not None else "")
    published = _publish_all(snap.path, root, key, folder, targets)
    if size is not None or hash is not None:
        _check_given(uri, published[0], size, hash)
    return HubFiles(str(uri), uri.repo_type, uri.repo_id, uri.revision or "main", snap.commit, snap.path,
                    tuple(f.path for f in chosen), tuple(published), snap.bytes_total, snap.bytes_transferred,
                    snap.status, time.monotonic() - t0)


def hub_files_current(result: HubFiles | None) -> bool:
    """Cheap (stats and records, no hashing): every published file is still the snapshot's verified file."""
    if result is None or len(result.paths) != len(result.files):
        return False
    try:
        for rel, dest in zip(result.paths, result.files):
            src = Path(result.snapshot).joinpath(*rel.split("/"))
            record = VerifiedRecord.load(src)
            if record is None or not record.matches(src) or not os.path.samefile(src, dest):
                return False
    except OSError:
        return False
    return True


def _publish_all(snap_dir: Path, root: Path, key: str, folder: Path, targets: list[tuple[RemoteFile, Path]]) -> list[Path]:
    """Link each selected file into place; forget (remove, if unchanged) what this source published
    before and no longer selects. One publisher per folder at a time."""
    from filelock import FileLock

    with FileLock(str(root / f"{PUBLISHED}.lock"), mode=0o644):
        record = read_json(root / PUBLISHED) or {}
        before = record.get(key) if isinstance(record.get(key), dict) else {}
        now: dict[str, list[int]] = {}
        for f, dest in targets:
            src = snap_dir.joinpath(*f.path.split("/"))
            _publish(src, dest)
            st = os.lstat(dest)
            now[dest.relative_to(folder).as_posix()] = [st.st_ino, st.st_size]
        others = {rel for k, v in record.items() if k != key and isinstance(v, dict) for rel in v}
        for rel, (ino, size) in before.items():
            if rel in now or rel in others:  # still wanted, here or by another source of this folder
                continue
            old = folder.joinpath(*rel.split("/"))
            try:
                st = os.lstat(old)
            except OSError:
                continue
            if (st.st_ino, st.st_size) == (ino, size) and not os.path.islink(old):
                old.unlink()
                VerifiedRecord.forget(old)
        record[key] = now
        write_json(root / PUBLISHED, record)
    return [dest for _, dest in targets]


def _publish(src: Path, dest: Path) -> None:
    """``dest`` becomes ``src`` (a hard link, else a copy), atomically; both keep a verification record."""
    check_destination(dest)
    record = VerifiedRecord.load(src)
    if record is not None and not record.matches(src):
        record = None  # changed since it was verified: nothing to carry over (the snapshot re-checks it)
    try:
        if dest.exists() and os.path.samefile(src, dest):
            _records(src, dest, record, linked=False)
            return
    except OSError:
        pass
    dest.parent.mkdir(parents=True, exist_ok=True)
    ensure_record_dir(dest)
    tmp = temp_path(dest)
    try:
        os.link(src, tmp, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, tmp, follow_symlinks=False)  # no hard links on this file system
    os.replace(tmp, dest)
    _records(src, dest, record, linked=True)


def _records(src: Path, dest: Path, record: VerifiedRecord | None, linked: bool) -> None:
    """The published file gets a record of its own (so a cheap check trusts it without hashing).
    A new link changes the shared inode's ctime: the snapshot's record, checked just before the
    link, is renewed for it (only then: a record that no longer matches is never renewed)."""
    if record is None:
        return
    if linked and os.path.samefile(src, dest):
        record = VerifiedRecord.of(src, record.digests, record.source, record.validator)
        record.save(src)
    mine = VerifiedRecord.load(dest)
    if mine is None or not mine.matches(dest) or mine.digests != record.digests:
        VerifiedRecord.of(dest, record.digests).save(dest)


def _check_given(uri: HfUri, path: Path, size: int | None, hash: str | None) -> None:
    if not verify_file(path, size, hash):
        got = path.stat().st_size
        what = f"size {size}" if size is not None and got != size else f"hash {hash}"
        raise SnapshotError(f"{uri}: the file the Hub lists ({got} bytes, verified against the Hub's own hash) does "
                            f"not match the given {what}; fix or remove size/hash (the Hub's hash is checked anyway)",
                            "integrity")


def published_record(folder: str | os.PathLike) -> dict:
    """What hf:// sources published into ``folder`` (for tests and tools): {source: {path: [inode, size]}}."""
    return json.loads(json.dumps(read_json(hub_cache(folder) / PUBLISHED) or {}))
