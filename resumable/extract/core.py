"""``extract``: safe, atomic, idempotent extraction of one archive into one target folder."""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ExtractError, UsageError
from ..foreign import ForeignFileError, Owned, carry_foreign, scan_owned
from ..hashes import BackgroundHasher, file_digest, parse_hash
from ..progress import byte_bar
from .atomic import is_temp_name, new_temp_dir, publish, remove, remove_stale, sync_filesystem
from .formats import detect_format
from .guard import MemberGuard
from .limits import DEFAULT_MAX_RATIO, DEFAULT_MAX_TOTAL_SIZE, Limits, limits_for
from .record import (Record, archive_matches, members_intact, members_of, owned_by, read_record, record_path,
                     scan_members, write_record)
from .stream import DecompressingReader
from .tar import extract_single, extract_tar
from .zip import extract_zip

_SUFFIXES = {"gz": (".gz", ".gzip"), "bz2": (".bz2",), "xz": (".xz",), "zst": (".zst", ".zstd")}


@dataclass
class ExtractResult:
    target: Path
    format: str
    files: int
    bytes: int
    status: str  # "extracted" | "cached"
    archive_digest: str  # "sha256:hex" unless the caller passed another algorithm's digest


def lock_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.extract.lock")


def extraction_is_current(archive: str | Path, target: str | Path, *, unwrap: str | None = None) -> bool:
    """Cheap check (one stat per extracted member, no hashing): ``target`` holds what ``archive``
    extracts to (with the same ``unwrap``), per the completion record; the archive has not been
    replaced and no member of the target is missing or changed since (files added are ignored)."""
    target = Path(os.path.abspath(target))
    record = read_record(target)
    if record is None or record.state != "complete" or record.unwrap != unwrap:
        return False
    try:
        st = os.stat(archive)
    except OSError:
        return False
    return archive_matches(record, st) and members_intact(record, target)


def extract(archive: str | Path, target: str | Path, *, archive_digest: str | None = None,
            max_total_size: int = DEFAULT_MAX_TOTAL_SIZE, max_ratio: float = DEFAULT_MAX_RATIO,
            progress=None, sync: bool = True, unwrap: str | None = None) -> ExtractResult:
    """Extract ``archive`` so that ``target`` becomes exactly its content.

    ``archive_digest`` ("sha256:hex", as the downloader verified it) spares hashing the archive;
    without it sha256 is computed while extracting. The same archive again, with every extracted
    member still in place and unchanged (a stat each), is a no-op ("cached"); a member missing or
    changed, or another archive, replaces the target's content in one rename; entries that the
    previous extraction did not make are kept in the new version (or, where the new version has
    an entry of the same path, nothing is replaced: ForeignFileError). ``progress``: None
    (a bar when stderr is a terminal), False (silent) or ``callable(archive_bytes_done, archive_size)``.
    ``sync=False`` skips flushing to disk before publishing (for scratch data). ``unwrap``: a
    folder name; when the archive holds nothing but a folder of that name (``a.tar.gz`` holding
    ``a/``), the target gets that folder's content instead of the folder (no ``a/a/``).
    """
    archive, target = Path(os.path.realpath(archive)), _real_target(target)
    digest = str(parse_hash(archive_digest)) if archive_digest else None
    _check_paths(archive, target)
    if unwrap is not None and (not unwrap or unwrap in (".", "..") or "/" in unwrap or "\0" in unwrap):
        raise UsageError(f"unwrap={unwrap!r}: give a plain folder name (no '/')")
    target.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock  # imported here: keeps `import resumable` light

    with FileLock(str(lock_path(target))):
        remove_stale(target)
        st = archive.stat()
        record = read_record(target)
        cached, digest = _current(record, archive, target, st, digest, unwrap)
        if cached is not None:
            return cached
        _refuse_foreign(target, record)
        fmt = detect_format(archive)
        limits = limits_for(str(archive), st.st_size, max_total_size, max_ratio)
        return _replace(archive, target, st, record, digest, fmt, limits, unwrap, progress, sync)


def _current(record: Record | None, archive: Path, target: Path, st: os.stat_result, digest: str | None,
             unwrap: str | None) -> tuple[ExtractResult | None, str | None]:
    """(the "cached" result when ``target`` already holds this archive's content, intact; the
    archive's digest when it had to be computed to tell)."""
    if (record is not None and record.state == "complete" and record.unwrap == unwrap
            and members_intact(record, target)):
        if digest is None and archive_matches(record, st):
            return _cached(record, target), digest
        if digest is None and record.archive_size == st.st_size:
            digest = f"sha256:{file_digest(archive)}"  # touched or re-downloaded: same content?
        if digest == record.archive_digest:
            _refresh(record, target, st)
            return _cached(record, target), digest
    return None, digest


def _replace(archive: Path, target: Path, st: os.stat_result, record: Record | None, digest: str | None, fmt: str,
             limits: Limits, unwrap: str | None, progress, sync: bool) -> ExtractResult:
    """Extract into a temporary folder beside ``target``, carry the entries others put into the
    target along, swap it in (one rename) and record what it holds."""
    tmp = new_temp_dir(target)
    try:
        guard = MemberGuard(archive)
        with _Progress(progress, archive.name, st.st_size) as report:
            files, nbytes, hexdigest = _extract_into(fmt, archive, tmp, guard, limits, digest is None, report)
        digest = digest or f"sha256:{hexdigest}"
        if unwrap is not None:
            tmp = _unwrap(tmp, unwrap, guard)
        now = archive.stat()
        if (now.st_size, now.st_mtime_ns, now.st_ino) != (st.st_size, st.st_mtime_ns, st.st_ino):
            raise ExtractError(f"{archive}: the file changed while it was being extracted; "
                               f"run again once its download has finished")
        if sync:
            sync_filesystem(tmp)
        # Entries that the old version's record does not list are someone else's: they go
        # into the new version (hard links) right before the swap, or nothing is replaced.
        before, after = _owned_before(record, target), scan_owned(tmp)
        made_by = f"extracting {archive.name}"
        if os.path.isdir(target):
            carry_foreign(target, tmp, before, made_by=made_by)
        # From here a crash leaves a target whose every member (old or new) is known.
        write_record(target, Record(state="replacing", members=members_of(after), previous=members_of(before),
                                    target_ino=os.lstat(tmp).st_ino, unwrap=unwrap))
        old = publish(tmp, target, keep_old=True)
    except BaseException:
        remove(tmp)
        raise
    if old is not None:  # what others wrote into the old version during the swap goes along too
        _carry_late(old, target, before, made_by)
    # The members are what the archive put there (``after``), as published (only the target's own
    # ctime moved): not what was carried over, nor what anyone writes into the target meanwhile.
    target_ino, members = scan_members(target, only=after)
    record = Record("complete", str(archive), digest, st.st_size, st.st_mtime_ns, st.st_ino, fmt, files,
                    nbytes, target_ino, unwrap, members)
    write_record(target, record)
    return ExtractResult(target, fmt, files, nbytes, "extracted", digest)


def _extract_into(fmt: str, archive: Path, dest: Path, guard: MemberGuard, limits: Limits, want_digest: bool,
                  report: Callable[[int], None]) -> tuple[int, int, str | None]:
    """Extract into ``dest``; return (files, bytes, archive sha256 hex when ``want_digest``)."""
    if fmt == "zip":
        hasher = BackgroundHasher("sha256") if want_digest else None
        if hasher is not None:  # zip is read out of order: hash the file on the second core
            hasher.update_from_file(archive)
        try:
            files, nbytes = extract_zip(archive, dest, guard, limits, report)
        finally:
            hexdigest = hasher.hexdigest() if hasher is not None else None
        return files, nbytes, hexdigest
    hasher = hashlib.sha256() if want_digest else None  # fed the raw bytes the decompressor reads
    reader = DecompressingReader(archive, fmt, limit=limits.limit, limit_hint=limits.hint,
                                 hasher=hasher, on_progress=report)
    try:
        if fmt.startswith("tar"):
            files, nbytes = extract_tar(reader, dest, guard, limits)
        else:
            files, nbytes = extract_single(reader, dest, _single_name(archive.name, fmt), str(archive))
        reader.finish()
    finally:
        reader.close()
    return files, nbytes, hasher.hexdigest() if hasher is not None else None


def _unwrap(tmp: Path, name: str, guard: MemberGuard) -> Path:
    """When ``tmp`` holds only the folder ``name``, move that folder beside ``tmp`` (a temp name
    that remove_stale knows) and return it: it is what gets published. Not when a symlink inside
    climbs through the archive's root: unwrapped, it would point elsewhere (outside the target)."""
    inner = tmp / name
    if os.listdir(tmp) != [name] or inner.is_symlink() or not inner.is_dir():
        return tmp
    for rel, link in guard.symlinks.items():
        depth = len([p for p in rel.split("/") if p]) - 1  # folders between the root and the link
        for part in (p for p in link.split("/") if p not in ("", ".")):
            depth += -1 if part == ".." else 1
            if depth <= 0:  # at the archive's root, outside the folder being unwrapped
                return tmp
    moved = tmp.with_name(f"{tmp.name}-unwrapped")
    os.rename(inner, moved)
    os.rmdir(tmp)
    return moved


def _single_name(name: str, fmt: str) -> str:
    for suffix in _SUFFIXES[fmt]:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _check_paths(archive: Path, target: Path) -> None:
    if not target.name:
        raise UsageError(f"target {str(target)!r}: give a folder to extract into, not the filesystem root")
    if not archive.is_file():
        raise UsageError(f"archive {str(archive)!r}: no such file; check the path")
    if target == archive or target in archive.parents:
        raise UsageError(f"archive {archive} lies inside the target {target}, which extraction replaces "
                         f"entirely; extract into another folder (e.g. {target / archive.name.split('.')[0]})")
    if target.is_symlink():
        raise UsageError(f"target {target} is a symlink; pass the folder it points to ({os.path.realpath(target)})")
    if is_temp_name(target.name) or target.name.endswith((".extract.json", ".extract.lock")) and target.name[0] == ".":
        raise UsageError(f"target {target}: extract names its own temporary folders and records like that; "
                         "choose another name")
    if os.path.ismount(target):
        raise UsageError(f"target {target} is a mount point, which extraction cannot replace as a whole; "
                         "extract into a folder inside it")


def _refuse_foreign(target: Path, record: Record | None) -> None:
    """Extracting into a folder we did not create would mix the user's files with the archive's:
    only into ours or an empty one."""
    if not os.path.lexists(target):
        return
    if not target.is_dir():
        raise ExtractError(f"target {target} exists and is not a folder; remove it or choose another target")
    if record is None and any(os.scandir(target)):
        raise ExtractError(f"target {target} exists, is not empty and was not made by extract (no "
                           f"{record_path(target).name}); remove it or choose another target")


def _owned_before(record: Record | None, target: Path) -> Owned:
    """What the previous extraction into ``target`` made (may be replaced by the new version)."""
    if record is None or not os.path.isdir(target):
        return Owned()  # no target, or an empty folder (_refuse_foreign)
    if record.state == "replacing" and record.previous is not None and record.members is not None:
        swapped = os.lstat(target).st_ino == record.target_ino  # killed after the swap: the new version is in place
        return owned_by(record.members if swapped else record.previous)
    if record.members is not None:
        return owned_by(record.members)
    if record.legacy_top_level is not None:  # a version-1 record: its top-level names, and all under them
        return scan_owned(target, names=record.legacy_top_level)
    return scan_owned(target)  # an older release's "replacing" record, which listed nothing: all was its own


def _carry_late(old: Path, target: Path, owned: Owned, made_by: str) -> None:
    """After the swap: link into the published target what others wrote into the old version
    between the first carry and the swap, then remove the old version. Should the new version
    hold an entry of such a path, the old version is kept under a name no run removes, and said."""
    try:
        carry_foreign(old, target, owned, made_by=made_by, merge=True)
    except ForeignFileError as exc:
        kept = old.with_name(f".{target.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}")
        os.rename(old, kept)
        raise ForeignFileError(f"{exc}; the new version is in place and the previous one, with that file, "
                               f"is kept in {kept}") from None
    remove(old)


def _real_target(target: str | os.PathLike) -> Path:
    """The target as the system resolves it (its folder's symlinks and '..' followed), the target
    itself not followed: a symlink there is refused (_check_paths), never replaced."""
    path = Path(os.path.abspath(target)) if not os.path.isabs(target) else Path(target)
    if not path.name or path.name in (".", ".."):
        return Path(os.path.realpath(path))
    return Path(os.path.realpath(path.parent)) / path.name


def _refresh(record: Record, target: Path, st: os.stat_result) -> None:
    """Same content under a new inode/mtime: remember the new stat so the cheap check passes again."""
    if not archive_matches(record, st):
        record.archive_size, record.archive_mtime_ns, record.archive_ino = st.st_size, st.st_mtime_ns, st.st_ino
        write_record(target, record)


def _cached(record: Record, target: Path) -> ExtractResult:
    return ExtractResult(target, record.format, record.files, record.bytes, "cached", record.archive_digest)


class _Progress:
    """``report(archive_bytes_done)`` to a callable, a tqdm bar on a terminal, or nowhere."""

    def __init__(self, progress, label: str, total: int):
        self._callback = progress if callable(progress) else None
        self._bar = None
        self._done = 0
        self._total = total
        if progress is None or progress is True:
            self._bar = byte_bar(f"extract {label}", total, show=True if progress is True else None)

    def __call__(self, done: int) -> None:
        done = min(done, self._total)
        if self._bar is not None:
            self._bar.update(done - self._done)
        self._done = done
        if self._callback is not None:
            self._callback(done, self._total)

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
