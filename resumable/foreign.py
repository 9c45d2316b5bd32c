"""Replacing a folder we made without taking along what someone else put into it.

A step that replaces a whole folder (an extraction target, a training's final model) builds the
new version beside it and swaps the two in one rename. Before the swap, every entry of the old
folder that the step did not make (per its own list, :class:`Owned`) is hard-linked into the new
version at the same path: after the swap it is still there, byte for byte, with its inode, mode
and times. A hard link, not a move: until the swap the old folder is untouched, so a kill at any
moment loses nothing (the half-built new version is discarded by the next run, links and all).

When the new version has an entry of its own at a foreign entry's path, or a foreign entry cannot
be linked (another file system mounted inside, a kernel that refuses the link), nothing is
replaced: :class:`ForeignFileError` names the entry and the fix.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import LocalFileError

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class ForeignFileError(LocalFileError):
    """A file the step did not make stands where the new version needs its place (or cannot be
    kept in it): replacing the folder would lose it, so the step stops and names it."""


@dataclass(frozen=True)
class Owned:
    """What a step made inside a folder: relative paths ('a/b') of its folders and of its other
    entries (files, symlinks). Anything else in that folder is someone else's. A path is owned
    whatever stands there now (a file the user edited, a link in place of a folder: replaced),
    but a folder's content is owned only where listed."""

    dirs: frozenset[str] = frozenset()
    files: frozenset[str] = frozenset()

    def __or__(self, other: "Owned") -> "Owned":
        return Owned(self.dirs | other.dirs, self.files | other.files)


def scan_owned(root: Path, names: Iterable[str] | None = None) -> Owned:
    """Every entry under ``root`` as :class:`Owned` (symlinks are entries, never followed);
    ``names``: only these top-level entries (and all under them)."""
    top = None if names is None else set(names)
    dirs, files = set(), set()
    for path, is_dir in _walk(root, lambda path, is_dir: is_dir and (top is None or "/" in path or path in top)):
        if top is not None and path.split("/", 1)[0] not in top:
            continue
        (dirs if is_dir else files).add(path)
    return Owned(frozenset(dirs), frozenset(files))


def _walk(root: Path, descend) -> Iterator[tuple[str, bool]]:
    """(relative path, is a folder) of the entries under ``root``, depth first without recursion,
    entering a folder only where ``descend(path, is_dir)`` says so (symlinks never followed)."""
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(os.path.join(root, rel) if rel else root) as entries:
                for entry in entries:
                    path = f"{rel}/{entry.name}" if rel else entry.name
                    is_dir = entry.is_dir(follow_symlinks=False)
                    yield path, is_dir
                    if descend(path, is_dir):
                        stack.append(path)
        except (FileNotFoundError, NotADirectoryError):
            continue


def carry_foreign(old: Path, new: Path, owned: Owned, *, made_by: str, merge: bool = False) -> None:
    """Hard-link into ``new`` each entry of ``old`` that ``owned`` does not list (a foreign folder
    with all it holds; into a folder of the new version's where it has one of that path), creating
    the folders that lead to it.

    ``made_by`` completes "was not made by ..." in the error. Raises :class:`ForeignFileError`
    (``old`` is never changed) when ``new`` has an entry at a foreign path (or a file or link where a
    foreign entry's folder should be), or when an entry cannot be linked. ``merge``: ``new``
    already holds an earlier carry of ``old``; what is there already (the same inode, a folder)
    is kept and only what is missing is linked."""
    foreign = _foreign_entries(old, owned)
    if not foreign:
        return
    new_root = os.open(new, _OPEN_DIR)
    old_root = os.open(old, _OPEN_DIR)
    modes: list[tuple[int, int]] = []  # folders made on the way, given their modes once filled
    try:
        for rel in foreign:
            _carry(old_root, new_root, rel, old, made_by, merge, modes)
        for fd, mode in reversed(modes):
            os.fchmod(fd, mode)
    finally:
        for fd, _ in modes:
            os.close(fd)
        os.close(old_root)
        os.close(new_root)


def _foreign_entries(old: Path, owned: Owned) -> list[str]:
    """The top-most entries of ``old`` that ``owned`` does not list (not descending into them).
    A path of ours is looked into whatever its type now (a folder where our file was); a link is
    never followed."""
    def ours(path: str) -> bool:
        return path in owned.dirs or path in owned.files

    return sorted(path for path, _ in _walk(old, lambda path, is_dir: is_dir and ours(path)) if not ours(path))


def _carry(old_root: int, new_root: int, rel: str, old: Path, made_by: str, merge: bool,
           modes: list[tuple[int, int]]) -> None:
    *folders, name = rel.split("/")
    shown = old / rel

    def refuse(why: str) -> ForeignFileError:
        return ForeignFileError(f"{shown} was not made by {made_by}, {why}: move it out of {old} and run again "
                                "(nothing was changed)")

    old_dir, new_dir = os.dup(old_root), os.dup(new_root)
    try:
        for part in folders:
            mode = os.lstat(part, dir_fd=old_dir).st_mode
            old_dir = _reopen(old_dir, part)
            try:
                st = os.lstat(part, dir_fd=new_dir)
            except FileNotFoundError:
                os.mkdir(part, 0o700, dir_fd=new_dir)
                new_dir = _reopen(new_dir, part)
                modes.append((os.dup(new_dir), stat.S_IMODE(mode)))  # the folder's own mode, not the umask's
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise refuse(f"and the new version has a {_kind(st.st_mode)} at {'/'.join(folders)}")
            new_dir = _reopen(new_dir, part)
        try:
            _link_tree(old_dir, new_dir, name, rel, merge)
        except FileExistsError as exc:
            at = str(exc.args[0]) if exc.args else rel
            where = "of that name" if at == rel else f"at {at}"
            raise refuse(f"and the new version has an entry {where}") from None
        except OSError as exc:
            raise refuse(f"and it cannot be kept in the new version ({exc.strerror or exc})") from None
    finally:
        os.close(old_dir)
        os.close(new_dir)


def _reopen(dir_fd: int, name: str) -> int:
    fd = os.open(name, _OPEN_DIR, dir_fd=dir_fd)
    os.close(dir_fd)
    return fd


def _link_tree(src_dir: int, dst_dir: int, name: str, rel: str, merge: bool) -> None:
    """A hard link of ``name`` (at ``rel``); a folder: a new folder with the same mode and times
    holding links of all it holds, or, where ``dst_dir`` has a folder of that name already, that
    folder, filled (depth first, without recursion: two descriptors per level). FileExistsError where
    ``dst_dir`` has another entry of that name (``merge``: unless it is the same inode)."""
    frames: list[tuple[int, int, Iterator[str], str, os.stat_result | None]] = []
    src, dst, names, base = src_dir, dst_dir, iter([name]), rel.rpartition("/")[0]
    try:
        while True:
            entry = next(names, None)
            if entry is None:
                if not frames:
                    return
                src, dst, _, _, mine = frames.pop()
                if mine is not None:  # filled: now its own mode (perhaps read-only) and times
                    os.fchmod(dst, stat.S_IMODE(mine.st_mode))
                    os.utime(dst, ns=(mine.st_atime_ns, mine.st_mtime_ns))
                os.close(src)
                os.close(dst)
                src, dst, names, base, _ = frames[-1] if frames else (src_dir, dst_dir, iter(()), "", None)
                continue
            path = f"{base}/{entry}" if base else entry
            st = os.lstat(entry, dir_fd=src)
            existing = _lstat_or_none(entry, dst)
            both_dirs = existing is not None and stat.S_ISDIR(existing.st_mode) and stat.S_ISDIR(st.st_mode)
            if existing is not None and not both_dirs and not (merge and existing.st_ino == st.st_ino):
                raise FileExistsError(path)
            if not stat.S_ISDIR(st.st_mode):
                if existing is None:
                    os.link(entry, entry, src_dir_fd=src, dst_dir_fd=dst, follow_symlinks=False)
                continue
            if existing is None:
                os.mkdir(entry, 0o700, dir_fd=dst)  # writable by us until filled
            child_src = os.open(entry, _OPEN_DIR, dir_fd=src)
            try:
                child_dst = os.open(entry, _OPEN_DIR, dir_fd=dst)
            except OSError:
                os.close(child_src)
                raise
            mine = st if existing is None else None
            frames.append((child_src, child_dst, iter(os.listdir(child_src)), path, mine))
            src, dst, names, base = child_src, child_dst, frames[-1][2], path
    finally:
        for src, dst, _, _, _ in frames:
            os.close(src)
            os.close(dst)


def _lstat_or_none(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None


def _kind(mode: int) -> str:
    return "folder" if stat.S_ISDIR(mode) else "symlink" if stat.S_ISLNK(mode) else "file"
