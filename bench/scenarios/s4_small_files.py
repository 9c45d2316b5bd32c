"""Scenario 4: many small files (1,000 of 64 KiB).

Ours: ``train-pipeline datasets download custom --urls ...`` (the batch path). Peers: aria2c -i LIST -j8,
wget -i LIST, and ``aria2c -i LIST -j8 && sync`` of its files and folder: as durable as ours, which
syncs every file before its rename (one syncfs per group of files) and the folder once (the
like-for-like row, as ``curl -o && sync`` in scenario 1; the target stays against aria2c as it is).
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.harness.config import WORK
from bench.harness.files import clear, rm
from bench.harness.report import print_checks, print_table
from bench.harness.results import Results
from bench.harness.servers import Nginx
from bench.harness.timing import interleaved, measure, summarize
from bench.harness.tools import tool, train_pipeline_cmd

OURS = "train-pipeline datasets download custom --urls"
PEER = "aria2c -i LIST -j8"
PEER_SYNC = "aria2c -i LIST -j8 && sync"
WGET = "wget -i LIST"


def small_urls(ngx: Nginx, count: int) -> list[str]:
    """``count`` files of 64 KiB random bytes under www/small (kept between runs), and their URLs."""
    small = ngx.www / "small"
    if len(list(small.glob("*.bin"))) != count:
        rm(small)
        small.mkdir(parents=True)
        for i in range(count):
            (small / f"s{i:05d}.bin").write_bytes(os.urandom(64 << 10))
    return [ngx.url(f"small/s{i:05d}.bin") for i in range(count)]


def run(ngx: Nginx, count: int, runs: int, res: Results) -> None:
    print(f"\n== 4: {count} files of 64 KiB ==", flush=True)
    urls = small_urls(ngx, count)
    d = WORK / "s4"
    d.mkdir(parents=True, exist_ok=True)
    listing = WORK / "s4-urls.txt"
    listing.write_text("\n".join(urls) + "\n")
    tp = train_pipeline_cmd()
    # Each run writes into a folder of its own, deleted only after the last run. On these machines'
    # ext4 (no journal) every file creation skips, one by one, the inodes freed in the last minutes:
    # deleting 1,000 files before each run made creations ~0.5 ms each, growing run after run,
    # and the scenario timed the kernel's scan more than the tools (run 1 of 5: ours 1.77 s,
    # aria2c 1.73 s; run 3: 3.38 s and 4.93 s).
    run_no: dict[str, int] = {}

    def out(name: str) -> Path:
        return d / f"{name.split()[0]}-{'sync-' if name == PEER_SYNC else ''}{run_no[name]}"

    def next_run(name: str) -> None:
        run_no[name] = run_no.get(name, 0) + 1

    contenders = {
        OURS: lambda: measure(
            [*tp, "datasets", "download", "custom", "--urls", *urls, "--data-dir", str(out(OURS)), "--no-extract",
             "--quiet"]),
        PEER: lambda: measure(
            [tool("aria2c"), "-q", "-i", str(listing), "-j8", "-d", str(out(PEER)), "--allow-overwrite=true",
             "--auto-file-renaming=false", "--file-allocation=none"]),
        WGET: lambda: measure([tool("wget"), "-q", "-i", str(listing), "-P", str(out(WGET))]),
        # Paths as arguments of sh, never spliced into its script.
        PEER_SYNC: lambda: measure(
            ["sh", "-c", '"$0" -q -i "$1" -j8 -d "$2" --allow-overwrite=true --auto-file-renaming=false '
                         '--file-allocation=none && sync "$2"/* "$2"', tool("aria2c"), str(listing), str(out(PEER_SYNC))]),
    }
    clear(d)
    try:
        results = interleaved(contenders, runs, next_run, "4")
        got = sum(1 for _ in out(OURS).rglob("*.bin")) if out(OURS).exists() else None
    finally:
        clear(d)
    s = summarize(results, PEER)
    checks = {"vs aria2c -i -j8 (target <= 1.0)": s[OURS]["ratio"],
              "vs aria2c -i -j8 && sync, as durable": s[OURS]["wall"] / s[PEER_SYNC]["wall"]}
    print_table(f"4: {count} x 64 KiB, medians of {runs}", s, PEER)
    print_checks(checks)
    res.put("4", {"files": count, "runs": runs, "contenders": s, "targets": checks, "last_ours_files": got})
