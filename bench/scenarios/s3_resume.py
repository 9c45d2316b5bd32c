"""Scenario 3: resume after SIGKILLs at random offsets, the file served at 50 MB/s.

Each contender is killed once its output has grown past each offset, then run to the end. Counted:
what nginx logged as sent (``$bytes_sent``) minus the file size, per interruption, and the sha256.
Ours: ``train-pipeline fetch --hash`` (its ``.part`` grows). Peers: curl -C -, wget -c.
"""

from __future__ import annotations

import random
import signal
import statistics
import subprocess
import time
from pathlib import Path

from bench.harness.config import MIB, ROOT, WORK
from bench.harness.files import clear, sha256_of
from bench.harness.results import Results
from bench.harness.servers import Nginx
from bench.harness.tools import tool, train_pipeline_cmd
from bench.harness.units import human

OURS = "train-pipeline fetch --hash"
CHECK = "MiB re-sent per interruption (target <= 1)"


def contenders(url: str, dest: Path, digest: str) -> dict:
    """name -> (command, the file that grows while it runs)."""
    from resumable.state import part_path

    tp = train_pipeline_cmd()
    return {
        OURS: ([*tp, "fetch", url, "-o", str(dest), "--hash", f"sha256:{digest}", "-q"], part_path(dest)),
        "curl -C -": ([tool("curl"), "-sS", "-C", "-", "-o", str(dest), url], dest),
        "wget -c": ([tool("wget"), "-q", "-c", "-O", str(dest), url], dest),
    }


def kill_at(cmd: list[str], growing: Path, target: float) -> int:
    """Start ``cmd``, SIGKILL it once ``growing`` reaches ``target`` bytes: 1 if killed, 0 if it ended first."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        try:
            if growing.stat().st_size >= target:
                break
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    killed = 0
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        killed = 1
    proc.wait()
    return killed


def interrupted(ngx: Nginx, cmd: list[str], growing: Path, offsets: list[float], dest: Path, digest: str,
                size: int) -> dict:
    """One round of one contender: killed at each offset, then run to the end."""
    clear(dest.parent)
    mark = ngx.mark()
    killed = 0
    for target in offsets:
        killed += kill_at(cmd, growing, target)
    time.sleep(0.3)
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sent, requests = ngx.sent_since(mark, settle=0.5)
    extra = sent - size
    return {"kills": killed, "sent": sent, "requests": requests, "extra": extra,
            "per_kill_mib": extra / max(killed, 1) / MIB, "sha256_ok": sha256_of(dest) == digest}


def print_summary(s: dict, kills: int, rounds: int) -> None:
    print(f"\n3: bytes re-sent per interruption (nginx $bytes_sent - file size) / kills, {rounds} rounds of {kills}")
    for name, v in s.items():
        print(f"  {name:32s} median {v['per_kill_mib_median']:6.2f} MiB  max {v['per_kill_mib_max']:6.2f} MiB  "
              f"sha256 {'ok' if v['all_sha256_ok'] else 'WRONG'}")


def run(ngx: Nginx, big: str, digest: str, size: int, kills: int, rounds: int, res: Results) -> None:
    print(f"\n== 3: resume after {kills} SIGKILLs at random offsets, {human(size)} at 50 MB/s ==", flush=True)
    d = WORK / "s3"
    d.mkdir(parents=True, exist_ok=True)
    rng = random.Random(8)
    cmds = contenders(ngx.url(big, "r50"), d / big, digest)
    out = {name: [] for name in cmds}
    for r in range(rounds):
        offsets = sorted(rng.uniform(0.05, 0.95) * size for _ in range(kills))
        for name, (cmd, growing) in cmds.items():
            x = interrupted(ngx, cmd, growing, offsets, d / big, digest, size)
            out[name].append(x)
            extra, killed = x["extra"], x["kills"]
            print(f"  [3] round {r + 1}: {name}: {killed} kills, {x['requests']} requests, {extra / MIB:.2f} MiB "
                  f"re-sent ({extra / max(killed, 1) / MIB:.2f} MiB per kill), sha256 "
                  f"{'ok' if x['sha256_ok'] else 'WRONG'}", flush=True)
    clear(d)
    s = {name: {"per_kill_mib_median": statistics.median(x["per_kill_mib"] for x in v),
                "per_kill_mib_max": max(x["per_kill_mib"] for x in v),
                "all_sha256_ok": all(x["sha256_ok"] for x in v), "rounds": v} for name, v in out.items()}
    print_summary(s, kills, rounds)
    checks = {CHECK: s[OURS]["per_kill_mib_max"]}
    print(f"  ours MiB re-sent per interruption, worst round (target <= 1): {checks[CHECK]:.2f}")
    res.put("3", {"size": size, "kills": kills, "rounds": rounds, "contenders": s, "targets": checks})
