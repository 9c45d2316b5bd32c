"""A stand-in for train_pipeline.training.worker, run by the real launcher (torchrun) in the
launcher tests: no model, so a launch costs about as much as starting Python.

    python -m dist_fake_worker SPEC_JSON      (SPEC_JSON: {"mode": "ok" | "fail" | "die" | "hang"})

ok   every rank prints a line; rank 0 prints a progress record
fail rank 1 raises ValueError after a line of output (rank 0 waits to be stopped)
die  rank 1 kills itself with SIGKILL (rank 0 waits to be stopped)
hang every rank prints "ready <pid>" and sleeps until stopped
Like the real worker, it watches its parent (the torchrun agent) and reports errors one line each.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from train_pipeline.training.distributed import PROGRESS_MARK
from train_pipeline.training.worker import _emit


def run(spec: dict) -> None:
    rank = int(os.environ["RANK"])
    mode = spec["mode"]
    print(f"hello from rank {rank} of {os.environ['WORLD_SIZE']}", flush=True)
    if mode == "ok":
        if rank == 0:
            _emit(PROGRESS_MARK, {"step": 1, "total_steps": 1, "loss": 0.5, "learning_rate": 0.1, "epoch": 1.0,
                                  "eval_loss": None})
        return
    if mode == "fail" and rank == 1:
        print("reading shard 7", flush=True)
        raise ValueError("bad shard 7\nsecond line")
    if mode == "die" and rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    print(f"ready {os.getpid()}", flush=True)
    time.sleep(600)


if __name__ == "__main__":
    import train_pipeline.training.worker as worker

    worker.run = run  # main() = parent watch + one-line error report + torchrun's @record
    worker.main(sys.argv[1:])
