"""Where the benchmarks read and write, and the pause every measured run starts after."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout
OUT = ROOT / "bench" / "out"
WORK = Path(os.environ.get("BENCH_WORK", "/tmp/train-pipeline-bench"))
MIB = 1 << 20
PAUSE = 2.5  # seconds after deleting the previous output: the host takes freed memory back after ~2 s
