"""``train-pipeline datasets``: list the registry, download a dataset (resumable, verified, extracted).

    train-pipeline datasets list
    train-pipeline datasets download outdoor_advertising --data-dir ./data
    train-pipeline datasets download custom --urls https://host/a.zip https://host/b.tar.gz
    train-pipeline datasets download signs --urls 'hf://datasets/ORG/NAME@REV/data/train-*.parquet'
    train-pipeline datasets download outdoor_advertising --no-extract

The guide's ``download_datasets.py`` spellings work too: ``--list``, ``--dataset NAME``.
Runs the engine directly (no Prefect server): the files land where the flow expects them
(``<data-dir>/downloads/<name>/``, extracted to ``<data-dir>/<extract_to>/``), so a later pipeline
run finds them verified and transfers nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _imports() -> None:
    """The commands' imports (the config schema, the engine): done when a command runs, not for
    ``train-pipeline datasets --help``, which then answers in about a tenth of a second."""
    global report, MAX_CONNECTIONS, MAX_RETRIES, ConfigError, DatasetSpec, check_dataset_name, check_path, human_size
    global Location, check_layout, check_overlaps, dataset_locations, real_path, CUSTOM, custom_dataset, download_path
    global extract_target, extract_unwrap, get_dataset, load_registry, missing_source, registry_path
    from train_pipeline import report
    from train_pipeline.config import (
        MAX_CONNECTIONS,
        MAX_RETRIES,
        ConfigError,
        DatasetSpec,
        check_dataset_name,
        check_path,
    )
    from resumable.progress import human_size
    from train_pipeline.config.locations import Location, check_layout, check_overlaps, dataset_locations, real_path
    from train_pipeline.config.registry import (
        CUSTOM,
        custom_dataset,
        download_path,
        extract_target,
        extract_unwrap,
        get_dataset,
        load_registry,
        missing_source,
        registry_path,
    )


BATCH_JOBS = 8  # files at once at most, shared with the batch's helper processes (each ramps up to its share: ramp.WorkerRamp)


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``datasets`` to the ``train-pipeline`` command's subparsers."""
    p = subparsers.add_parser("datasets", help="list and download registry datasets",
                              description="List the dataset registry; download a dataset (resumable, verified, "
                                          "extracted) into <data-dir>/downloads/<name>/ and <data-dir>/<extract_to>/.")
    _add_common(p)
    p.add_argument("--list", action="store_true", help="list the registry's datasets (same as 'datasets list')")
    p.add_argument("--dataset", metavar="NAME", help="download this dataset (same as 'datasets download NAME')")
    _add_download_options(p)
    sub = p.add_subparsers(dest="datasets_command", metavar="{list,download}")
    lp = sub.add_parser("list", help="list the registry's datasets")
    _add_common(lp, default=argparse.SUPPRESS)
    dp = sub.add_parser("download", help="download (resume, verify) and extract one dataset")
    dp.add_argument("name", metavar="NAME", help="dataset name from the registry ('custom' takes --urls)")
    _add_common(dp, default=argparse.SUPPRESS)
    _add_download_options(dp, default=argparse.SUPPRESS)
    p.set_defaults(func=run)
    return p


def _add_common(p: argparse.ArgumentParser, default=None) -> None:
    p.add_argument("--registry", metavar="FILE", default=default,
                   help="dataset registry YAML (default: $TRAIN_PIPELINE_REGISTRY or configs/datasets.yaml)")


def _add_download_options(p: argparse.ArgumentParser, default=None) -> None:
    d = (lambda v: v) if default is None else (lambda v: default)
    p.add_argument("--data-dir", metavar="DIR", default=d("./data"), help="where datasets go (default ./data)")
    p.add_argument("--urls", metavar="URL", nargs="+", default=d(None),
                   help="the files of a 'custom' dataset (or replace a dataset's files); several download as a batch")
    p.add_argument("--no-extract", action="store_true", default=d(False), help="keep archives as downloaded")
    p.add_argument("--connections", type=_connections, default=d("auto"), metavar="N|auto",
                   help="HTTP connections per large file: auto (default) adds connections while they raise the "
                        "speed; N forces N")
    p.add_argument("--retries", type=int, default=d(5), metavar="N",
                   help="retries per source after a transient failure, with exponential backoff (default 5)")
    p.add_argument("-q", "--quiet", action="store_true", default=d(False), help="no progress bars")


def run(args: argparse.Namespace) -> int:
    urls = getattr(args, "urls", None)
    if urls:  # a long batch's helper processes start beside this one's imports and checks (~0.3 s each)
        from resumable.batch import prestart_helpers

        prestart_helpers(sum(not url.startswith("hf://") for url in urls))
    _imports()
    try:
        command = getattr(args, "datasets_command", None)
        if args.registry is not None:
            _check_option("--registry", args.registry)
        if command == "list" or (command is None and args.list):
            return list_datasets(args.registry)
        name = getattr(args, "name", None) if command == "download" else args.dataset
        if not name:
            print("error: datasets: say what to do: 'datasets list' or 'datasets download NAME' "
                  "(or --list / --dataset NAME)", file=sys.stderr)
            return 2
        return download(name, registry=args.registry, data_dir=args.data_dir, urls=args.urls,
                        extract=not args.no_extract, connections=args.connections, retries=args.retries,
                        quiet=args.quiet)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the engine's own errors are reported per file; this is the local disk
        where = exc.filename or getattr(args, "data_dir", None) or "."
        print(f"error: {where}: {exc.strerror or exc}; check that --data-dir is a writable folder with space left",
              file=sys.stderr)
        return 1


def list_datasets(registry: str | None = None) -> int:
    _imports()
    entries = load_registry(registry)
    width = max((len(n) for n in entries), default=4)
    print(f"Datasets in {registry_path(registry)}:")
    for name, spec in entries.items():
        # an entry without files is one the user fills in: say what to set, and where
        files = (f"{len(spec.files)} file(s)" if spec.files else "files from --urls" if name == CUSTOM
                 else missing_source(name, registry_path(registry)))
        print(f"  {name.ljust(width)}  {spec.description or '-'} [{files}]")
    return 0


def resolve(name: str, registry: str | None, urls: list[str] | None) -> DatasetSpec:
    entries = load_registry(registry)
    if urls:
        if name not in entries:  # a new dataset named on the command line: its folder is <data-dir>/downloads/NAME
            try:
                check_dataset_name(name)
            except ConfigError as exc:
                raise ConfigError(f"datasets download NAME: {exc}") from None
        return custom_dataset(urls, base=entries.get(name), name=name)
    if name == CUSTOM and name not in entries:
        raise ConfigError("datasets download custom: give the files with --urls URL [URL ...]")
    return get_dataset(name, entries, source="datasets download")


def download(name: str, *, registry: str | None = None, data_dir: str = "./data", urls: list[str] | None = None,
             extract: bool = True, connections: int | str = "auto", retries: int = 5, quiet: bool = False) -> int:
    _imports()
    import resumable
    from resumable.errors import ResumableError

    if connections != "auto" and not (type(connections) is int and 1 <= connections <= MAX_CONNECTIONS):
        raise ConfigError(f"--connections {connections}: use 1 to {MAX_CONNECTIONS}, or auto")
    if not 0 <= retries <= MAX_RETRIES:
        raise ConfigError(f"--retries {retries}: use 0 to {MAX_RETRIES}")
    _check_option("--data-dir", data_dir)
    spec = resolve(name, registry, urls)
    source = "--urls" if urls else f"{registry_path(registry)}: {name}"
    check_layout(None, [spec], source=source)
    data = Path(data_dir).expanduser().resolve()
    _check_folders(data, data_dir, spec, registry)
    _prepare(data, data_dir, spec)
    progress = False if quiet else None
    hub = [f for f in spec.files if f.is_hub]  # hf:// sources: through the Hub API, into the same folder
    items = [resumable.FetchItem(f.url, download_path(data, spec, f), f.size, f.hash, tuple(f.mirrors))
             for f in spec.files if not f.is_hub]
    # Before any transfer: each hf:// source resolved and listed, and every path of the folder given
    # to one source (two hf:// sources, or an hf:// path and a URL's file name, never share one).
    from resumable.hub.sources import ForeignPathError

    plans = _plan_hub(hub, data / "downloads" / spec.name, items)
    in_the_way = next((p for p in plans if isinstance(p, ForeignPathError)), None)
    clash = str(in_the_way) if in_the_way else _clash(plans, items, data / "downloads" / spec.name)
    if clash:  # a file in the way says its own fix; two sources of one path: the entry (or --urls) to fix
        print(f"error: {clash}" + ("" if in_the_way and "belongs to one source" not in clash
                                   else f"; {_where(name, urls, registry)}"), file=sys.stderr)
        return 1
    if not items:
        results = []
    elif len(items) == 1:
        try:
            results = [resumable.fetch(items[0].url, items[0].dest, size=items[0].size, hash=items[0].hash,
                                       mirrors=items[0].mirrors, connections=connections, retries=retries,
                                       progress=progress)]
        except ResumableError as exc:
            results = [exc]
    else:  # a batch: bounded concurrency over one connection pool
        results = resumable.fetch_many(items, jobs=min(BATCH_JOBS, len(items)), progress=progress,
                                       connections=connections, retries=retries)
    rows, failures = [], []
    for item, r in zip(items, results):
        if isinstance(r, Exception):
            failures.append(f"{Path(item.dest).name}: {r}")
            rows.append(report.file_row(str(item.dest), item.url, item.size or -1, "failed", 0, 0.0, None))
        else:
            rows.append(report.file_row(str(r.path), r.url, r.size, r.status, r.bytes_transferred, r.seconds, r.digest))
    hub_results = _fetch_hub(hub, plans, progress)
    for f, r in zip(hub, hub_results):
        rows.append(report.hub_row(f.url, f.endpoint, None if isinstance(r, Exception) else r))
        if isinstance(r, Exception):
            failures.append(str(r))  # it names the source, and its own fix
    print(report.render(rows))
    if failures:
        n_files = len(items) + len(hub)
        http_errors = [r for r in results if isinstance(r, Exception)]
        errors = [r for r in [*http_errors, *hub_results] if isinstance(r, Exception)]
        again = [getattr(r, "transient", False) for r in errors]
        if all(again):  # a re-run can fix every failure
            fix = "; run the same command again to resume"
        else:  # hf:// failures say what to do themselves (a token, a name, a revision)
            settled = any(not getattr(r, "transient", False) for r in http_errors)
            fix = f"; {_where(name, urls, registry)}" if settled else ""
            fix += "; then run the same command again to resume the others" if any(again) else ""
        print(f"error: {len(failures)} of {n_files} file(s) failed: " + " | ".join(failures) + fix, file=sys.stderr)
        return 1
    if extract and spec.extract_to:
        failed = _extract_all(spec, results, data, quiet)
        if failed:
            return 1
    return 0


def _where(name: str, urls: list[str] | None, registry: str | None) -> str:
    return ("check the URLs given with --urls" if urls
            else f"check the files' url and mirrors of dataset '{name}' in {registry_path(registry)}")


def _plan_hub(files, folder: Path, items) -> list:
    """Each hf:// source of the dataset resolved and listed, its paths in ``folder`` checked (the
    dataset's other files' names are not its to take): a HubPlan, or the error."""
    if not files:  # the usual case: no names to reserve (1,000 URLs redacted: ~12 ms of start-up)
        return []
    from resumable.errors import ResumableError
    from resumable.hub.sources import plan_hf
    from resumable.redaction import redact

    reserved = {Path(i.dest).name: redact(i.url) for i in items}
    out = []
    for f in files:
        try:
            out.append(plan_hf(f.url, folder, size=f.size, hash=f.hash, endpoint=f.endpoint, reserved=reserved))
        except ResumableError as exc:
            out.append(exc)
    return out


def _clash(plans: list, items, folder: Path) -> str | None:
    """One path of the folder for two sources, found before any transfer: two hf:// sources, an
    hf:// source and a URL's file name, or a URL's file name and a file an hf:// source published."""
    from resumable.hub.sources import HubPlan, find_clash, published_owners
    from resumable.redaction import redact

    good = [p for p in plans if isinstance(p, HubPlan)]
    owner_of = published_owners(folder)
    for item in items:
        owner = owner_of(Path(item.dest).name)
        if owner is not None and not any(p.key == owner for p in good):
            return (f"{redact(item.url)} would be saved as {item.dest}, which {owner} published: a path in the "
                    "folder belongs to one source; give the file another 'name', or drop one of the sources")
    return find_clash(good)


def _fetch_hub(files, plans: list, progress) -> list:
    """Each planned hf:// source fetched into its downloads folder (files under their repository
    paths): a HubFiles, or the error."""
    from resumable.errors import ResumableError
    from resumable.hub.sources import fetch_hf

    out = []
    for f, plan in zip(files, plans):
        if isinstance(plan, Exception):
            out.append(plan)
            continue
        try:
            out.append(fetch_hf(f.url, plan=plan, progress=progress))
        except ResumableError as exc:
            out.append(exc)
    return out


def _check_folders(data: Path, data_dir: str, spec: DatasetSpec, registry: str | None) -> None:
    """This dataset's folders (symlinks followed) may not overlap each other, the registry's
    other datasets' folders under the same data dir, or the registry file."""
    source = f"--data-dir {data_dir}"
    mine = dataset_locations(data, [spec], source, prefix="")
    others = [d for d in load_registry(registry).values() if d.name != spec.name]
    theirs = dataset_locations(data, others, source, prefix="", files_unknown=True, refuse_links=False)
    registry_file = Location("the registry file", real_path(registry_path(registry)))
    check_overlaps([*mine, *theirs, registry_file], source, mine=mine)


def _check_option(option: str, value: str) -> None:
    """The config's path rule (train_pipeline.config.check_path) for a command-line path."""
    try:
        check_path(value)
    except ValueError as exc:
        raise ConfigError(f"{option}: {exc}") from None


def _prepare(data: Path, data_dir: str, spec: DatasetSpec) -> None:
    """Create <data-dir>/downloads/<name>/ before any network: a folder that cannot exist or be
    written is one line now, not a failure after the download."""
    folder = data / "downloads" / spec.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--data-dir {data_dir}: cannot create {exc.filename or folder} ({exc.strerror or exc}); "
                          "choose a writable folder") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"--data-dir {data_dir}: {folder} is not writable; choose a writable folder")


def _extract_all(spec: DatasetSpec, results, data: Path, quiet: bool) -> int:
    from resumable.errors import ResumableError
    from resumable.extract import extract

    failed = 0
    for f, r in zip([f for f in spec.files if not f.is_hub], results):  # hf:// sources are not extracted
        target = extract_target(data, spec, f)
        if target is None:
            continue
        try:
            x = extract(r.path, target, archive_digest=r.digest, unwrap=extract_unwrap(spec, f),
                        progress=False if quiet else None)
        except ResumableError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{Path(r.path).name} -> {x.target}: {x.status}, {x.files} files, {human_size(x.bytes)}")
    return failed


def main(argv: list[str] | None = None) -> int:
    """``python -m train_pipeline.datasets_cli ...`` (same as ``train-pipeline datasets ...``)."""
    parser = argparse.ArgumentParser(prog="train-pipeline")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["datasets", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())


def _connections(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of connections, or auto") from None
