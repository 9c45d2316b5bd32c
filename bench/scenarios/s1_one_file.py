"""Scenario 1: one big file over one connection.

Ours: ``train-pipeline fetch URL -o F --hash sha256:... --connections 1``, and the same with the
default (auto: connections added while they raise the speed; on loopback they should not). Peers: curl -o, wget -O, aria2c -x1,
aria2c -x8 -s8, ``curl -o && sha256sum`` (what verifying costs without us), and ``curl -o && sync``
(a write as durable as ours: we fsync before publishing; ``curl -o`` returns while the file is
still in the page cache, and on a disk slower than the link that alone decides the ratio).
"""

from __future__ import annotations

from bench.harness.config import WORK
from bench.harness.files import clear
from bench.harness.report import print_checks, print_table
from bench.harness.results import Results
from bench.harness.servers import Nginx
from bench.harness.timing import interleaved, measure, summarize
from bench.harness.tools import tool, train_pipeline_cmd
from bench.harness.units import human

OURS = "train-pipeline fetch --hash (1 connection)"
AUTO = "train-pipeline fetch --hash (default: auto)"
CURL_SYNC = "curl -o && sync"


def contenders(url: str, dest, digest: str) -> dict:
    tp = train_pipeline_cmd()
    aria = [tool("aria2c"), "-q", "--allow-overwrite=true", "--auto-file-renaming=false", "--file-allocation=none",
            "-d", str(dest.parent), "-o", dest.name]
    return {
        OURS: lambda: measure([*tp, "fetch", url, "-o", str(dest), "--hash", f"sha256:{digest}", "-q",
                               "--connections", "1"]),
        AUTO: lambda: measure([*tp, "fetch", url, "-o", str(dest), "--hash", f"sha256:{digest}", "-q"]),
        "curl -o": lambda: measure([tool("curl"), "-sS", "-o", str(dest), url]),
        "wget -O": lambda: measure([tool("wget"), "-q", "-O", str(dest), url]),
        "aria2c -x1": lambda: measure([*aria, "-x1", url]),
        "aria2c -x8 -s8": lambda: measure([*aria, "-x8", "-s8", url]),
        "curl -o && sha256sum": lambda: measure(
            f"{tool('curl')} -sS -o {dest} {url} && sha256sum {dest} > /dev/null", shell=True),
        CURL_SYNC: lambda: measure(f"{tool('curl')} -sS -o {dest} {url} && sync {dest}", shell=True),
    }


def run(ngx: Nginx, big: str, digest: str, size: int, runs: int, res: Results) -> None:
    print(f"\n== 1: one {human(size)} file over one connection ==", flush=True)
    d = WORK / "s1"
    d.mkdir(parents=True, exist_ok=True)
    results = interleaved(contenders(ngx.url(big), d / big, digest), runs, lambda _name: clear(d), "1")
    clear(d)
    s = summarize(results, "curl -o")
    ours = s[OURS]
    checks = {
        "vs curl -o (target <= 1.0)": ours["wall"] / s["curl -o"]["wall"],
        "vs curl -o && sha256sum (target <= 0.45)": ours["wall"] / s["curl -o && sha256sum"]["wall"],
        "vs curl -o && sync, as durable (target <= 1.0)": ours["wall"] / s[CURL_SYNC]["wall"],
        "default (auto) vs 1 connection (target <= 1.0)": s[AUTO]["wall"] / ours["wall"],
        "peak RSS MiB (target <= 100)": max(ours["rss_mib"], s[AUTO]["rss_mib"]),
    }
    print_table(f"1: {human(size)}, medians of {runs}", s, "curl -o", size)
    print_checks(checks)
    res.put("1", {"size": size, "runs": runs, "contenders": s, "targets": checks})
