"""One training process of a distributed run, started by torchrun (see distributed.py).

    python -m torch.distributed.run ... -m train_pipeline.training.worker SPEC_JSON

The spec names the model, datasets, output folder, settings, and (node 0's) checkpoint to resume
from. Every rank reads the same rows in the same order and trains through the same
``finetune.train_session`` as one process; Trainer's distributed sampler gives rank r the r-th
slice of each global batch. Node 0's first process tells all ranks what to resume from and the
fingerprint of its data and model: a node that reads other data or another model stops at once.

Prints ``@@train-progress {json}`` per logged step (node 0's first process only) and, on failure,
``@@train-error {"rank", "error"}`` (one line) before exiting non-zero; torchrun's ``@record``
also writes the traceback to its error file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from torch.distributed.elastic.multiprocessing.errors import record

from train_pipeline.training.distributed import ERROR_MARK, PROGRESS_MARK, watch_parent


def _emit(mark: str, payload: dict[str, Any]) -> None:
    sys.stdout.write(mark + json.dumps(payload) + "\n")
    sys.stdout.flush()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".rstrip(": ")


def run(spec: dict[str, Any]) -> None:
    import torch
    import torch.distributed as dist

    from train_pipeline.training.dataset import DatasetSource, load_run_data
    from train_pipeline.training.distributed import backend
    from train_pipeline.training.finetune import _check_length_budget, run_fingerprint, train_session, SESSION_NAME
    from train_pipeline.training.processor import load_processor
    from train_pipeline.training.settings import TrainConfig
    from resumable.state import write_json

    config = TrainConfig.model_validate(spec["config"])
    rank, local_rank, world = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend(config.distributed))  # Trainer (accelerate) uses this group

    model_dir, out = Path(spec["model_dir"]), Path(spec["output_dir"])
    sources = [DatasetSource(s["name"], tuple(Path(f) for f in s["folders"])) for s in spec["sources"]]
    data = load_run_data(sources, config)
    run = run_fingerprint(model_dir, config, data, world)

    # Node 0's first process decides (its parent prepared the output folder); the rendezvous may give
    # global rank 0 to any node, so find that process by node and local rank.
    mine = {"node": config.distributed.node_rank, "local": local_rank, "rank": rank, "run": run,
            "resume_from": spec.get("resume_from")}
    everyone: list[Any] = [None] * world
    dist.all_gather_object(everyone, mine)
    lead = next(p for p in everyone if p["node"] == 0 and p["local"] == 0)
    for part in ("config", "model", "data"):
        if run[part] != lead["run"][part]:
            raise SystemExit(f"node {config.distributed.node_rank} (rank {rank}) has other {part} than node 0: give "
                             f"every node the same {'settings' if part == 'config' else part + ' files'}")
    resume_from = Path(lead["resume_from"]) if lead["resume_from"] else None

    processor = load_processor(model_dir, min_pixels=config.min_pixels, max_pixels=config.max_pixels)
    _check_length_budget(processor, config, data)
    reporter = rank == lead["rank"]

    def progress(p: Any) -> None:
        _emit(PROGRESS_MARK, dataclasses.asdict(p))

    session = train_session(model_dir, out, config, data, resume_from, processor, progress if reporter else None, (),
                            world=world)
    if rank == 0:  # final/ was written by rank 0: so is the session record node 0's parent reads
        write_json(out / SESSION_NAME, session)
    dist.barrier()  # node 0's processes exit only once it is there, wherever rank 0 runs
    dist.destroy_process_group()


@record
def main(argv: list[str]) -> None:
    # torchrun's agent is our parent; if it is killed outright, nothing else stops us.
    watch_parent(os.getppid(), lambda: os.kill(os.getpid(), signal.SIGKILL))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        run(json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    except BaseException as exc:
        if not (isinstance(exc, SystemExit) and exc.code in (0, None)):
            message = exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, str) else _one_line(exc)
            _emit(ERROR_MARK, {"rank": int(os.environ.get("RANK", -1)), "error": message})
        raise


if __name__ == "__main__":
    main(sys.argv[1:])
