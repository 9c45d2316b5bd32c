"""Scenario 7: extracting a tar.gz of many files, run by bench/bench_extract.py.

Ours: ``resumable.extract`` (digest given, and hashing inline). Peer: ``tar -xf``.
"""

from __future__ import annotations

import re

from bench.harness.results import Results
from bench.harness.tools import run_script

ROW = re.compile(r"^\s*(.{28}) +([\d.]+)s +([\d.]+)x(?: +([\d.]+)s +([\d.]+)x)?", re.M)


def run(size: str, files: int, runs: int, res: Results) -> None:
    print(f"\n== 7: extraction of a {size} tar.gz with {files} files (bench/bench_extract.py) ==", flush=True)
    out = run_script(["bench/bench_extract.py", "--size", size, "--files", str(files), "--runs", str(runs)])
    rows = {}
    for m in ROW.finditer(out):
        rows[m.group(1).strip()] = {"wall": float(m.group(2)), "ratio": float(m.group(3))}
        if m.group(4):
            rows[m.group(1).strip()].update(cpu=float(m.group(4)), cpu_ratio=float(m.group(5)))
    checks = {f"{name} vs tar -xf (target <= 1.3)": v["ratio"] for name, v in rows.items() if name != "tar -xf"}
    res.put("7", {"size": size, "files": files, "runs": runs, "contenders": rows, "targets": checks, "output": out})
