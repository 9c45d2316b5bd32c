"""The command line of bench/run.py: options, and the scenarios, file size and runs they select."""

from __future__ import annotations

import argparse

from bench.harness.units import parse_size


def parse_args(doc: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="256 MiB, 3 runs, fewer kills, curl skipped in scenario 2")
    ap.add_argument("--scenarios", default="1,2,3,4,5,6,7,8,9", help="comma-separated list (default all: 1-9)")
    ap.add_argument("--size", help="size of the big file (default 2G; --quick: 256M)")
    ap.add_argument("--runs", type=int, help="runs per contender (default 5; --quick: 3)")
    ap.add_argument("--markdown", action="store_true", help="only print bench/out/results.json as Markdown")
    return ap.parse_args()


def plan(args: argparse.Namespace) -> tuple[set[int], int, int]:
    """(scenario numbers, big file size in bytes, runs per contender)."""
    wanted = {int(x) for x in args.scenarios.split(",") if x.strip()}
    size = parse_size(args.size or ("256M" if args.quick else "2G"))
    runs = args.runs or (3 if args.quick else 5)
    return wanted, size, runs
