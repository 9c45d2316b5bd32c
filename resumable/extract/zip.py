"""Zip members under the same rules as tarfile's ``data`` filter (zipfile has no such filter)."""

from __future__ import annotations

import lzma
import os
import stat
import time
import zipfile
import zlib
from pathlib import Path
from typing import Callable

from ..errors import CorruptArchiveError, ExtractError
from .formats import CHUNK_SIZE
from .guard import MemberGuard, data_mode, is_special, zip_unix_mode
from .limits import Limits
from .tar import os_error

_MAX_LINK = 4096  # a symlink's target is its content: anything longer is not a symlink
_UNIX = 3  # ZipInfo.create_system of archives made on Unix: external_attr carries st_mode
_DOS = 0


def extract_zip(archive: Path, dest: Path, guard: MemberGuard, limits: Limits,
                on_progress: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Extract into ``dest`` (a fresh folder); return (files, bytes of regular files)."""
    name = str(archive)
    files = written = 0
    member = ""
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:  # refuse an obvious bomb before writing anything
                limits.add_declared(info.filename, info.file_size)
            for info in infos:
                member = info.filename
                size = _extract_member(zf, info, dest, guard, limits, written)
                if size is not None:
                    files += 1
                    written += size
                if on_progress is not None:
                    on_progress(info.header_offset + info.compress_size)
            guard.finish()
    except ExtractError:
        raise
    except zipfile.BadZipFile as exc:
        where = f" (member {member!r})" if member else ""
        raise CorruptArchiveError(f"{name}: corrupt or truncated zip{where} ({exc})") from None
    except (zlib.error, EOFError, lzma.LZMAError) as exc:
        raise CorruptArchiveError(f"{name}: corrupt or truncated data in member {member!r} ({exc})") from None
    except NotImplementedError as exc:
        raise ExtractError(f"{name}: member {member!r} uses an unsupported zip feature ({exc}); "
                           f"repack it with deflate") from None
    except OSError as exc:
        raise os_error(name, dest, exc) from None
    return files, written


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, guard: MemberGuard,
                    limits: Limits, written: int) -> int | None:
    """Extract one member; return its byte size for files and symlinks, None for folders."""
    member = info.filename
    if info.create_system == _DOS and "\\" in member:  # made on Windows: '\\' separates folders, as unzip reads it
        member = member.replace("\\", "/")
    rel = guard.path(member)
    mode = zip_unix_mode(info.external_attr) if info.create_system == _UNIX else 0
    if is_special(mode):
        raise guard.refuse(member, "is a device file, FIFO or socket")
    if info.is_dir() or stat.S_ISDIR(mode):
        if rel:
            os.makedirs(dest / rel, exist_ok=True)
        return None
    if not rel:
        raise guard.refuse(member, "would replace the target folder itself")
    if info.flag_bits & 0x1:
        raise ExtractError(f"{zf.filename}: member {member!r} is encrypted; decrypt the archive first "
                           f"(passwords are not supported)")
    path = dest / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir() and not path.is_symlink():
        raise ExtractError(f"{zf.filename}: member {member!r} is a file where the archive made a folder; "
                           f"the archive is malformed")
    if os.path.lexists(path):  # a duplicate name: replace it, never write through what is there
        os.unlink(path)
    if stat.S_ISLNK(mode):
        if info.file_size > _MAX_LINK:
            raise guard.refuse(member, "is a symlink with an implausibly long target")
        target = zf.read(info).decode("utf-8", "surrogateescape")
        guard.symlink(member, rel, target)
        os.symlink(target, path)
        return 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    size = 0
    with os.fdopen(fd, "wb") as out, zf.open(info) as src:
        while chunk := src.read(CHUNK_SIZE):
            size += len(chunk)
            if written + size > limits.limit:  # actual bytes: declared sizes may lie
                raise limits.exceeded()
            out.write(chunk)
        if mode & 0o777:
            os.fchmod(out.fileno(), data_mode(mode & 0o7777))
    mtime = time.mktime(info.date_time + (0, 0, -1))
    os.utime(path, (mtime, mtime))
    return size

