"""torch's launcher (``torch.distributed.run``, torchrun's elastic agent) that ends with its parent.

    python -m train_pipeline.training.launcher --parent-pid PID [--grace S] [--work-dir D] -- TORCHRUN_ARGS...

Started by ``distributed.run_workers`` in a process group of its own. When its parent dies (the
flow-run process killed, SIGKILL included) it sends itself SIGTERM, which torchrun's agent turns
into stopping its workers (SIGTERM, then SIGKILL); ``--grace`` seconds later it kills them and
itself outright, after removing the parent's temporary folder (``--work-dir``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m train_pipeline.training.launcher")
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--work-dir", help="the parent's temporary folder (spec, logs): removed if the parent dies")
    parser.add_argument("torchrun_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    torchrun_args = args.torchrun_args[1:] if args.torchrun_args[:1] == ["--"] else args.torchrun_args

    from train_pipeline.training.distributed import _signal_group, descendants, watch_parent

    gone = threading.Event()

    def clean() -> None:
        if gone.is_set() and args.work_dir and Path(args.work_dir).name.startswith("train-pipeline-launch-"):
            shutil.rmtree(args.work_dir, ignore_errors=True)  # no parent left to remove it

    def orphaned() -> None:
        gone.set()
        workers = descendants(os.getpid())
        os.kill(os.getpid(), signal.SIGTERM)  # torchrun: stop the workers, then exit
        time.sleep(args.grace)
        for pid in workers:
            _signal_group(pid, signal.SIGKILL)
        clean()
        os.killpg(os.getpgid(0), signal.SIGKILL)

    if os.getppid() != args.parent_pid:
        sys.exit("the process that started the launcher is gone")
    watch_parent(args.parent_pid, orphaned)

    from torch.distributed.run import main as torchrun

    try:
        torchrun(torchrun_args)
    finally:
        clean()


if __name__ == "__main__":
    main(sys.argv[1:])
