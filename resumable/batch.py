"""Many files at once: bounded concurrency over a shared connection pool."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import http
from .errors import ResumableError, UsageError
from .transfer import FetchResult, fetch


@dataclass(frozen=True)
class FetchItem:
    url: str
    dest: str | Path
    size: int | None = None
    hash: str | None = None
    mirrors: tuple[str, ...] = field(default_factory=tuple)


def fetch_many(items: list[FetchItem], *, jobs: int = 8, progress=False,
               **options) -> list[FetchResult | ResumableError]:
    """Fetch every item; returns, in order, a FetchResult or the error that item ended with.

    Two items with one destination are refused before anything is fetched: one of them would be
    reported done with the other's bytes."""
    seen: dict[Path, str] = {}
    real: dict[Path, str] = {}  # folder -> its real path (one lstat per component: once per folder)
    for item in items:
        path = Path(item.dest).absolute()
        if path.parent not in real:
            real[path.parent] = os.path.realpath(path.parent)
        dest = Path(real[path.parent]) / path.name  # 'a/../f' and 'link/f' name real folders
        if dest in seen:
            raise UsageError(f"{http.redact(seen[dest])} and {http.redact(item.url)} would both be saved as {dest}; "
                             "give one of them another name or folder")
        seen[dest] = item.url
    session = http.new_session(pool_size=max(jobs, 1))

    def one(item: FetchItem) -> FetchResult | ResumableError:
        try:
            return fetch(item.url, item.dest, size=item.size, hash=item.hash, mirrors=item.mirrors,
                         progress=progress, session=session, **options)
        except ResumableError as exc:
            return exc

    try:
        with ThreadPoolExecutor(max(1, jobs), thread_name_prefix="fetch") as pool:
            return list(pool.map(one, items))
    finally:
        session.close()
