"""The chaos campaign (never part of the test suite: hours, not minutes):

    python -m chaos run --trials 100 [--variant sample|large] [--first-seed 1] [--work chaos-work]
    python -m chaos run --seed 37                 # replay one trial from its seed
    python -m chaos table chaos-work/results-sample.jsonl   # the README's table and totals
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
from pathlib import Path

VARIANTS = ("sample", "large")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run trials (each: random kills and network faults, then a comparison)")
    run.add_argument("--variant", choices=VARIANTS, default="sample",
                     help="sample: the offline sample with training; large: download only, plus a file over 1 GiB "
                          "with 4 connections")
    seeds = run.add_mutually_exclusive_group()
    seeds.add_argument("--trials", type=int, default=10, help="how many trials (seeds first-seed, first-seed+1, ...)")
    seeds.add_argument("--seed", type=int, help="run only this seed's trial (a replay)")
    run.add_argument("--first-seed", type=int, default=1)
    run.add_argument("--work", type=Path, default=Path("chaos-work"), help="builds, servers' files, trials, results")
    run.add_argument("--keep", action="store_true", help="keep the folders of trials that passed too")
    run.add_argument("--reference-s", type=float, metavar="SECONDS",
                     help="draw the kill times over this reference length instead of the one measured now: give a "
                          "record's reference_s to replay its kills at the same seconds")
    table = sub.add_parser("table", help="a Markdown table and totals of a results file")
    table.add_argument("results", type=Path)
    args = parser.parse_args(argv)

    if args.command == "table":
        try:
            records = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
        except (OSError, ValueError) as e:
            print(f"error: {args.results}: {e}; give a results file that `python -m chaos run` wrote", file=sys.stderr)
            return 2
        print(render(records))
        return 0

    from chaos.campaign import run_campaign

    # A TERM (kill, a CI's cancel) unwinds like Ctrl-C: the campaign's Prefect server and the
    # trial's flow are stopped on the way out instead of left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.trials < 1:
        parser.error("--trials: give 1 or more")
    seeds = [args.seed] if args.seed is not None else list(range(args.first_seed, args.first_seed + args.trials))
    work = args.work.resolve()
    out = work / f"results-{args.variant}.jsonl"
    if args.reference_s is not None and not args.reference_s > 0:
        parser.error("--reference-s: give the seconds of a reference run (a record's reference_s)")
    records = run_campaign(work, out, args.variant, seeds, keep=args.keep, reference_s=args.reference_s)
    print(render(records))
    print(f"results: {out}")
    return 0 if all(r["identical"] and not r["leftovers"] for r in records) else 1


def render(records: list[dict]) -> str:
    """One row per trial, then the totals."""
    lines = ["| seed | variant | plan | kills landed | attempts | last attempt: ran / Cached | outcome | bytes re-sent | wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        outcome = ("identical" if r["identical"] else "DIFFERENT") if r["completed"] else "NOT COMPLETED"
        if r["leftovers"]:
            outcome += f", leftovers: {', '.join(r['leftovers'])}"
        last = r.get("last_attempt", {})
        lines.append(f"| {r['seed']} | {r['variant']} | {r['plan']} | {r['kills']} | {len(r['attempts'])} | "
                     f"{last.get('Completed', 0)} / {last.get('Cached', 0)} | {outcome} | "
                     f"{r['bytes_resent']:,} | {r['wall_s']} |")
    per_kill = [r["bytes_resent_per_kill"] for r in records if r["bytes_resent_per_kill"] is not None]
    walls = [r["wall_per_kill_s"] for r in records if r["wall_per_kill_s"] is not None]
    n = len(records)
    lines += ["", f"trials {n}; completed {sum(r['completed'] for r in records)}/{n}; "
                  f"identical {sum(r['identical'] for r in records)}/{n}; kills landed {sum(r['kills'] for r in records)} "
                  f"of {sum(r.get('kills_planned', r['kills']) for r in records)} planned; "
                  f"bytes re-sent per kill: mean {statistics.fmean(per_kill) if per_kill else 0:,.0f}, "
                  f"max {max(per_kill, default=0):,.0f}; wall per kill: mean "
                  f"{statistics.fmean(walls) if walls else 0:.1f} s; "
                  f"trials with leftovers {sum(bool(r['leftovers']) for r in records)}"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
