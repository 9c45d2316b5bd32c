"""Hub snapshots: resumable.hub.snapshot against huggingface_hub.snapshot_download, same server, same run.

    python bench/bench_snapshot.py                       # 512 MiB weights + small files, 3 runs each
    python bench/bench_snapshot.py --size 128M --runs 5 --rate 40M

Three measurements, contenders interleaved (each run starts from an empty cache):
  1. fresh download wall time (medians and the ratio ours / huggingface_hub);
  2. second run: wall time and requests sent (cache hit);
  3. kill at half the weights (SIGKILL, throttled server at --rate bytes/s), then rerun
     unthrottled: bytes the server sent on the rerun (huggingface_hub >= 1.18 starts over).
The server is the stdlib HubServer on 127.0.0.1 (Python; it caps throughput for both alike).
Repos are generated under bench/out/snapshot/. Never run by the tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from offline.hub_server import HubServer  # noqa: E402

OUT = ROOT / "bench" / "out" / "snapshot"
REPO = "bench/model"

OURS = ("from resumable.hub import snapshot; import sys; "
        "snapshot(sys.argv[1], dest_root=sys.argv[2], endpoint=sys.argv[3], progress=False)")
THEIRS = ("from huggingface_hub import snapshot_download; import sys; "
          "snapshot_download(sys.argv[1], cache_dir=sys.argv[2], endpoint=sys.argv[3])")


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("B").rstrip("I")
    return int(float(text[:-1]) * units[text[-1]]) if text and text[-1] in units else int(text)


def make_repo(size: int) -> Path:
    root = OUT / f"repos-{size}"
    repo = root / REPO
    weights = repo / "model.safetensors"
    if weights.is_file() and weights.stat().st_size == size:
        return root
    shutil.rmtree(root, ignore_errors=True)
    repo.mkdir(parents=True)
    with open(weights, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            f.write(os.urandom(n))
            left -= n
    (repo / "config.json").write_text('{"model_type": "bench"}')
    (repo / "tokenizer.json").write_bytes(os.urandom(2 << 20).hex().encode()[: 2 << 20])  # plain git file
    (repo / "README.md").write_text("# bench\n")
    return root


def run(code: str, dest: Path, endpoint: str) -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", code, REPO, str(dest), endpoint], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


def partial_sizes(dest: Path) -> list[int]:
    """Sizes of the partial downloads under ``dest`` (a small one may be published while we look)."""
    sizes = []
    for p in dest.rglob("*"):
        if p.name.endswith(".part") or p.name.endswith(".incomplete"):
            try:
                sizes.append(p.stat().st_size)
            except FileNotFoundError:
                pass
    return sizes


def kill_half_way(code: str, dest: Path, hub: HubServer, size: int, rate: float) -> int:
    """Bytes the server sends on the rerun after a SIGKILL at half the weights."""
    hub.slow = rate
    proc = subprocess.Popen([sys.executable, "-c", code, REPO, str(dest), hub.endpoint], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None:
            if any(n >= size // 2 for n in partial_sizes(dest)):
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    hub.slow = None
    mark = len(hub.settle())
    run(code, dest, hub.endpoint)
    return sum(r.bytes_sent for r in hub.settle()[mark:] if "/resolve/" in r.path or r.server == "cdn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="512M", help="size of the LFS weights file (default 512M)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", default="100M", help="server throttle during the kill test, bytes/s")
    parser.add_argument("--cdn", action="store_true", help="redirect LFS files to the second (CDN) port")
    args = parser.parse_args()
    size, rate = parse_size(args.size), float(parse_size(args.rate))
    root = make_repo(size)
    work = OUT / "work"
    walls: dict[str, list[float]] = {"ours": [], "huggingface_hub": []}
    cached: dict[str, list[float]] = {"ours": [], "huggingface_hub": []}
    requests: dict[str, int] = {}
    resent: dict[str, list[int]] = {"ours": [], "huggingface_hub": []}
    with HubServer(root, cdn=args.cdn) as hub:
        for i in range(args.runs):
            for name, code in (("ours", OURS), ("huggingface_hub", THEIRS)):
                dest = work / f"{name}-{i}"
                shutil.rmtree(dest, ignore_errors=True)
                time.sleep(2)  # freed memory returns to the host after ~2 s (field notes): same state for both
                walls[name].append(run(code, dest, hub.endpoint))
                mark = len(hub.settle())
                cached[name].append(run(code, dest, hub.endpoint))
                requests[name] = len(hub.settle()) - mark
                shutil.rmtree(dest, ignore_errors=True)
        for i in range(args.runs):
            for name, code in (("ours", OURS), ("huggingface_hub", THEIRS)):
                dest = work / f"kill-{name}-{i}"
                shutil.rmtree(dest, ignore_errors=True)
                resent[name].append(kill_half_way(code, dest, hub, size, rate))
                shutil.rmtree(dest, ignore_errors=True)
    mib = 1 << 20
    print(f"repo: {size / mib:.0f} MiB weights + 2 MiB plain file; runs={args.runs}; cdn={args.cdn}")
    for name in walls:
        print(f"{name:>16}: fresh {statistics.median(walls[name]):6.2f} s  "
              f"(runs {', '.join(f'{w:.2f}' for w in walls[name])}); cached {statistics.median(cached[name]):5.2f} s, "
              f"{requests[name]} requests; after kill at 50 %: {statistics.median(resent[name]) / mib:7.1f} MiB re-sent")
    ratio = statistics.median(walls["ours"]) / statistics.median(walls["huggingface_hub"])
    print(f"fresh wall ratio ours / huggingface_hub: {ratio:.2f}")


if __name__ == "__main__":
    main()
