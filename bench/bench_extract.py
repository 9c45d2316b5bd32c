"""Extraction speed: resumable.extract against `tar -xf` on the same tar.gz, interleaved.

    python bench/bench_extract.py                 # ~1 GiB tar.gz with ~10k files (issue 8 target: <= 1.3x tar)
    python bench/bench_extract.py --size 200M --files 2000 --runs 5

The archive is generated once under bench/out/ (content: 70 % random bytes, like images, and
30 % text). Each run removes the previous output first, then times one contender; contenders
alternate so page-cache and memory effects hit both alike. Prints medians and ratios.
Never run by the tests.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resumable.extract import extract  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "extract"


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("B").rstrip("I")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def make_archive(size: int, files: int) -> Path:
    archive = OUT / f"bench-{size}-{files}.tar.gz"
    if archive.exists():
        return archive
    src = OUT / "src"
    shutil.rmtree(src, ignore_errors=True)
    rng = random.Random(0)
    words = [f"word{i}" for i in range(5000)]
    per_file = max(size // files, 1)
    for i in range(files):
        folder = src / f"d{i // 500:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        n = max(1, int(rng.uniform(0.5, 1.5) * per_file))
        text = " ".join(rng.choices(words, k=max(1, int(n * 0.3) // 8))).encode()
        (folder / f"f{i:06d}.bin").write_bytes(os.urandom(int(n * 0.7)) + text[: n - int(n * 0.7)])
    tmp = archive.with_suffix(".tmp")
    with open(tmp, "wb") as out:  # gzip -1: the benchmark measures extraction, not archive creation
        tar = subprocess.Popen(["tar", "-cf", "-", "-C", str(src), "."], stdout=subprocess.PIPE)
        subprocess.run(["gzip", "-1"], stdin=tar.stdout, stdout=out, check=True)
        tar.wait()
    tmp.rename(archive)
    shutil.rmtree(src)
    return archive


def clean(target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    for extra in target.parent.glob(f".{target.name}.extract*"):
        extra.unlink()
    os.sync()  # the previous contender's writeback must not slow the next one
    time.sleep(2)  # freed memory goes back to the host ~2 s after a large delete (field notes)


def cpu_seconds() -> float:
    """CPU of this process (all threads) plus waited-for children (tar and its gzip)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_tar(archive: Path, target: Path, sync: bool) -> None:
    target.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(target)], check=True)
    if sync:
        os.sync()


def run_ours(archive: Path, target: Path, sync: bool, digest: str | None) -> None:
    result = extract(archive, target, archive_digest=digest, sync=sync, progress=False)
    assert result.status == "extracted"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1G", help="archive content size, e.g. 1G, 200M (default 1G)")
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sync", action="store_true", help="also compare with a disk flush (ours: syncfs; tar: sync)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    archive = make_archive(parse_size(args.size), args.files)
    print(f"archive {archive.name}: {archive.stat().st_size / 2**20:.0f} MiB "
          f"(made in {time.perf_counter() - t0:.1f} s)", flush=True)
    from resumable.hashes import file_digest

    digest = f"sha256:{file_digest(archive)}"
    contenders = {
        "tar -xf": lambda t: run_tar(archive, t, False),
        "extract (digest given)": lambda t: run_ours(archive, t, False, digest),
        "extract (hashing inline)": lambda t: run_ours(archive, t, False, None),
    }
    if args.sync:
        contenders["tar -xf && sync"] = lambda t: run_tar(archive, t, True)
        contenders["extract (hashing, syncfs)"] = lambda t: run_ours(archive, t, True, None)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    target = OUT / "target"
    names = list(contenders)
    for i in range(args.runs):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            clean(target)
            start, start_cpu = time.perf_counter(), cpu_seconds()
            contenders[name](target)
            times[name].append(time.perf_counter() - start)
            cpu[name].append(cpu_seconds() - start_cpu)
        print(f"run {i + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names), flush=True)
    clean(target)
    base, base_cpu = statistics.median(times["tar -xf"]), statistics.median(cpu["tar -xf"])
    print(f"\n{'contender':28s} {'wall':>8s} {'vs tar':>7s} {'cpu':>8s} {'vs tar':>7s}   (medians)")
    for name in names:
        med, med_cpu = statistics.median(times[name]), statistics.median(cpu[name])
        print(f"{name:28s} {med:7.2f}s {med / base:6.2f}x {med_cpu:7.2f}s {med_cpu / base_cpu:6.2f}x")


if __name__ == "__main__":
    main()
