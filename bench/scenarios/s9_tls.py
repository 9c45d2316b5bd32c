"""Scenario 9: one big file over HTTPS (nginx with a certificate made at run time).

Ours: ``train-pipeline fetch URL -o F --hash sha256:...`` (durable: fsync before publishing), with
one connection, with the default (auto) and with ``--connections 4``. Peers: ``curl -o F && sync F`` (the same durability,
no hash), curl -o, aria2c -x4 -s4. CPU seconds are compared with curl's plus what
``openssl dgst -sha256`` takes for the same file (what verifying would cost curl).
"""

from __future__ import annotations

import os

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
OURS_4 = "train-pipeline fetch --hash --connections 4"
CURL_SYNC = "curl -o && sync"


def contenders(ngx: Nginx, url: str, dest, digest: str) -> dict:
    tp = train_pipeline_cmd()
    env = dict(os.environ, REQUESTS_CA_BUNDLE=str(ngx.cert))
    fetch = [*tp, "fetch", url, "-o", str(dest), "--hash", f"sha256:{digest}", "-q"]
    curl = [tool("curl"), "-sS", "--cacert", str(ngx.cert), "-o", str(dest), url]
    aria = [tool("aria2c"), "-q", "--allow-overwrite=true", "--auto-file-renaming=false", "--file-allocation=none",
            f"--ca-certificate={ngx.cert}", "-d", str(dest.parent), "-o", dest.name]
    return {
        OURS: lambda: measure([*fetch, "--connections", "1"], env=env),
        AUTO: lambda: measure(fetch, env=env),
        OURS_4: lambda: measure([*fetch, "--connections", "4"], env=env),
        CURL_SYNC: lambda: measure(f"{' '.join(curl)} && sync {dest}", shell=True),
        "curl -o": lambda: measure(curl),
        "aria2c -x4 -s4": lambda: measure([*aria, "-x4", "-s4", url]),
    }


def run(ngx: Nginx, big: str, digest: str, size: int, runs: int, res: Results) -> None:
    print(f"\n== 9: one {human(size)} file over HTTPS ==", flush=True)
    d = WORK / "s9"
    d.mkdir(parents=True, exist_ok=True)
    results = interleaved(contenders(ngx, ngx.tls_url(big), d / big, digest), runs, lambda _name: clear(d), "9")
    clear(d)
    s = summarize(results, CURL_SYNC)
    dgst = summarize({"openssl dgst -sha256": [measure([tool("openssl"), "dgst", "-sha256", str(ngx.www / big)])
                                               for _ in range(3)]}, "openssl dgst -sha256")["openssl dgst -sha256"]
    ours, ours_4 = s[OURS], s[OURS_4]
    checks = {
        "vs curl -o && sync (target <= 1.0)": ours["wall"] / s[CURL_SYNC]["wall"],
        "CPU vs curl + openssl dgst (target <= 1.1)": ours["cpu"] / (s["curl -o"]["cpu"] + dgst["cpu"]),
        "--connections 4 vs aria2c -x4 (target <= 1.0)": ours_4["wall"] / s["aria2c -x4 -s4"]["wall"],
        "default (auto) vs 1 connection (target <= 1.0)": s[AUTO]["wall"] / ours["wall"],
        "peak RSS MiB (target <= 100)": max(ours["rss_mib"], ours_4["rss_mib"], s[AUTO]["rss_mib"]),
    }
    print_table(f"9: {human(size)} over HTTPS, medians of {runs}", s, CURL_SYNC, size)
    print(f"  openssl dgst -sha256 of the file: {dgst['wall']:.2f}s, CPU {dgst['cpu']:.2f}s")
    print_checks(checks)
    res.put("9", {"size": size, "runs": runs, "contenders": s, "dgst": dgst, "targets": checks})
