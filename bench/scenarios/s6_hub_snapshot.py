"""Scenario 6: a Hub snapshot, run by bench/bench_snapshot.py (its own stdlib Hub server).

Ours: ``resumable.hub.snapshot``. Peer: ``huggingface_hub.snapshot_download``. Each also killed at 50 %
of the weights and re-run: MiB re-sent (ours resumes, huggingface_hub restarts).
"""

from __future__ import annotations

import re

from bench.harness.results import Results
from bench.harness.tools import run_script

ROW = re.compile(r"^\s*(\S+): fresh\s+([\d.]+) s .*?cached\s+([\d.]+) s, (\d+) requests; after kill at 50 %:"
                 r"\s+([\d.]+) MiB re-sent", re.M)


def run(size: str, runs: int, res: Results) -> None:
    print(f"\n== 6: Hub snapshot of a {size} repository (bench/bench_snapshot.py) ==", flush=True)
    out = run_script(["bench/bench_snapshot.py", "--size", size, "--runs", str(runs)])
    rows = {}
    for m in ROW.finditer(out):
        rows[m.group(1)] = {"fresh_wall": float(m.group(2)), "cached_wall": float(m.group(3)),
                            "cached_requests": int(m.group(4)), "resent_after_kill_mib": float(m.group(5))}
    ratio = float(re.search(r"fresh wall ratio ours / huggingface_hub: ([\d.]+)", out).group(1))
    checks = {"fresh wall vs snapshot_download (target <= 1.0)": ratio}
    if "ours" in rows:
        checks["ours MiB re-sent after kill at 50 % (resumes)"] = rows["ours"]["resent_after_kill_mib"]
    if "huggingface_hub" in rows:
        checks["huggingface_hub MiB re-sent after kill at 50 % (restarts)"] = rows["huggingface_hub"][
            "resent_after_kill_mib"]
    res.put("6", {"size": size, "runs": runs, "contenders": rows, "targets": checks, "output": out})
