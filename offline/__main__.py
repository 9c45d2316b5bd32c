"""Build the offline stand-ins on disk (for trying training without a download):

    python -m offline tiny-model DEST [--seed N]          # a tiny random Qwen2-VL
    python -m offline sample-data DEST [--images N] [--seed N]   # synthetic billboards + metadata.jsonl
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offline", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("tiny-model", help="write a tiny random Qwen2-VL")
    p.add_argument("dest")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("sample-data", help="write synthetic billboard images + metadata.jsonl")
    p.add_argument("dest")
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "tiny-model":
        from offline.tiny_model import build_tiny_qwen2vl

        print(build_tiny_qwen2vl(args.dest, seed=args.seed))
    else:
        from offline.sample_data import build_sample_dataset

        print(build_sample_dataset(args.dest, n_images=args.images, seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
