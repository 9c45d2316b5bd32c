"""``train-pipeline fetch``: one or more URLs to a file or a directory, verified."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "fetch", help="download URLs with resume, retries and verification",
        description="Download one or more HTTP(S) files or hf:// sources. A killed or failed run resumes where it "
                    "stopped; files appear only complete and verified. Exit 0 when every file is in place. "
                    "hf://datasets/ORG/NAME[@REV][/PATH-OR-GLOB] (a model: hf://ORG/NAME...) goes through the Hub API "
                    "(HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE), pinned to a commit, every file checked against the "
                    "Hub's sha256 or git blob sha1; with -d its files keep their repository paths.",
    )
    p.add_argument("urls", nargs="+", metavar="URL",
                   help="http:// or https:// address, or an hf:// source (several allowed with -d)")
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
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars (a result line per file stays)")
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
        hub = _hub_sources(args)
        if args.output is not None:
            from resumable.names import check_output_path

            check_output_path(args.output)  # 'dir/' would become a file named 'dir'
    except UsageError as exc:
        return _fail(str(exc))
    progress = False if args.quiet else None
    options = dict(size=args.size, hash=args.hash, connections=args.connections, retries=args.retries,
                   headers=headers, progress=progress)
    options.update({k: v for k, v in (("speed_limit", args.speed_limit), ("speed_time", args.speed_time))
                    if v is not None})
    from concurrent.futures import ThreadPoolExecutor

    def one(target: tuple[str, object]) -> str | None:
        url, dest = target
        if url in hub:
            return _one_hub(hub[url], dest, args, progress)
        try:
            if isinstance(dest, ResumableError):
                raise dest
            result = fetch(url, dest, mirrors=tuple(args.mirror), **options)
        except ResumableError as exc:
            return f"error: {exc}"
        digest = f" {result.digest}" if result.digest else ""  # the result line stays with -q (no bars)
        _say(f"{result.status:>10} {result.path}{digest}")
        return None

    if args.output is not None:
        outcomes = [one((args.urls[0], args.output))]  # in this thread: Ctrl-C stops it at once
    else:
        # Not a `with` block: on Ctrl-C it would wait for every running download to finish.
        pool = ThreadPoolExecutor(args.jobs)
        try:
            # Before any transfer: each hf:// source resolved and listed (its paths known), each URL named.
            targets = list(zip(args.urls, pool.map(
                lambda u: _plan_hub(hub[u], Path(args.dir), args) if u in hub else _name_in(Path(args.dir), u, headers),
                args.urls)))
            clash = _same_destination(targets, Path(args.dir))
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


def _hub_sources(args: argparse.Namespace) -> dict:
    """{url: HfUri} for the hf:// sources among the URLs, parsed before any network (UsageError)."""
    if not any(u[:5].lower() == "hf://" for u in args.urls):
        return {}  # plain URLs: the Hub code is not even imported (start-up time)
    from resumable.errors import UsageError
    from resumable.hub.uri import is_hf_uri, parse

    hub = {u: parse(u) for u in args.urls if is_hf_uri(u)}
    if hub and args.mirror:
        raise UsageError("--mirror: an hf:// source is fetched through the Hub API; for a Hub mirror set HF_ENDPOINT, "
                         "and remove --mirror")
    if hub and args.header:
        raise UsageError("--header: an hf:// source sends HF_TOKEN (or your saved login) to the Hub and nothing else; "
                         "remove --header")
    return hub


def _plan_hub(uri, directory: Path, args: argparse.Namespace):
    """An hf:// source resolved and listed, its destinations checked (a HubPlan), or the error."""
    from resumable import ResumableError
    from resumable.hub.sources import plan_hf

    try:
        return plan_hf(uri, directory, size=args.size, hash=args.hash)
    except ResumableError as exc:
        return exc
    except OSError as exc:
        return OSError(_local_error(exc, directory))


def _one_hub(uri, dest, args: argparse.Namespace, progress) -> str | None:
    """One hf:// source to -o FILE, or into -d DIR (``dest``: its plan, or the error making it)."""
    from resumable import ResumableError
    from resumable.hub.sources import HubPlan, fetch_hf

    if isinstance(dest, Exception):
        return f"error: {dest}"
    try:
        if isinstance(dest, HubPlan):
            r = fetch_hf(uri, plan=dest, progress=progress)
        else:
            r = fetch_hf(uri, output=dest, size=args.size, hash=args.hash, progress=progress)
    except ResumableError as exc:
        return f"error: {exc}"
    except OSError as exc:
        return f"error: {_local_error(exc, dest)}"
    for path in r.files:  # the result lines stay with -q (no bars)
        _say(f"{r.status:>10} {path} ({uri}, commit {r.commit[:12]})")
    return None


def _local_error(exc: OSError, where) -> str:
    return f"{exc.filename or where}: {exc.strerror or exc}; choose a writable destination"


def _same_destination(targets: list[tuple[str, object]], directory: Path) -> str | None:
    """Two sources that one batch would save at one path of ``directory`` (one would be reported
    with the other's bytes, or replace them): two URLs naming one file, two hf:// sources listing one
    path, a URL named like an hf:// source's path (or like a folder on its way), or a URL naming a
    file an hf:// source published there before."""
    from resumable.http import redact
    from resumable.hub.sources import HubPlan, find_clash, published_owners

    first: dict[Path, str] = {}
    owner_of = published_owners(directory)
    plans = [dest for _, dest in targets if isinstance(dest, HubPlan)]
    named: dict[str, str] = {}
    for url, dest in targets:
        if not isinstance(dest, Path):
            continue
        if dest in first:
            return (f"{redact(first[dest])} and {redact(url)} both name the file {dest.name} in {dest.parent}; "
                    "fetch one of them with -o FILE or into another -d DIR")
        first[dest] = url
        try:
            rel = dest.relative_to(directory).as_posix()
        except ValueError:
            continue
        named[rel] = redact(url)
        owner = owner_of(rel)
        if owner is not None and not any(p.key == owner for p in plans):
            return (f"{redact(url)} names {dest}, which {owner} published: a path in the folder belongs to one "
                    "source; fetch the URL with -o FILE or into another -d DIR")
    return find_clash(plans, named)


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


_SAYING = threading.Lock()


def _say(line: str) -> None:
    """One whole line on stderr: downloads finish on several threads, and a print() is two writes
    (the text, then the newline), so two at once would share a line and leave an empty one."""
    with _SAYING:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


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
