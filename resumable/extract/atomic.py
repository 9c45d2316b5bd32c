"""Publishing a fully extracted folder in one step, and cleaning up after a killed run."""

from __future__ import annotations

import ctypes
import os
import re
import secrets
from pathlib import Path

from ..disk import fsync_dir

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def new_temp_dir(target: Path) -> Path:
    """An empty folder next to the target (same filesystem, so renaming it is atomic)."""
    tmp = target.with_name(f".{target.name}.extracting-{os.getpid()}-{secrets.token_hex(4)}")
    os.mkdir(tmp)  # mode 0o777 & ~umask, like any folder the user makes (mkdtemp would give 0o700)
    return tmp


_TEMP = re.compile(r"\.(?P<name>.+)\.extracting-[0-9]+-[0-9a-f]{8}(?P<kind>-old|-unwrapped)?")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of extract's own temporary folders (which a later run removes)."""
    return _TEMP.fullmatch(name) is not None


def remove_stale(target: Path) -> list[Path]:
    """Remove temp folders of killed runs. Only call with the target's lock held: then none is live.

    The exact names only (``.<target>.extracting-<pid>-<hex>[-old|-unwrapped]``): a folder named
    like a glob or like another target's temp folder is never taken for one. A previous version
    moved aside (``-old``) by a replacement killed before the new one was renamed in is put back
    in place: it is the target, with any files others had put into it."""
    stale = []
    try:
        entries = list(os.scandir(target.parent))
    except FileNotFoundError:
        return stale
    for entry in sorted(entries, key=lambda e: e.name):
        m = _TEMP.fullmatch(entry.name)
        if m is None or m["name"] != target.name:
            continue
        path = Path(entry.path)
        if m["kind"] == "-old" and not os.path.lexists(target):
            os.rename(path, target)
            continue
        remove(path)
        stale.append(path)
    return stale


def remove(path: Path) -> None:
    """Remove a folder tree of ours, or whatever else stood at the target's place (a file, a link).
    Folders made read-only (by the user, or by an archive's modes) are made writable to be
    emptied; what cannot be removed stays for the next run's remove_stale (never an error)."""
    if path.is_dir() and not path.is_symlink():
        _remove_tree(path)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _remove_tree(path: Path) -> None:
    """shutil.rmtree without its recursion (any depth) and through descriptors (never a symlink)."""
    try:
        top = os.open(path, _OPEN_DIR)
    except OSError:
        return
    stack: list[tuple[int, list[str], str | None]] = []
    try:
        os.fchmod(top, 0o700)
        stack.append((top, os.listdir(top), None))
    except OSError:
        os.close(top)
        return
    while stack:
        fd, names, name = stack[-1]
        if not names:
            stack.pop()
            os.close(fd)
            if stack and name is not None:
                _quietly(os.rmdir, name, dir_fd=stack[-1][0])
            continue
        entry = names.pop()
        try:
            child = os.open(entry, _OPEN_DIR, dir_fd=fd)
        except OSError:  # not a folder (or a symlink to one): unlink the entry itself
            _quietly(os.unlink, entry, dir_fd=fd)
            continue
        try:
            os.fchmod(child, 0o700)
            stack.append((child, os.listdir(child), entry))
        except OSError:
            os.close(child)
    _quietly(os.rmdir, path)


def _quietly(func, *args, **kwargs) -> None:
    try:
        func(*args, **kwargs)
    except OSError:
        pass


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    fn = getattr(_LIBC, "renameat2", None)
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL/ENOSYS/EOPNOTSUPP: filesystem or kernel cannot exchange
        return False
    raise OSError(err, os.strerror(err), str(b))


def publish(tmp: Path, target: Path, keep_old: bool = False) -> Path | None:
    """Put ``tmp`` in place of ``target``; the old version (if any) is removed afterwards, or with
    ``keep_old`` returned (under a temp name that a later run's remove_stale cleans up).

    With an exchange the target path always names a complete version. Without it there is a
    moment with no target (old moved aside as ``-old``): a crash there leaves no target, and the
    next run's remove_stale puts the old version back.
    """
    if not os.path.lexists(target):
        os.rename(tmp, target)
        fsync_dir(target.parent)
        return None
    if not _exchange(tmp, target):
        aside = target.with_name(f".{target.name}.extracting-{os.getpid()}-{secrets.token_hex(4)}-old")
        os.rename(target, aside)
        os.rename(tmp, target)
        tmp = aside
    fsync_dir(target.parent)
    if keep_old:
        return tmp
    remove(tmp)
    return None


def sync_filesystem(path: Path) -> None:
    """Flush the extracted files before publishing them: one syncfs instead of an fsync per file."""
    fn = getattr(_LIBC, "syncfs", None)
    if fn is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if fn(fd) != 0:
            os.sync()
    finally:
        os.close(fd)
