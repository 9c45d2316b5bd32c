"""Tar members (any compression) through tarfile's ``data`` filter plus our guard and limits."""

from __future__ import annotations

import errno
import shutil
import tarfile
from pathlib import Path

from ..errors import CorruptArchiveError, DiskSpaceError, ExtractError, UnsafeArchiveError
from .formats import CHUNK_SIZE
from .guard import MemberGuard
from .limits import Limits
from .stream import DecompressingReader


def extract_tar(reader: DecompressingReader, dest: Path, guard: MemberGuard, limits: Limits) -> tuple[int, int]:
    """Extract into ``dest`` (a fresh folder); return (files, bytes of regular files)."""
    counts = [0, 0]

    def data_filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
        name = member.name
        rel = guard.path(name)
        if not rel and not member.isdir():
            raise guard.refuse(name, "would replace the target folder itself")
        if member.issym():
            guard.symlink(name, rel, member.linkname)
        elif member.islnk():
            guard.hardlink(name, member.linkname)
        elif not (member.isreg() or member.isdir()):
            raise guard.refuse(name, "is a device file, FIFO or other special file")
        member = tarfile.data_filter(member, path)
        if member.isreg():
            limits.add_declared(name, member.size)
            counts[1] += member.size
        if not member.isdir():
            counts[0] += 1
        return member

    try:
        tf = tarfile.open(fileobj=reader, mode="r:")
        tf.copybufsize = CHUNK_SIZE
        tf.errorlevel = 2  # tarfile's own "non-fatal" errors (a link it cannot make) stop us too
        with tf:
            tf.extractall(dest, filter=data_filter)
        guard.finish()
    except tarfile.FilterError as exc:
        raise UnsafeArchiveError(f"{guard.archive}: member {exc.tarinfo.name!r} is unsafe ({exc}); refusing "
                                 f"the archive (nothing was extracted); get it from a trusted source") from None
    except (tarfile.ReadError, tarfile.StreamError, tarfile.HeaderError) as exc:
        raise CorruptArchiveError(f"{guard.archive}: corrupt or truncated tar data ({exc})") from None
    except tarfile.ExtractError as exc:
        raise ExtractError(f"{guard.archive}: cannot extract ({exc}); the archive is probably damaged") from None
    except OSError as exc:
        raise os_error(guard.archive, dest, exc) from None
    return counts[0], counts[1]


def extract_single(reader: DecompressingReader, dest: Path, name: str, archive: str) -> tuple[int, int]:
    """A lone .gz/.bz2/.xz/.zst file decompresses to one file."""
    try:
        with open(dest / name, "wb") as out:
            shutil.copyfileobj(reader, out, CHUNK_SIZE)
            size = out.tell()
    except OSError as exc:
        raise os_error(archive, dest, exc) from None
    return 1, size


def os_error(archive: str, dest: Path, exc: OSError) -> ExtractError | DiskSpaceError:
    if exc.errno is None:  # bz2 and friends report bad data as a bare OSError
        return CorruptArchiveError(f"{archive}: corrupt or truncated data ({exc})")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskSpaceError(f"{archive}: no space left to extract next to {dest.parent} "
                              f"({exc.strerror}); free space or extract elsewhere")
    where = f" {exc.filename}" if exc.filename else ""
    return ExtractError(f"{archive}: cannot write{where} ({exc.strerror or exc}); check the target folder")
