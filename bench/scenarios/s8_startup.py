"""Scenario 8: startup, ``train-pipeline fetch --help`` (no peers)."""

from __future__ import annotations

from bench.harness.report import print_table
from bench.harness.results import Results
from bench.harness.timing import measure, summarize
from bench.harness.tools import train_pipeline_cmd

OURS = "train-pipeline fetch --help"


def run(runs: int, res: Results) -> None:
    print("\n== 8: train-pipeline fetch --help ==", flush=True)
    tp = train_pipeline_cmd()
    measure([*tp, "fetch", "--help"])  # warm the bytecode cache
    walls = [measure([*tp, "fetch", "--help"]) for _ in range(runs)]
    s = summarize({OURS: walls}, None)
    print_table(f"8: startup, medians of {runs}", s, None)
    checks = {"seconds (target <= 0.5)": s[OURS]["wall"]}
    res.put("8", {"runs": runs, "contenders": s, "targets": checks})
