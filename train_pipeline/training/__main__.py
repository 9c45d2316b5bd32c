"""Command line for the training step (the Prefect task calls ``finetune.train`` directly).

    python -m train_pipeline.training train MODEL_DIR DATA_DIR [DATA_DIR ...] OUTPUT_DIR [--config FILE] [--set KEY=VALUE ...]

Each DATA_DIR is a dataset folder (any format training reads), named after the folder, or
``NAME=PATH`` to give it the name the config's ``datasets:`` (weights, fields) refers to.

``--config`` reads a YAML/JSON mapping (a ``train:`` section is used if present); ``--set``
overrides one setting, its value parsed as YAML (``--set max_steps=20 --set lora.r=8``).
Exit status: 0 done, 2 bad input, 1 a worker of a distributed training failed (one line on stderr).

``distributed:`` settings (``--set distributed.nproc_per_node=2``) train on several processes
through torchrun; on machine N > 0 of a multi-node training the same command with
``--set distributed.node_rank=N`` starts that machine's workers (node 0 writes the output).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from train_pipeline.training.settings import TrainConfigError, parse_train_config


def _load_mapping(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise TrainConfigError(f"{path}: cannot read the config ({type(exc).__name__}): fix the path or its YAML") from None
    if not isinstance(data, dict):
        raise TrainConfigError(f"{path}: the config must be a mapping of settings")
    return dict(data.get("train", data))


def _apply_override(data: dict[str, Any], item: str) -> None:
    import yaml

    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise TrainConfigError(f"--set {item!r}: write KEY=VALUE, e.g. --set max_steps=20")
    *parents, leaf = key.split(".")
    node = data
    for name in parents:
        if not isinstance(node.get(name), dict):
            node[name] = {}
        node = node[name]
    node[leaf] = yaml.safe_load(raw)


def _train(args: argparse.Namespace) -> int:
    from train_pipeline.training.finetune import train

    data = _load_mapping(Path(args.config)) if args.config else {}
    for item in args.set:
        _apply_override(data, item)
    config = parse_train_config(data, source=args.config or "--set")
    if config.distributed.node_rank > 0:  # another machine of a multi-node training: node 0 writes the output
        from train_pipeline.training.finetune import join_training

        join_training(args.model_dir, args.data_dirs, args.output_dir, config, log=_print_line)
        print(f"node {config.distributed.node_rank}: workers finished", file=sys.stderr)
        return 0
    result = train(args.model_dir, args.data_dirs, args.output_dir, config, progress=_print_progress, log=_print_line)
    print(json.dumps(result.to_json(), indent=2))
    return 0


def _print_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _print_progress(p: Any) -> None:
    if p.eval_loss is not None:
        print(f"step {p.step}/{p.total_steps} eval_loss {p.eval_loss:.4f}", file=sys.stderr, flush=True)
        return
    print(f"step {p.step}/{p.total_steps} loss {p.loss:.4f} lr {p.learning_rate:.3g}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train_pipeline.training", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="fine-tune (resumes from OUTPUT_DIR's checkpoints)")
    p.add_argument("model_dir")
    p.add_argument("data_dirs", nargs="+", metavar="DATA_DIR", help="a dataset folder, or NAME=PATH")
    p.add_argument("output_dir")
    p.add_argument("--config", help="YAML/JSON file with the training settings")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from resumable.errors import ResumableError
    from train_pipeline.training.formats import DataError
    from train_pipeline.training.final import FinalFolderError
    from train_pipeline.training.distributed import WorkerFailed
    from train_pipeline.training.finetune import TrainSetupError

    try:
        return _train(args)
    except (TrainConfigError, DataError, TrainSetupError, FinalFolderError, ResumableError) as exc:  # final/ in the way
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WorkerFailed as exc:  # a worker process of a distributed training failed (its log is above)
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
