"""``train-pipeline fetch``: one or more URLs to a file or a directory, verified."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "fetch", help="download URLs with resume, retries and verification",
        description="Download one or more HTTP(S) files. A killed or failed run resumes where it stopped; "
                    "files appear only complete and verified. Exit 0 when every file is in place.",
    )
    p.add_argument("urls", nargs="+", metavar="URL", help="http:// or https:// address (several allowed with -d)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--output", metavar="FILE", help="destination file (one URL only)")
    where.add_argument("-d", "--dir", metavar="DIR",
                       help="destination directory; names come from Content-Disposition or the URL")
    p.add_argument("--hash", metavar="ALG:HEX", help="expected hash: sha256:HEX, md5:HEX, sha1:HEX, sha512:HEX "
                   "or bare hex (algorithm from its length)")
    p.add_argument("--size", type=_size, metavar="N", help="expected size in bytes")
    p.add_argument("--mirror", action="append", default=[], metavar="URL",
                   help="another source of the same file, tried in order if the first fails (-o only)")
    p.add_argument("--connections", type=_connections, default="auto", metavar="N|auto",
                   help="connections per file: auto (default) starts with one and adds more, up to 8, while they "
                        "raise the speed (servers that cap each connection); N forces N")
    p.add_argument("--retries", type=_non_negative, default=5, metavar="N",
                   help="retries in a row without progress before giving up (default 5)")
    p.add_argument("--jobs", type=_positive, default=4, metavar="N", help="files fetched at once with -d (default 4)")
    p.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="extra request header, e.g. 'Authorization: Bearer TOKEN' (never sent to another host)")
    p.add_argument("--speed-limit", type=_size, default=None, metavar="BYTES",
                   help="a body slower than this many bytes/s for --speed-time seconds is a stall: reconnect "
                        "and resume (default 1024; 0 turns the rule off)")
    p.add_argument("--speed-time", type=_positive, default=None, metavar="SECONDS",
                   help="the window of --speed-limit (default 30)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from resumable import ResumableError, fetch
    from resumable.errors import UsageError

    if args.output is not None and len(args.urls) > 1:
        return _fail("-o FILE takes one URL; use -d DIR for several")
    if (args.hash or args.size is not None or args.mirror) and len(args.urls) > 1:
        return _fail("--hash, --size and --mirror describe one file; fetch several files one by one or with a "
                     "dataset registry entry")
    try:
        headers = _headers(args.header)
    except UsageError as exc:
        return _fail(str(exc))
    progress = False if args.quiet else None
    options = dict(size=args.size, hash=args.hash, connections=args.connections, retries=args.retries,
                   headers=headers, progress=progress)
    options.update({k: v for k, v in (("speed_limit", args.speed_limit), ("speed_time", args.speed_time))
                    if v is not None})
    from concurrent.futures import ThreadPoolExecutor

    def one(target: tuple[str, Path | ResumableError]) -> str | None:
        url, dest = target
        try:
            if isinstance(dest, ResumableError):
                raise dest
            result = fetch(url, dest, mirrors=tuple(args.mirror), **options)
        except ResumableError as exc:
            return f"error: {exc}"
        if not args.quiet:
            digest = f" {result.digest}" if result.digest else ""
            print(f"{result.status:>10} {result.path}{digest}", file=sys.stderr)
        return None

    if args.output is not None:
        outcomes = [one((args.urls[0], args.output))]  # in this thread: Ctrl-C stops it at once
    else:
        # Not a `with` block: on Ctrl-C it would wait for every running download to finish.
        pool = ThreadPoolExecutor(args.jobs)
        try:
            targets = list(zip(args.urls, pool.map(lambda u: _name_in(Path(args.dir), u, headers), args.urls)))
            clash = _same_destination(targets)
            if clash:
                return _fail(clash)
            outcomes = list(pool.map(one, targets))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    failed = 0
    for message in outcomes:
        if message:
            failed += 1
            print(message, file=sys.stderr)
    return 1 if failed else 0


def _same_destination(targets: list[tuple[str, object]]) -> str | None:
    """Two URLs that one batch would save under one name: one would be reported with the other's bytes."""
    from resumable.http import redact

    first: dict[Path, str] = {}
    for url, dest in targets:
        if not isinstance(dest, Path):
            continue
        if dest in first:
            return (f"{redact(first[dest])} and {redact(url)} both name the file {dest.name} in {dest.parent}; "
                    "fetch one of them with -o FILE or into another -d DIR")
        first[dest] = url
    return None


def _name_in(directory: Path, url: str, headers: dict):
    """The destination for ``url`` in ``directory``: Content-Disposition's name, else the URL's (or
    the error saying why there is none)."""
    from resumable import http
    from resumable.names import destination_in, name_from_disposition

    from resumable.errors import ResumableError

    name = None
    try:
        with http.request(http.new_session(1), "HEAD", http.check_url(url), headers, (10, 30)) as resp:
            if resp.status_code < 400:
                name = name_from_disposition(resp.headers.get("Content-Disposition"))
                url = getattr(resp, "final_url", url) if not name else url
    except ResumableError:  # naming is best effort; the fetch reports the real error
        pass
    try:
        return destination_in(directory, name, url)
    except ResumableError as exc:
        return exc


def _headers(values: list[str]) -> dict:
    from resumable.errors import UsageError

    headers = {}
    for value in values:
        name, sep, content = value.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header {value.split(':')[0]!r}: write it as 'NAME: VALUE'")
        headers[name.strip()] = content.strip()
    return headers


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a size is >= 0 bytes")
    return value


def _positive(text: str) -> int:
    value = _size(text)
    if value < 1:
        raise argparse.ArgumentTypeError("use 1 or more")
    return value


def _connections(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of connections (1 or more), or auto")
    return value


def _non_negative(text: str) -> int:
    return _size(text)
