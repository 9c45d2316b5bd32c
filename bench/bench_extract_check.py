"""The extraction freshness check: stat every extracted member of a 100,000-file target (target: <= 1 s).

    python bench/bench_extract_check.py                    # 100,000 files in 100 folders
    python bench/bench_extract_check.py --files 20000 --runs 9 --keep

Builds a tar of small files (once, under bench/out/), extracts it with resumable.extract, then
times what a re-run pays before it can answer "cached": ``extraction_is_current`` (read the
record, one lstat per member) and a cached ``extract()`` (plus its lock). For comparison it times
other ways to stat the same members: ``os.scandir`` walking, and ``os.lstat`` of each full path.
Page cache warm (a re-run right after the first; pass --cold as root to drop caches first, which
slows everything else on the machine for a moment). Never run by the tests.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resumable.extract import extract, extraction_is_current  # noqa: E402
from resumable.extract.record import read_record, record_path  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "extract-check"


def make_archive(files: int, per_folder: int) -> Path:
    archive = OUT / f"check-{files}.tar"
    if archive.exists():
        return archive
    tmp = archive.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(files):
            data = f"{i}\n".encode() * (1 + i % 16)
            info = tarfile.TarInfo(f"images/d{i // per_folder:04d}/img_{i:07d}.jpg")
            info.size, info.mtime = len(data), 1_700_000_000 + i
            tf.addfile(info, io.BytesIO(data))
    tmp.rename(archive)
    return archive


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timed(fn, runs: int, cold: bool) -> list[float]:
    out = []
    for _ in range(runs):
        if cold:
            drop_caches()
        start = time.perf_counter()
        result = fn()
        out.append(time.perf_counter() - start)
        assert result, "the check said the target is not current"
    return out


def scandir_walk(target: Path) -> int:
    """Alternative: walk with os.scandir, stat each entry (what a record-less check would do)."""
    n, stack = 0, [str(target)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for e in entries:
                e.stat(follow_symlinks=False)
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                n += 1
    return n


def full_path_lstat(target: Path, paths: list[str]) -> int:
    """Alternative: os.lstat of each member's full path (the kernel walks every component)."""
    prefix = f"{target}/"
    return len([os.lstat(prefix + p) for p in paths])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--per-folder", type=int, default=1000, help="files per folder (default 1000)")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--cold", action="store_true", help="drop the page cache before each timed check (root)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the extracted target for the next run (the archive is always kept)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    archive = make_archive(args.files, args.per_folder)
    print(f"archive {archive.name}: {archive.stat().st_size / 2**20:.0f} MiB, {args.files} files "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    target = OUT / "target"
    t0 = time.perf_counter()
    result = extract(archive, target, sync=False, progress=False)  # cached when --keep left it
    assert result.files == args.files
    print(f"{result.status} in {time.perf_counter() - t0:.1f} s", flush=True)

    record = read_record(target)
    members = record.members
    size = record_path(target).stat().st_size
    t0 = time.perf_counter()
    for _ in range(5):
        read_record(target)
    load = (time.perf_counter() - t0) / 5
    print(f"record: {len(members)} members, {size / 2**20:.1f} MiB, read+validated in {load * 1000:.0f} ms")

    paths, start = [], 0
    for rel, count in zip(members.dirs, members.counts):
        paths += [f"{rel}/{n}" if rel else n for n in members.names[start:start + count]]
        start += count
    contenders = {
        "extraction_is_current": lambda: extraction_is_current(archive, target),
        "extract() cached": lambda: extract(archive, target, progress=False).status == "cached",
        "alt: os.scandir walk": lambda: scandir_walk(target) == len(members),
        "alt: lstat full paths": lambda: full_path_lstat(target, paths) == len(paths),
    }
    print(f"\n{'check (' + ('cold' if args.cold else 'warm') + ' cache)':26s} {'median':>8s} {'max':>8s}   ({args.runs} runs)")
    for name, fn in contenders.items():
        times = timed(fn, args.runs, args.cold)
        print(f"{name:26s} {statistics.median(times):7.3f}s {max(times):7.3f}s", flush=True)
    if not args.keep:
        shutil.rmtree(target)
        for extra in target.parent.glob(f".{target.name}.extract*"):
            extra.unlink()


if __name__ == "__main__":
    main()
