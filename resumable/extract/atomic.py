"""Publishing a fully extracted folder in one step, and cleaning up after a killed run."""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
from pathlib import Path

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def new_temp_dir(target: Path) -> Path:
    """An empty folder next to the target (same filesystem, so renaming it is atomic)."""
    tmp = target.with_name(f".{target.name}.extracting-{os.getpid()}-{secrets.token_hex(4)}")
    os.mkdir(tmp)  # mode 0o777 & ~umask, like any folder the user makes (mkdtemp would give 0o700)
    return tmp


def remove_stale(target: Path) -> list[Path]:
    """Remove temp folders of killed runs. Only call with the target's lock held: then none is live."""
    stale = sorted(target.parent.glob(f".{target.name}.extracting-*"))
    for path in stale:
        remove(path)
    return stale


def remove(path: Path) -> None:
    """Remove a folder tree, or whatever else stood at the target's place (a file, a link)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
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


def publish(tmp: Path, target: Path) -> None:
    """Put ``tmp`` in place of ``target``; the old version (if any) is removed afterwards.

    With an exchange the target path always names a complete version. Without it there is a
    moment with no target (old moved aside under a temp name): a crash there leaves no target,
    never a half-filled one, and the next run redoes the extraction.
    """
    if os.path.lexists(target):
        if not _exchange(tmp, target):
            aside = target.with_name(f".{target.name}.extracting-{os.getpid()}-{secrets.token_hex(4)}-old")
            os.rename(target, aside)
            os.rename(tmp, target)
            tmp = aside
        fsync_dir(target.parent)
        remove(tmp)
    else:
        os.rename(tmp, target)
        fsync_dir(target.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
