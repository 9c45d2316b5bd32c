"""``train-pipeline model download REPO``: a Hub snapshot, resumable after a kill, every file verified."""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    model = sub.add_parser("model", help="Hugging Face Hub model snapshots",
                           description="Hugging Face Hub model snapshots.")
    actions = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    p = actions.add_parser(
        "download", help="download a model snapshot (resumes after a kill, verifies every file)",
        description="Download REPO at a revision into DEST/<org>--<name>/<commit>/, a folder that "
                    "from_pretrained() loads. A killed run resumes where it stopped; a finished one is "
                    "reused with one metadata request (none for a commit sha, none with --offline). "
                    "Prints the snapshot folder on stdout.",
    )
    p.add_argument("repo", metavar="REPO", help="repository id, e.g. Qwen/Qwen2-VL-2B-Instruct")
    p.add_argument("--revision", default="main", metavar="R", help="branch, tag or commit sha (default main)")
    p.add_argument("--include", action="append", metavar="GLOB",
                   help="only files matching GLOB (repeatable), e.g. '*.json' or 'model-*.safetensors'")
    p.add_argument("--exclude", action="append", metavar="GLOB", help="skip files matching GLOB (repeatable)")
    p.add_argument("--dest", default="./models_cache", metavar="DIR", help="cache folder (default ./models_cache)")
    p.add_argument("--endpoint", metavar="URL", help="Hub address (default HF_ENDPOINT or https://huggingface.co)")
    p.add_argument("--token", metavar="T", help="access token for gated/private repos (default HF_TOKEN or login)")
    p.add_argument("--offline", action="store_true", default=None,
                   help="no network: use the local snapshot only (also HF_HUB_OFFLINE=1)")
    p.add_argument("--workers", type=int, default=4, metavar="N", help="files downloaded at once (default 4)")
    p.add_argument("--repo-type", choices=("model", "dataset"), default="model", help=argparse.SUPPRESS)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _bad_input(args: argparse.Namespace) -> str | None:
    """One line naming the input and the fix, for what the snapshot cannot check itself."""
    import os

    from resumable.errors import UsageError
    from resumable.hub.snapshots import check_endpoint
    from train_pipeline.config import check_path

    try:
        check_path(args.dest)
    except ValueError as exc:
        return f"--dest: {exc}"
    if args.endpoint is None and os.environ.get("HF_ENDPOINT"):
        try:
            check_endpoint(os.environ["HF_ENDPOINT"])
        except UsageError as exc:
            return f"HF_ENDPOINT: {exc}; fix or unset the variable"
    from resumable.hub.api import token_problem

    for option, token in (("--token", args.token), ("HF_TOKEN", None if args.token else os.environ.get("HF_TOKEN"))):
        why = token_problem(token)  # the engine's own rule (every hf:// path checks it)
        if why:
            return f"{option}: {why}"
    return None


def run(args: argparse.Namespace) -> int:
    from resumable.errors import ResumableError
    from resumable.hub import snapshot

    bad = _bad_input(args)
    if bad:
        print(f"error: {bad}", file=sys.stderr)
        return 2
    try:
        result = snapshot(args.repo, revision=args.revision, dest_root=args.dest, include=args.include,
                          exclude=args.exclude, endpoint=args.endpoint, token=args.token, offline=args.offline,
                          max_workers=args.workers, repo_type=args.repo_type,
                          progress=False if args.quiet else None)
    except ResumableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1
    except OSError as exc:  # e.g. DEST not writable
        print(f"error: {exc.filename or args.dest}: {exc.strerror or exc}; choose a writable --dest", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"{result.status}: {args.repo}@{result.revision} ({result.commit[:12]}), {result.files} files, "
              f"{result.bytes_transferred} of {result.bytes_total} bytes transferred", file=sys.stderr)
    print(result.path)
    return 0
