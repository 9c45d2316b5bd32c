"""Issue 8 benchmarks: train-pipeline against curl, wget, aria2c, huggingface_hub and tar, one command.

    python bench/run.py                      # every scenario, 2 GiB file, 5 runs each (~25 min)
    python bench/run.py --quick              # 256 MiB, 3 runs, the long peers trimmed (~5 min)
    python bench/run.py --scenarios 1,2 --size 1G --runs 3

Sets up nginx on 127.0.0.1 (installs the Debian package if it is missing) with every temporary
path in a bench folder under /tmp, serves generated files, and runs each scenario with its peers
in the same run: contenders interleaved (order alternates run to run), each run started from the
same state (previous output removed, then a pause so freed memory has returned to the host: see
the field notes), medians reported with the ratio against the peer named by the target. Wall
time, CPU seconds (user+sys of the process tree) and peak RSS come from ``os.wait4`` on each
contender's process. Results also go to ``bench/out/results.json``. Never run by the tests.

Scenarios (issue 8):
  1  one file, 1 connection: ``train-pipeline fetch --hash`` vs curl -o, wget, aria2c -x1/-x8,
     curl -o && sha256sum
  2  nginx ``limit_rate 20m`` per connection: ``--connections 8`` vs aria2c -x8 -s8 (and curl once)
  3  resume: SIGKILL at random offsets; bytes nginx sent beyond the file size, per interruption,
     vs curl -C -
  4  1,000 files of 64 KiB: ``train-pipeline datasets download custom --urls ...`` vs aria2c -i -j8
  5  fully cached re-run of the flow (small and big dataset) vs a one-task Prefect flow
  6  Hub snapshot (~1 GiB): bench_snapshot.py (ours vs huggingface_hub.snapshot_download, kill at 50 %)
  7  extraction of a ~1 GiB tar.gz with ~10k files: bench_extract.py (ours vs tar -xf)
  8  ``train-pipeline fetch --help`` startup
  9  HTTPS (nginx with a certificate made at run time): ``fetch --hash`` with 1 and 4 connections vs
     curl -o && sync, curl -o, aria2c -x4 -s4; CPU vs curl + ``openssl dgst -sha256`` (issue 13)
"""

# Layout: bench/scenarios/s<N>_<name>.py holds scenario N (ours and its peers side by side);
# bench/harness/ holds what they share (nginx, timing and interleaving, tables, results.json, this CLI).

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's engine (and bench.*), also when run before `pip install -e .`

from bench.harness.cli import parse_args, plan  # noqa: E402
from bench.harness.config import OUT, WORK  # noqa: E402
from bench.harness.files import make_random_file  # noqa: E402
from bench.harness.report import markdown, print_targets  # noqa: E402
from bench.harness.results import Results  # noqa: E402
from bench.harness.servers import Nginx  # noqa: E402
from bench.harness.tools import compile_package, ensure_packages  # noqa: E402
from bench.harness.units import human  # noqa: E402
from bench.scenarios import (s1_one_file, s2_capped, s3_resume, s4_small_files, s5_cached_rerun,  # noqa: E402
                             s6_hub_snapshot, s7_extract, s8_startup, s9_tls)


def served_scenarios(ngx: Nginx, wanted: set[int], quick: bool, size: int, runs: int, res: Results) -> None:
    """Scenarios 1-5 and 9: against the running nginx, the big file generated first (once, kept between runs)."""
    big = f"big-{size}.bin"
    digest = None
    if wanted & {1, 2, 3, 5, 9}:
        t0 = time.perf_counter()
        digest = make_random_file(ngx.www / big, size)
        print(f"served {big} ({human(size)}, sha256 {digest[:16]}..., ready in {time.perf_counter() - t0:.1f} s)",
              flush=True)
    if 1 in wanted:
        s1_one_file.run(ngx, big, digest, size, runs, res)
    if 2 in wanted:
        s2_capped.run(ngx, big, digest, size, runs, 0 if quick else 1, res)
    if 3 in wanted:
        s3_resume.run(ngx, big, digest, size, kills=3 if quick else 5, rounds=1, res=res)
    if 4 in wanted:
        s4_small_files.run(ngx, 1000, runs, res)
    if 5 in wanted:
        s5_cached_rerun.run(ngx, big, digest, size, runs, res)
    if 9 in wanted:
        s9_tls.run(ngx, big, digest, size, runs, res)


def main() -> int:
    args = parse_args(__doc__)
    if args.markdown:
        print(markdown(json.loads((OUT / "results.json").read_text())), end="")
        return 0
    wanted, size, runs = plan(args)
    os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
    free = shutil.disk_usage(WORK.parent).free
    if free < 4 * size:
        print(f"warning: {human(free)} free under {WORK.parent}; the scenarios need about {human(4 * size)}",
              file=sys.stderr)
    ensure_packages()
    compile_package()
    WORK.mkdir(parents=True, exist_ok=True)
    res = Results(args, size)
    print(f"machine: {res.data['machine']}; big file {human(size)}; {runs} runs; work dir {WORK}", flush=True)
    with Nginx(WORK) as ngx:
        served_scenarios(ngx, wanted, args.quick, size, runs, res)
    if 6 in wanted:
        s6_hub_snapshot.run("256M" if args.quick else "1G", 2 if args.quick else 3, res)
    if 7 in wanted:
        s7_extract.run("200M" if args.quick else "1G", 2000 if args.quick else 10_000, 3, res)
    if 8 in wanted:
        s8_startup.run(7, res)
    res.data["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    res.save()
    print_targets(res.data)
    (OUT / "results.md").write_text(markdown(res.data))
    print(f"\nresults: {OUT / 'results.json'}, {OUT / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
