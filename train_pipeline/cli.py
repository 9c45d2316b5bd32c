"""``train-pipeline``: the command line. Only the chosen subcommand's module is imported, so
``train-pipeline fetch`` never loads Prefect, torch, transformers or the pipeline config."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# subcommand -> module with register(subparsers); each sets a handler default (run or func)
COMMANDS = {
    "fetch": "train_pipeline.fetch_cli",
    "datasets": "train_pipeline.datasets_cli",
    "model": "train_pipeline.model_cli",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="train-pipeline",
        description="Resumable, verified downloads of models and datasets, and Qwen2-VL fine-tuning.",
        epilog="The pipeline itself runs with: python flows/pipeline.py [--config FILE]",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log retries and transfers")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name in [chosen] if chosen in COMMANDS else COMMANDS:
        importlib.import_module(COMMANDS[name]).register(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(message)s")
    handler = getattr(args, "run", None) or args.func
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted: partial downloads are kept and resume on the next run", file=sys.stderr)
        sys.stderr.flush()
        sys.stdout.flush()
        # Worker threads (downloads, hashing) would keep the process alive until they finish: end it
        # now, as a kill would; every partial file and record is already on disk for the resume.
        os._exit(130)


if __name__ == "__main__":
    sys.exit(main())
