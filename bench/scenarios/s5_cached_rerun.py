"""Scenario 5: a fully cached re-run of ``python flows/pipeline.py --config`` (a 1 MiB dataset and the
big file's), temporary local Prefect server, warm ``PREFECT_HOME``.

Peer: a one-task Prefect flow in the same mode. Also counted: the bytes nginx sent for the datasets'
files during the re-runs (target 0).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from bench.harness.config import MIB, ROOT, WORK
from bench.harness.files import make_random_file, rm
from bench.harness.report import print_checks, print_table
from bench.harness.results import Results
from bench.harness.servers import Nginx
from bench.harness.timing import measure, print_run, summarize
from bench.harness.units import human

PEER = "one-task Prefect flow"
ONE_TASK_FLOW = '''
import sys
from prefect import flow, task

@task
def step(x):
    return x

@flow(name="one-task")
def one_task():
    return step(1)

if __name__ == "__main__":
    one_task()
'''


def write_configs(ngx: Nginx, d: Path, big: str, digest: str, size: int) -> dict:
    """name ("small", "big") -> a pipeline config downloading that one file into its own data dir."""
    small_digest = make_random_file(ngx.www / "flow-small.bin", 1 * MIB)
    configs = {}
    for name, fname, dg, sz in (("small", "flow-small.bin", small_digest, MIB), ("big", big, digest, size)):
        cfg = d / f"{name}.yaml"
        cfg.write_text(json.dumps({
            "datasets": [{"name": f"bench-{name}", "files": [{"url": ngx.url(fname), "size": sz,
                                                              "hash": f"sha256:{dg}"}]}],
            "train": None, "data_dir": str(d / f"data-{name}"), "models_cache": str(d / "models"),
            "results_dir": str(d / f"results-{name}")}))
        configs[name] = cfg
    return configs


def reruns(ngx: Nginx, contenders: dict, runs: int, served: tuple[str, ...]) -> tuple[dict, dict]:
    """Interleaved like ``timing.interleaved`` but with no pause: (name -> measures, name -> bytes sent per run)."""
    sent = {}
    results = {name: [] for name in contenders}
    names = list(contenders)
    for i in range(runs):
        for name in (names if i % 2 == 0 else names[::-1]):
            m0 = ngx.mark()
            results[name].append(contenders[name]())
            sent.setdefault(name, []).append(ngx.sent_since(m0, settle=0.1, paths=served)[0])
        print_run("5", i, runs, results)
    return results, sent


def run(ngx: Nginx, big: str, digest: str, size: int, runs: int, res: Results) -> None:
    print(f"\n== 5: fully cached re-run of the flow (small dataset, {human(size)} dataset) ==", flush=True)
    d = WORK / "s5"
    rm(d)
    d.mkdir(parents=True)
    configs = write_configs(ngx, d, big, digest, size)
    env = {**os.environ, "PREFECT_HOME": str(d / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_LOGGING_LEVEL": "WARNING", "TRAIN_PIPELINE_RESULT_STORAGE": str(d / "results-storage")}
    one_task = d / "one_task_flow.py"
    one_task.write_text(ONE_TASK_FLOW)
    flow_cmd = [sys.executable, str(ROOT / "flows" / "pipeline.py"), "--config"]
    # First runs: download (and warm PREFECT_HOME, so the measured runs all find it initialised).
    for name, cfg in configs.items():
        t0 = time.perf_counter()
        measure([*flow_cmd, str(cfg)], env=env)
        print(f"  [5] first run ({name}): {time.perf_counter() - t0:.1f} s", flush=True)
    measure([sys.executable, str(one_task)], env=env)
    contenders = {f"flow re-run, {name} dataset": (lambda c=cfg: measure([*flow_cmd, str(c)], env=env))
                  for name, cfg in configs.items()}
    contenders[PEER] = lambda: measure([sys.executable, str(one_task)], env=env)
    mark = ngx.mark()
    served = ("/f/flow-small.bin", f"/f/{big}")
    results, sent = reruns(ngx, contenders, runs, served)
    total_sent = ngx.sent_since(mark, paths=served)[0]
    s = summarize(results, PEER)
    for name in s:
        s[name]["bytes_sent"] = max(sent.get(name, [0]))
    small, bigr, one = (s["flow re-run, small dataset"], s["flow re-run, big dataset"], s[PEER])
    checks = {
        "bytes transferred by the re-runs (target 0)": total_sent,
        "big re-run / small re-run (target <= 1.2)": bigr["wall"] / small["wall"],
        "big re-run - one-task flow, s (target <= 2)": bigr["wall"] - one["wall"],
    }
    print_table(f"5: cached re-runs (temporary local Prefect server, warm PREFECT_HOME), medians of {runs}", s, PEER)
    print_checks(checks)
    res.put("5", {"size": size, "runs": runs, "contenders": s, "targets": checks})
