"""``train-pipeline``: the command line. Subcommands import their heavy parts lazily, so
``train-pipeline fetch`` never loads Prefect, torch or transformers."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="train-pipeline",
        description="Resumable, verified downloads of models and datasets, and Qwen2-VL fine-tuning.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log retries and transfers")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from . import fetch_cli

    fetch_cli.register(sub)
    for module in _optional_commands():
        module.register(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(message)s")
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted: partial downloads are kept and resume on the next run", file=sys.stderr)
        return 130


def _optional_commands():
    """Subcommands that other parts of the project register (skipped until they exist)."""
    import importlib

    for name in ("datasets_cli", "model_cli"):
        try:
            yield importlib.import_module(f"train_pipeline.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"train_pipeline.{name}":
                raise


if __name__ == "__main__":
    sys.exit(main())
