"""One measured run of a contender (wall, CPU, peak RSS), runs interleaved across contenders, and
their medians with the ratio against a base contender."""

from __future__ import annotations

import os
import statistics
import subprocess
import time

from bench.harness.config import PAUSE, ROOT, WORK


def measure(cmd, *, env=None, cwd=None, shell: bool = False) -> dict:
    """Run ``cmd``: wall seconds, CPU seconds (user+sys of the process tree) and its peak RSS.

    Peak RSS comes from GNU time (``/usr/bin/time -f %M``) where present: a child forked from
    this Python process would otherwise inherit the parent's high-water mark.
    """
    if shell:
        cmd = ["sh", "-c", cmd]
    rss_file = None
    if os.path.exists("/usr/bin/time"):
        rss_file = WORK / f".rss-{os.getpid()}"
        cmd = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *cmd]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd or ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, status, ru = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        raise
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))[:300]} exited {proc.returncode}: {err[-800:]}")
    rss = ru.ru_maxrss / 1024
    if rss_file is not None:
        try:
            rss = int(rss_file.read_text().split()[-1]) / 1024
        except (OSError, ValueError, IndexError):
            pass
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_mib": rss}


def interleaved(contenders: dict, runs: int, prepare, label: str) -> dict:
    """Run every contender ``runs`` times, order alternating; returns name -> list of measures."""
    results = {name: [] for name in contenders}
    names = list(contenders)
    for i in range(runs):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            prepare(name)
            # No contender pays for another's disk writes (the generated file's, a deleted output's).
            os.sync()
            time.sleep(PAUSE)
            results[name].append(contenders[name]())
        print_run(label, i, runs, results)
    return results


def print_run(label: str, i: int, runs: int, results: dict) -> None:
    """``  [label] run i/runs: name wall, ...`` for the run that just ended."""
    print(f"  [{label}] run {i + 1}/{runs}: " + ", ".join(f"{n} {r[-1]['wall']:.2f}s" for n, r in results.items()),
          flush=True)


def summarize(results: dict, base: str | None) -> dict:
    out = {}
    base_wall = statistics.median(r["wall"] for r in results[base]) if base else None
    for name, runs in results.items():
        wall = statistics.median(r["wall"] for r in runs)
        out[name] = {"wall": wall, "walls": [round(r["wall"], 3) for r in runs],
                     "cpu": statistics.median(r["cpu"] for r in runs),
                     "rss_mib": max(r["rss_mib"] for r in runs),
                     "ratio": wall / base_wall if base_wall else None}
    return out
