"""Where members may go: the rules tarfile's ``data`` filter applies, made lexical and link-aware.

tarfile's filter checks with ``os.path.realpath`` on the disk as it is; Python 3.11 before 3.11.13
lets crafted symlink chains slip past that (CVE-2025-4138/4517). This guard adds checks that do
not depend on the disk: no member is written at or through a path an earlier member made a
symlink, and every symlink must resolve inside the target without passing through another
symlink. Together with extracting into a fresh, empty folder, nothing can land outside it.
"""

from __future__ import annotations

import posixpath
import stat
from pathlib import Path

from ..errors import UnsafeArchiveError


def _split(name: str) -> list[str]:
    return [p for p in name.split("/") if p not in ("", ".")]


class MemberGuard:
    def __init__(self, archive: Path | str):
        self.archive = str(archive)
        self.symlinks: dict[str, str] = {}  # normalised member path -> link target

    def refuse(self, member: str, why: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"{self.archive}: member {member!r} {why}; refusing the archive "
                                  f"(nothing was extracted); get it from a trusted source")

    def path(self, name: str) -> str:
        """The member's normalised relative path, or a refusal."""
        if "\0" in name:
            raise self.refuse(name, "has a NUL byte in its name")
        if name.startswith("/") or posixpath.isabs(name):
            raise self.refuse(name, "has an absolute path")
        parts = _split(name)
        if ".." in parts:
            raise self.refuse(name, "climbs out of the target with '..'")
        if not parts:
            return ""
        rel = "/".join(parts)
        self._not_through_symlink(name, parts, include_last=True)
        return rel

    def _not_through_symlink(self, member: str, parts: list[str], include_last: bool) -> None:
        upto = len(parts) if include_last else len(parts) - 1
        for i in range(1, upto + 1):
            prefix = "/".join(parts[:i])
            if prefix in self.symlinks:
                raise self.refuse(member, f"would be written through the symlink {prefix!r}")

    def symlink(self, name: str, rel: str, target: str) -> None:
        if not target or "\0" in target:
            raise self.refuse(name, "is a symlink with an empty or invalid target")
        if target.startswith("/"):
            raise self.refuse(name, f"is a symlink to the absolute path {target!r}")
        where = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
        if where == ".." or where.startswith("../"):
            raise self.refuse(name, f"is a symlink pointing outside the target ({target!r})")
        self.symlinks[rel] = target

    def hardlink(self, name: str, target: str) -> str:
        """Tar hard links name another member, relative to the archive root."""
        if target.startswith("/"):
            raise self.refuse(name, f"is a hard link to the absolute path {target!r}")
        parts = _split(target)
        if ".." in parts or not parts:
            raise self.refuse(name, f"is a hard link pointing outside the target ({target!r})")
        self._not_through_symlink(name, parts, include_last=True)  # link() would follow a symlink
        return "/".join(parts)

    def finish(self) -> None:
        """Every symlink must resolve inside the target without passing through another symlink
        (a later member may have made an intermediate path a symlink, changing what '..' means)."""
        for rel, target in self.symlinks.items():
            stack = _split(posixpath.dirname(rel))
            parts = [p for p in target.split("/") if p not in ("", ".")]
            for i, part in enumerate(parts):
                if part == "..":
                    if not stack:
                        raise self.refuse(rel, f"is a symlink pointing outside the target ({target!r})")
                    stack.pop()
                    continue
                stack.append(part)
                if i < len(parts) - 1 and "/".join(stack) in self.symlinks:
                    raise self.refuse(rel, f"is a symlink whose target {target!r} passes through "
                                           f"the symlink {'/'.join(stack)!r}")


def data_mode(mode: int | None, *, executable_ok: bool = True) -> int | None:
    """tarfile's data filter rule for regular files: no setuid/setgid/sticky, no group/other
    write, owner read+write, and no exec bits unless the owner may execute."""
    if mode is None:
        return None
    mode &= 0o755
    if not mode & 0o100:
        mode &= ~0o111
    return mode | 0o600


def zip_unix_mode(external_attr: int) -> int:
    return (external_attr >> 16) & 0xFFFF


def is_special(mode: int) -> bool:
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
