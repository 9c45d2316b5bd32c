"""Scenario 2: nginx caps each connection at 20 MB/s (``limit_rate 20m``).

Ours: ``train-pipeline fetch --hash`` with no connection setting (auto: issue 13) and with
``--connections 8``. Peers: aria2c -x8 -s8, and curl -o
(one connection) for ``curl_runs`` runs (none with --quick).
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

OURS = "train-pipeline fetch --hash (default: auto)"
OURS_8 = "train-pipeline fetch --connections 8 --hash"
PEER = "aria2c -x8 -s8"


def run(ngx: Nginx, big: str, digest: str, size: int, runs: int, curl_runs: int, res: Results) -> None:
    print(f"\n== 2: server capping each connection at 20 MB/s, {human(size)} ==", flush=True)
    d = WORK / "s2"
    d.mkdir(parents=True, exist_ok=True)
    url, dest = ngx.url(big, "slow"), d / big
    tp = train_pipeline_cmd()
    aria = [tool("aria2c"), "-q", "--allow-overwrite=true", "--auto-file-renaming=false", "--file-allocation=none",
            "-d", str(d), "-o", big]
    contenders = {
        OURS: lambda: measure([*tp, "fetch", url, "-o", str(dest), "--hash", f"sha256:{digest}", "-q"]),
        OURS_8: lambda: measure(
            [*tp, "fetch", url, "-o", str(dest), "--hash", f"sha256:{digest}", "--connections", "8", "-q"]),
        PEER: lambda: measure([*aria, "-x8", "-s8", url]),
    }

    def prepare(_name):
        clear(d)

    results = interleaved(contenders, runs, prepare, "2")
    if curl_runs:
        curl = interleaved({"curl -o (1 connection)": lambda: measure([tool("curl"), "-sS", "-o", str(dest), url])},
                           curl_runs, prepare, "2")
        results.update(curl)
    prepare(None)
    s = summarize(results, PEER)
    throughput = s[PEER]["wall"] / s[OURS]["wall"]
    checks = {"no flags: throughput vs aria2c -x8 -s8 (target >= 0.95)": throughput,
              "--connections 8: throughput vs aria2c -x8 -s8 (target >= 0.95)": s[PEER]["wall"] / s[OURS_8]["wall"]}
    print_table(f"2: limit_rate 20m, {human(size)}, medians of {runs}", s, PEER, size)
    print_checks(checks)
    res.put("2", {"size": size, "runs": runs, "contenders": s, "targets": checks})
