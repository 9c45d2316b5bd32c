"""Decompression-bomb limits: total extracted bytes and expansion ratio."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ArchiveTooLargeError, UsageError
from ..progress import human_size

DEFAULT_MAX_TOTAL_SIZE = 64 << 30
DEFAULT_MAX_RATIO = 200.0
# Tiny archives legitimately expand far beyond any ratio (a tar pads to 10 KiB, gzip makes that
# ~100 bytes), so the ratio only bites above this size.
RATIO_FLOOR = 1 << 20


@dataclass
class Limits:
    archive: str
    limit: int
    hint: str  # which setting sets the limit, for the error message
    declared: int = 0

    def add_declared(self, member: str, size: int) -> None:
        """Sizes the archive declares: refuse early when they alone exceed the limit."""
        self.declared += max(size, 0)
        if self.declared > self.limit:
            raise ArchiveTooLargeError(f"{self.archive}: member {member!r} takes the declared size past "
                                    f"{self.hint}; refusing a possible decompression bomb (raise the "
                                    f"limit if you trust this archive)")

    def exceeded(self) -> ArchiveTooLargeError:
        return ArchiveTooLargeError(f"{self.archive}: expands to more than {self.hint}; refusing a possible "
                                 f"decompression bomb (raise the limit if you trust this archive)")


def limits_for(archive: str, archive_size: int, max_total_size: int, max_ratio: float) -> Limits:
    if not isinstance(max_total_size, int) or max_total_size <= 0:
        raise UsageError(f"max_total_size={max_total_size!r}: give a positive number of bytes")
    if not max_ratio or max_ratio <= 0:
        raise UsageError(f"max_ratio={max_ratio!r}: give a positive expansion ratio, e.g. 200")
    by_ratio = max(int(max_ratio * archive_size), RATIO_FLOOR)
    if by_ratio < max_total_size:
        return Limits(archive, by_ratio, f"max_ratio={max_ratio:g} x its size ({human_size(by_ratio)})")
    return Limits(archive, max_total_size, f"max_total_size={human_size(max_total_size)}")
