"""Scenario 4: many small files (1,000 of 64 KiB).

Ours: ``train-pipeline datasets download custom --urls ...`` (the batch path). Peers: aria2c -i LIST -j8,
wget -i LIST, and ``aria2c -i LIST -j8 && sync`` of its files and folder: as durable as ours, which
fsyncs every file before its rename and the folder once (the like-for-like row, as ``curl -o &&
sync`` in scenario 1; the target stays against aria2c as it is).
"""

from __future__ import annotations

import os

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
    contenders = {
        OURS: lambda: measure(
            [*tp, "datasets", "download", "custom", "--urls", *urls, "--data-dir", str(d / "ours"), "--no-extract",
             "--quiet"]),
        PEER: lambda: measure(
            [tool("aria2c"), "-q", "-i", str(listing), "-j8", "-d", str(d / "aria2c"), "--allow-overwrite=true",
             "--auto-file-renaming=false", "--file-allocation=none"]),
        "wget -i LIST": lambda: measure([tool("wget"), "-q", "-i", str(listing), "-P", str(d / "wget")]),
        PEER_SYNC: lambda: measure(
            f"{tool('aria2c')} -q -i {listing} -j8 -d {d / 'aria2c-sync'} --allow-overwrite=true "
            f"--auto-file-renaming=false --file-allocation=none && sync {d / 'aria2c-sync'}/* {d / 'aria2c-sync'}",
            shell=True),
    }
    results = interleaved(contenders, runs, lambda _name: clear(d), "4")
    got = sum(1 for p in (d / "ours").rglob("*.bin")) if (d / "ours").exists() else None
    clear(d)
    s = summarize(results, PEER)
    checks = {"vs aria2c -i -j8 (target <= 1.0)": s[OURS]["ratio"],
              "vs aria2c -i -j8 && sync, as durable": s[OURS]["wall"] / s[PEER_SYNC]["wall"]}
    print_table(f"4: {count} x 64 KiB, medians of {runs}", s, PEER)
    print_checks(checks)
    res.put("4", {"files": count, "runs": runs, "contenders": s, "targets": checks, "last_ours_files": got})
