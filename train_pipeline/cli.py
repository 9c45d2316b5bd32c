"""``train-pipeline``: the command line. Only the chosen subcommand's module is imported (none for
``train-pipeline --help``), so ``train-pipeline fetch`` never loads Prefect, torch, transformers
or the pipeline config. ``-v`` is accepted before or after the subcommand."""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import sys
import warnings

# subcommand -> (module with register(subparsers), its one-line help); each module sets a
# handler default (run or func). The help here is what `train-pipeline --help` lists without
# importing the modules; tests/engine/test_cli_consistency.py keeps it equal to each module's.
COMMANDS = {
    "fetch": ("train_pipeline.fetch_cli", "download URLs with resume, retries and verification"),
    "datasets": ("train_pipeline.datasets_cli", "list and download registry datasets"),
    "model": ("train_pipeline.model_cli", "Hugging Face Hub model snapshots"),
}
VERBOSE_HELP = "log retries and transfers"
# Imported by the engine's libraries for features a command never uses: tenacity's tornado
# support, requests' charset guessing (the engine decodes no body by guessing its encoding).
# Together ~70 ms of a fetch's ~0.3 s start-up (bench scenario 8), so commands import the
# libraries without them (see lean_imports).
UNUSED_OPTIONAL_IMPORTS = ("tornado", "charset_normalizer", "chardet")


def build_parser(chosen: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train-pipeline",
        description="Resumable, verified downloads of models and datasets, and Qwen2-VL fine-tuning.",
        epilog="The pipeline itself runs with: python flows/pipeline.py [--config FILE]",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if name == chosen:
            importlib.import_module(module).register(sub)
        else:  # listed by --help and by "invalid choice" errors, never imported
            sub.add_parser(name, help=help_text, add_help=False)
    _verbose_everywhere(parser)
    return parser


def _verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    """``-v`` after the subcommand too (``train-pipeline fetch -v URL``), at every level; given
    nowhere, the top level's default (off) stands."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for child in action.choices.values():
            if "-v" not in child._option_string_actions and child.add_help:
                child.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                   help=VERBOSE_HELP)
            _verbose_everywhere(child)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(chosen if chosen in COMMANDS else None).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(message)s")
    handler = getattr(args, "run", None) or args.func
    lean_imports()
    # What the imports made lives as long as the command: no collection need scan it again. A
    # batch of small files allocates enough to run full collections often (~7% of its CPU).
    gc.freeze()
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        print(interrupted_message(), file=sys.stderr)
        sys.stderr.flush()
        sys.stdout.flush()
        # Worker threads (downloads, hashing) would keep the process alive until they finish: end it
        # now, as a kill would; every partial file and record is already on disk for the resume.
        os._exit(130)


def lean_imports() -> None:
    """Import requests and tenacity as if UNUSED_OPTIONAL_IMPORTS were not installed; a later
    ``import tornado`` (or charset_normalizer) in this process works as usual."""
    blocked = [name for name in UNUSED_OPTIONAL_IMPORTS if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # makes ``import name`` raise ImportError
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Unable to find acceptable character detection")
            import requests  # noqa: F401
            import tenacity  # noqa: F401
    finally:
        for name in blocked:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


def interrupted_message() -> str:
    """What Ctrl-C leaves: partial downloads resume on the next run, except from servers that
    serve no byte ranges (the engine saw them answer; their files start over)."""
    attempt = sys.modules.get("resumable.attempt")
    without = attempt.servers_without_ranges() if attempt is not None else []
    text = "interrupted: partial downloads are kept and resume on the next run"
    if without:
        text += (f", except from {', '.join(without)}, which serves no byte ranges: "
                 "those downloads start over from byte 0")
    return text


if __name__ == "__main__":
    sys.exit(main())
