"""torch's launcher (``torch.distributed.run``, torchrun's elastic agent) that ends with its parent.

    python -m train_pipeline.training.launcher --parent-pid PID [--grace S] -- TORCHRUN_ARGS...

Started by ``distributed.run_workers`` in a process group of its own. When its parent dies (the
flow-run process killed, SIGKILL included) it sends itself SIGTERM, which torchrun's agent turns
into stopping its workers (SIGTERM, then SIGKILL); ``--grace`` seconds later it kills them and
itself outright.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m train_pipeline.training.launcher")
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("torchrun_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    torchrun_args = args.torchrun_args[1:] if args.torchrun_args[:1] == ["--"] else args.torchrun_args

    from train_pipeline.training.distributed import _signal_group, descendants, watch_parent

    def orphaned() -> None:
        workers = descendants(os.getpid())
        os.kill(os.getpid(), signal.SIGTERM)  # torchrun: stop the workers, then exit
        time.sleep(args.grace)
        for pid in workers:
            _signal_group(pid, signal.SIGKILL)
        os.killpg(os.getpgid(0), signal.SIGKILL)

    if os.getppid() != args.parent_pid:
        sys.exit("the process that started the launcher is gone")
    watch_parent(args.parent_pid, orphaned)

    from torch.distributed.run import main as torchrun

    torchrun(torchrun_args)


if __name__ == "__main__":
    main(sys.argv[1:])
