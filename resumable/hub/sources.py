"""``hf://`` sources fetched into a plain folder, through the snapshot machinery.

:func:`fetch_hf` parses the source (:mod:`.uri`), plans a snapshot of the repository with the
source's path or glob as ``include`` (:func:`plan_hf`: revision pinned to a commit through the Hub
API, the files listed, nothing fetched yet), fetches it (every file by the resumable engine,
verified by LFS sha256 or git blob sha1, a manifest, offline re-runs from it) and then publishes the
selected files where the caller wants them, as hard links (a copy where the file system has none):

    DEST_DIR/<path in the repository>                        fetch -d DIR, datasets download, the flow
    OUTPUT                                                   fetch -o FILE (exactly one file selected)
    <folder>/.resumable/hf/<org>--<name>/<commit>/...        the snapshot itself (datasets--<org>--<name>)

The snapshot lives in the folder's ``.resumable/`` (the engine's record folder), so a kill resumes
there and nothing but complete, verified files ever appears in the folder.

Who owns what (``.resumable/hf/published.json``, changed only under its lock): a path in the folder
belongs to the one source that published it. A source replaces or removes only its own files, and
only while they are unchanged since it published them (same inode, size, mtime and ctime, else the
same content as the Hub listed, re-hashed); a file of anyone else in its way (yours, another
source's, a file you edited, an http download of the same name) stops it with one line naming the
file, before anything is replaced. A file this source published that the repository no longer has
at the new commit, or the selection no longer selects, is removed if unchanged. Nothing is ever
written through a symlink between the folder and a file: folders are created one level at a time,
and a symlink in the way is named.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import locks
from ..errors import LocalFileError, UsageError
from ..hashes import parse_hash
from ..names import check_output_path
from ..state import (
    RECORD_DIR,
    VerifiedRecord,
    check_destination,
    ensure_record_dir,
    local_error,
    read_json,
    remove_stale_temps,
    temp_path,
    write_json,
)
from ..verify import verify_file
from .common import RemoteFile, SnapshotError
from .uri import HfUri, parse

if TYPE_CHECKING:
    from .snapshots import SnapshotPlan

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




class ForeignPathError(LocalFileError):
    """A path an hf:// source would publish belongs to someone else (a file of yours, another
    source's, a symlink): nothing is replaced, and the message names it and the fix."""


@dataclass
class HubPlan:
    """An hf:// source resolved and listed, its destinations checked, nothing fetched yet
    (:func:`plan_hf`); :func:`fetch_hf` takes it to fetch and publish."""

    uri: HfUri
    folder: Path  # where its files are published (DEST_DIR, or OUTPUT's folder)
    output: Path | None
    key: str  # its name in published.json
    snap: "SnapshotPlan"
    targets: list[tuple[RemoteFile, Path]]
    reserved: dict[str, str]  # paths in the folder (relative) that belong to others: {path: whose}
    size: int | None = None
    hash: str | None = None
    _hashed: dict = field(default_factory=dict, repr=False)  # content checks already made this run

    @property
    def rels(self) -> list[str]:
        return [_rel(self.folder, dest) for _, dest in self.targets]


def plan_hf(source: str | HfUri, dest_dir: str | os.PathLike | None = None, *, output: str | os.PathLike | None = None,
            size: int | None = None, hash: str | None = None, endpoint: str | None = None,
            token: str | bool | None = None, offline: bool | None = None,
            reserved: dict[str, str] | None = None) -> HubPlan:
    """Resolve and list ``source`` (one or two metadata requests, none offline) and check, before any
    transfer, that its files can be published: a given size or sha256 against the Hub's listing, and
    each destination against what is in the folder (another source's files, ``reserved`` paths
    {relative path: whose}, files in the way, symlinks). A one-line error otherwise."""
    from .snapshots import _folder_name, plan_snapshot

    uri = parse(source) if isinstance(source, str) else source
    if (dest_dir is None) == (output is None):
        raise UsageError("fetch_hf: give either dest_dir or output")
    parse_hash(hash)  # a malformed hash is refused before any network
    if (size is not None or hash is not None) and not uri.single_file:
        raise UsageError(f"{uri}: size/hash describe one file, and this source selects "
                         f"{'a whole repository' if uri.path is None else 'several files'}; remove them (the Hub "
                         "lists every file's size and sha256 or git blob sha1, and each download is checked against them)")
    if output is not None:
        check_output_path(output)
    output = Path(output).expanduser().absolute() if output is not None else None
    folder = output.parent if output is not None else Path(dest_dir).expanduser().absolute()
    try:
        folder.mkdir(parents=True, exist_ok=True)  # the folder you named (a symlink to it is your choice)
    except OSError as exc:
        raise local_error(exc, folder) from None
    ensure_record_dir(folder / "x")
    repo_dir = _real_dirs(folder, (RECORD_DIR, HUB_DIR, _folder_name(uri.repo_id, uri.repo_type)), uri)
    _no_symlinks_in(repo_dir.parent, uri, recursive=False)
    _no_symlinks_in(repo_dir, uri, recursive=True)
    try:
        snap = plan_snapshot(uri.repo_id, revision=uri.revision or "main", dest_root=repo_dir.parent,
                             include=uri.patterns, endpoint=endpoint, token=token, offline=offline,
                             repo_type=uri.repo_type)
    except SnapshotError as exc:
        hint = uri.revision_hint() if exc.reason in ("file", "filter") else ""
        raise SnapshotError(f"{uri}: {exc}{hint}", exc.reason) from None
    chosen = snap.wanted
    if output is not None:
        if len(chosen) != 1:
            raise UsageError(f"{uri} selects {len(chosen)} files; -o FILE takes one: use -d DIR for several")
        targets = [(chosen[0], output)]
    else:
        targets = [(f, folder.joinpath(*f.path.split("/"))) for f in chosen]
    key = str(uri.without_revision()) + (f" -> {output.name}" if output is not None else "")
    plan = HubPlan(uri, folder, output, key, snap, targets, dict(reserved or {}), size, hash)
    if size is not None or hash is not None:
        _check_listed(plan, chosen[0])
    _layout(plan, _published(repo_dir.parent), None)  # checked again, under the lock, when publishing
    return plan


def fetch_hf(source: str | HfUri, dest_dir: str | os.PathLike | None = None, *, output: str | os.PathLike | None = None,
             size: int | None = None, hash: str | None = None, endpoint: str | None = None,
             token: str | bool | None = None, offline: bool | None = None, max_workers: int = 4,
             progress=None, reserved: dict[str, str] | None = None, plan: HubPlan | None = None) -> HubFiles:
    """Fetch the files an ``hf://`` source names into ``dest_dir`` (under their repository paths) or,
    for exactly one file, to ``output``. Resumable after a kill, verified, offline from the manifest
    (``offline=None`` follows HF_HUB_OFFLINE). ``size``/``hash``: only for a source naming one file;
    the fetched file is checked against them before it is published. ``reserved``: {path in the
    folder: whose} that this source may not publish (the http files of the same folder). ``plan``:
    from :func:`plan_hf` (then the other arguments but ``max_workers``/``progress`` are its own)."""
    from .snapshots import complete_snapshot

    if plan is None:
        plan = plan_hf(source, dest_dir, output=output, size=size, hash=hash, endpoint=endpoint, token=token,
                       offline=offline, reserved=reserved)
    uri, t0 = plan.uri, time.monotonic()
    try:
        snap = complete_snapshot(plan.snap, max_workers=max_workers, progress=progress)
    except SnapshotError as exc:
        raise SnapshotError(f"{uri}: {exc}", exc.reason) from None
    chosen = [f for f, _ in plan.targets]
    if plan.size is not None or plan.hash is not None:  # before anything is published
        _check_given(uri, snap.path.joinpath(*chosen[0].path.split("/")), plan.size, plan.hash)
    published = _publish_all(plan, snap.path)
    return HubFiles(str(uri), uri.repo_type, uri.repo_id, uri.revision or "main", snap.commit, snap.path,
                    tuple(f.path for f in chosen), tuple(published), snap.bytes_total, snap.bytes_transferred,
                    snap.status, snap.seconds or time.monotonic() - t0)


def find_clash(plans: list[HubPlan], others: dict[str, str] | None = None) -> str | None:
    """The first path that two sources would both publish into one folder (hf:// sources of
    ``plans``, and ``others``: {path relative to the folder: whose}, e.g. http files), as one line
    naming both and the path; None when every path has one source. A file at a path another one
    needs as a folder counts too."""
    folders: dict[Path, _Owners] = {}
    for plan in plans:
        owners = folders.get(plan.folder)
        if owners is None:
            owners = folders[plan.folder] = _Owners()
            for rel, who in (others or {}).items():
                owners.add(rel, who, None)
        for rel, content in zip(plan.rels, _contents(plan)):
            hit = owners.find(rel, but=plan.key, content=content)
            if hit is not None:
                return _clash_message(plan, plan.folder, rel, hit)
        for rel, content in zip(plan.rels, _contents(plan)):
            owners.add(rel, str(plan.uri), plan.key, content)
    return None


def _contents(plan: HubPlan) -> list:
    """What each target of ``plan`` is: one file of one snapshot (two sources of one repository at
    one commit publish the very same file: no clash)."""
    snap = getattr(plan.snap, "path", None)
    return [(str(snap), f.path) if snap is not None else None for f, _ in plan.targets]


def published_owners(folder: str | os.PathLike):
    """``owner(rel)``: the hf:// source that owns ``rel`` (a path in ``folder``, or a file or folder
    on its way or under it) while its file is there, else None. For the http files of the folder."""
    folder = Path(folder).expanduser().absolute()
    owners = _Owners()
    for key, paths in _published(hub_cache(folder)).items():
        for r in paths:
            if os.path.lexists(folder / r):
                owners.add(r, key, key)

    def owner(rel: str) -> str | None:
        hit = owners.find(rel)
        return None if hit is None else hit[1]

    return owner


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


def published_record(folder: str | os.PathLike) -> dict:
    """What hf:// sources published into ``folder`` (for tests and tools):
    {source: {path: {inode, size, mtime_ns, ctime_ns, sha256 | blob}}} (a [inode, size] pair from earlier versions)."""
    return json.loads(json.dumps(read_json(hub_cache(folder) / PUBLISHED) or {}))


# -- checks before publishing ---------------------------------------------------------------------
def _published(root: Path) -> dict[str, dict]:
    record = read_json(root / PUBLISHED) or {}
    return {k: v for k, v in record.items() if isinstance(k, str) and isinstance(v, dict)}


def _rel(folder: Path, path: Path) -> str:
    return path.relative_to(folder).as_posix()


class _Owners:
    """Who owns which path of a folder, found at the path itself, on its way (a parent) or under it."""

    def __init__(self):
        self.paths: dict[str, tuple[str, str | None, object]] = {}  # path: (whose, key, content)
        self.under: dict[str, str] = {}  # a folder on some owned path's way: one such path

    def add(self, rel: str, who: str, key: str | None, content: object = None) -> None:
        self.paths[rel] = (who, key, content)
        parts = rel.split("/")
        for i in range(1, len(parts)):
            self.under.setdefault("/".join(parts[:i]), rel)

    def find(self, rel: str, but: str | None = None, content: object = None) -> tuple[str, str] | None:
        """(path, whose) of a path owned by anyone but key ``but`` that collides with ``rel``; the
        same path with the same ``content`` (one file of one snapshot) is no collision."""
        parts = rel.split("/")
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if rel in self.under:
            candidates.append(self.under[rel])
        for path in candidates:
            owner = self.paths.get(path)
            if owner is None or (but is not None and owner[1] == but):
                continue
            if path == rel and content is not None and owner[2] == content:
                continue
            return path, owner[0]
        return None


def _clash_message(plan: HubPlan, folder: Path, rel: str, hit: tuple[str, str]) -> str:
    other_rel, who = hit
    where = folder / rel if other_rel == rel else folder / min(rel, other_rel, key=len)
    what = "both publish" if other_rel == rel else "collide at"
    return (f"{plan.uri} and {who} {what} {where}: a path in the folder belongs to one source; give them "
            "different folders, or narrow one's path or glob")


def _layout(plan: HubPlan, record: dict[str, dict], snap_dir: Path | None) -> list[Path]:
    """Check every destination of ``plan`` against the folder and ``record`` (published.json); the
    paths to remove first (this source's own unchanged files or folders standing where the new
    commit has a folder or a file); a ForeignPathError naming the first path in the way."""
    folder, uri = plan.folder, plan.uri
    before = record.get(plan.key, {})
    owners = _Owners()
    for rel, who in plan.reserved.items():
        owners.add(rel, who, None)
    for key, paths in record.items():
        if key != plan.key:
            for r in paths:
                if os.path.lexists(folder / r):  # a deleted file's claim lapses
                    owners.add(r, key, key)
    removals: list[Path] = []
    snap_dir = snap_dir or plan.snap.path
    for f, dest in plan.targets:
        rel = _rel(folder, dest)
        src = snap_dir.joinpath(*f.path.split("/"))
        hit = owners.find(rel)
        # Another source's file that is this snapshot's very file (one repository, one commit, two
        # selections): publishing it changes nothing, and the path becomes this source's.
        if hit is not None and not (hit[0] == rel and rel not in plan.reserved and _snapshot_file(src, dest)):
            raise ForeignPathError(_clash_message(plan, folder, rel, hit))
        parts = rel.split("/")
        path = folder
        for i, part in enumerate(parts):
            path = path / part
            last = i == len(parts) - 1
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                break
            except OSError as exc:
                raise local_error(exc, path) from None
            if stat.S_ISLNK(st.st_mode):
                raise ForeignPathError(f"{path} is a symlink, and {uri} never writes through one (nor replaces "
                                       "it): remove it, or fetch into another folder")
            if stat.S_ISDIR(st.st_mode):
                if not last:
                    continue
                if plan.output is not None:
                    raise ForeignPathError(f"-o {path}: is a folder; name a file to write {uri} to")
                foreign = _foreign_in(plan, path, before)
                if foreign is not None:
                    raise ForeignPathError(f"{foreign} is in the way of {uri} (its file {f.path} goes to {dest}, "
                                           "where a folder stands holding files it did not publish): move them away "
                                           "and run again")
                removals.append(path)
                break
            if not last:
                if not stat.S_ISREG(st.st_mode) or not _mine(plan, path, st, before):
                    raise ForeignPathError(f"{path} is in the way of {uri} (a file where its file {f.path} needs a "
                                           "folder; not published by this source, or changed since): move it away "
                                           "and run again")
                removals.append(path)
                break
            if not stat.S_ISREG(st.st_mode):
                raise ForeignPathError(f"{path} is not a regular file and stands where {uri} publishes {f.path}: "
                                       "move it away and run again")
            same = _snapshot_file(src, path)
            # -o FILE: the file you named is replaced (as plain http fetch -o does)
            if not (same or plan.output is not None or _mine(plan, path, st, before)):
                raise ForeignPathError(f"{path} is in the way of {uri} (where it publishes {f.path}): this source "
                                       "did not publish it, or it changed since; move it away (or delete it) and "
                                       "run again")
    return list(dict.fromkeys(removals))


def _mine(plan: HubPlan, path: Path, st: os.stat_result, before: dict) -> bool:
    """This source published ``path`` and it is unchanged since."""
    rel = _rel(plan.folder, path)
    return rel in before and _unchanged(plan, path, st, before[rel])


def _foreign_in(plan: HubPlan, top: Path, before: dict) -> Path | None:
    """The first entry under folder ``top`` that is not this source's unchanged file, an empty
    folder or a record folder (``.resumable``); None: the whole folder is this source's to remove."""
    stack = [top]
    while stack:
        current = stack.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError:
            return current
        for entry in entries:
            path = Path(entry.path)
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if entry.name != RECORD_DIR:
                    stack.append(path)
                continue
            rel = _rel(plan.folder, path)
            if not (stat.S_ISREG(st.st_mode) and rel in before and _unchanged(plan, path, st, before[rel])):
                return path
    return None


def _unchanged(plan: HubPlan, path: Path, st: os.stat_result, claim) -> bool:
    """Still the file this source published: its stat as recorded, else (a new link elsewhere changes
    the ctime) the same bytes as the Hub listed, re-hashed once per run."""
    if not stat.S_ISREG(st.st_mode):
        return False
    if isinstance(claim, list):  # [inode, size], an earlier version's record: with the file's verification record
        record = VerifiedRecord.load(path)
        return claim[:2] == [st.st_ino, st.st_size] and record is not None and record.matches(path)
    if not isinstance(claim, dict) or claim.get("size") != st.st_size:
        return False
    if [claim.get(k) for k in ("inode", "mtime_ns", "ctime_ns")] == [st.st_ino, st.st_mtime_ns, st.st_ctime_ns]:
        return True
    memo = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if memo not in plan._hashed:
        plan._hashed[memo] = _content_is(path, claim.get("sha256"), claim.get("blob"))
    return plan._hashed[memo]


def _content_is(path: Path, sha256: object, blob: object) -> bool:
    if isinstance(sha256, str):
        h = hashlib.sha256()
    elif isinstance(blob, str):
        h = hashlib.sha1(b"blob %d\0" % os.lstat(path).st_size)
    else:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    except OSError:
        return False
    return h.hexdigest() == (sha256 if isinstance(sha256, str) else blob)


def _snapshot_file(src: Path, path: Path) -> bool:
    """``path`` is the snapshot's file ``src``, verified and unchanged since."""
    if not _samefile(src, path):
        return False
    record = VerifiedRecord.load(src)
    return record is not None and record.matches(src)


def _samefile(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_listed(plan: HubPlan, f: RemoteFile) -> None:
    """A given size (or sha256) that the Hub's listing contradicts: refused before any transfer."""
    if plan.size is not None and plan.size != f.size:
        raise SnapshotError(f"{plan.uri}: the file the Hub lists is {f.size} bytes, not the given size {plan.size}; "
                            "fix or remove size/hash (the Hub's hash is checked anyway)", "integrity")
    if plan.hash is not None and f.sha256:
        given = parse_hash(plan.hash)
        if given.algorithm == "sha256" and given.hexdigest != f.sha256:
            raise SnapshotError(f"{plan.uri}: the Hub lists sha256:{f.sha256} for this file, not the given hash "
                                f"{plan.hash}; fix or remove size/hash (the Hub's hash is checked anyway)", "integrity")


def _check_given(uri: HfUri, path: Path, size: int | None, hash: str | None) -> None:
    if not verify_file(path, size, hash):
        got = path.stat().st_size
        what = f"size {size}" if size is not None and got != size else f"hash {hash}"
        raise SnapshotError(f"{uri}: the file the Hub lists ({got} bytes, verified against the Hub's own hash) does "
                            f"not match the given {what}; fix or remove size/hash (the Hub's hash is checked anyway)",
                            "integrity")


# -- folders, never through a symlink -------------------------------------------------------------
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _real_dirs(base: Path, parts: tuple[str, ...] | list[str], uri: HfUri) -> Path:
    """``base/parts...``, each folder created if missing, one level at a time, none a symlink (or a
    file): a ForeignPathError names the one in the way. ``base`` itself is the caller's."""
    try:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise local_error(exc, base) from None
    path = base
    try:
        for part in parts:
            path = path / part
            try:
                os.mkdir(part, 0o777, dir_fd=fd)
            except FileExistsError:
                pass
            except OSError as exc:
                raise local_error(exc, path) from None
            try:
                child = os.open(part, _OPEN_DIR, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise local_error(exc, path) from None
                if stat.S_ISLNK(os.lstat(part, dir_fd=fd).st_mode):
                    raise ForeignPathError(f"{path} is a symlink, and {uri} never writes through one: remove it "
                                           "(a real folder is created in its place), or fetch into another folder") from None
                raise ForeignPathError(f"{path} is a file where {uri} needs a folder: move it away and run again") from None
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
    return path


def _no_symlinks_in(folder: Path, uri: HfUri, recursive: bool) -> None:
    """The snapshot's folders hold no symlink (the snapshot never makes one): whatever is written
    there then stays there."""
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise local_error(exc, folder) from None
        for entry in entries:
            if entry.is_symlink():
                raise ForeignPathError(f"{entry.path} is a symlink in the folder where {uri} keeps its snapshot "
                                       "and records, and it never writes through one: remove it")
            if recursive and entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))


# -- publishing -------------------------------------------------------------------------------------
def _publish_all(plan: HubPlan, snap_dir: Path) -> list[Path]:
    """Link each selected file into place; forget (remove, if unchanged) what this source published
    before and no longer selects. One publisher per folder at a time; every check again under the
    lock, all of them before anything is replaced."""
    from filelock import FileLock

    from ..extract.atomic import remove

    folder, root = plan.folder, hub_cache(plan.folder)
    with FileLock(str(root / f"{PUBLISHED}.lock"), mode=0o644):
        record = _published(root)
        before = record.get(plan.key, {})
        for path in _layout(plan, record, snap_dir):  # this source's own, unchanged: checked just now
            if path.is_dir() and not path.is_symlink():
                remove(path)
            else:
                path.unlink()
                VerifiedRecord.forget(path)
        now: dict[str, dict] = {}
        for f, dest in plan.targets:
            _publish(folder, snap_dir.joinpath(*f.path.split("/")), dest, plan.uri)
            now[_rel(folder, dest)] = _claim(dest, f)
        for key, paths in record.items():  # a claim that lapsed (its file was deleted) is ours now
            if key != plan.key:
                for rel in now:
                    paths.pop(rel, None)
        others = {rel for key, paths in record.items() if key != plan.key for rel in paths}
        for rel, claim in before.items():
            if rel in now or rel in others:  # still wanted, here or by another source of this folder
                continue
            old = _lstat_below(folder, rel)
            if old is not None and _unchanged(plan, folder / rel, old, claim):
                (folder / rel).unlink()
                VerifiedRecord.forget(folder / rel)
        record[plan.key] = now
        write_json(root / PUBLISHED, {k: v for k, v in record.items() if v})
    return [dest for _, dest in plan.targets]


def _lstat_below(folder: Path, rel: str) -> os.stat_result | None:
    """``rel``'s lstat when every folder on its way below ``folder`` is a real folder, else None."""
    path = folder
    parts = rel.split("/")
    try:
        for part in parts[:-1]:
            path = path / part
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                return None
        return os.lstat(path / parts[-1])
    except OSError:
        return None


def _claim(dest: Path, f: RemoteFile) -> dict:
    st = os.lstat(dest)
    claim = {"inode": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}
    claim.update({"sha256": f.sha256} if f.sha256 else {"blob": f.blob} if f.blob else {})
    return claim


def _publish(folder: Path, src: Path, dest: Path, uri: HfUri) -> None:
    """``dest`` becomes ``src`` (a hard link, else a copy), atomically; both keep a verification record.
    Its folders are created below ``folder`` one by one, never through a symlink."""
    _real_dirs(folder, dest.relative_to(folder).parts[:-1], uri)
    check_destination(dest)
    record = VerifiedRecord.load(src)
    if record is not None and not record.matches(src):
        record = None  # changed since it was verified: nothing to carry over (the snapshot re-checks it)
    if _samefile(src, dest):
        _records(src, dest, record, linked=False)
        return
    ensure_record_dir(dest)
    with locks.exclusive(dest):  # its temp files are this lock holder's: a killed one's are removed
        remove_stale_temps(dest)
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
