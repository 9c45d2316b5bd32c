"""Before a pipeline run starts anything heavy: can each dataset file's host be reached at all?

A host name that does not exist (the resolver answers "no such name") or a port where nothing
listens (connection refused) fails the download at once (resumable.http.connect_error), but a run of
``python flows/pipeline.py`` only gets there after Prefect's temporary server has started: 6 s on a
used PREFECT_HOME, 16 s on a fresh one. So the command line asks first: each distinct host and port
of the files still to download is looked up and connected to once (a TCP handshake, no request), in
parallel, within ``timeout`` seconds. A file all of whose sources are decisively unreachable is
reported in one line naming the dataset, the host, the cause and the file to edit.

Only decisive answers count. A resolver that does not answer in time (EAI_AGAIN), a connection that
times out, a host behind a proxy from the environment, an ``hf://`` source (the Hub client has its
own offline mode), a file already verified on disk: all are left to the run, whose engine retries
what may pass.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from resumable.redaction import redact

# getaddrinfo's "no such name" answers (EAI_AGAIN, a resolver that did not answer, is not one)
NO_SUCH_HOST = frozenset(getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, name))
# connect() errors that only say this machine cannot use that address family (an IPv6 address
# without an IPv6 route): they do not make a host unreachable when its other addresses refuse
_UNUSABLE_FAMILY = frozenset({errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.ENETUNREACH})
MAX_ADDRESSES = 8
MAX_HOSTS = 64  # distinct host:port pairs probed; more are left to the run

_LINE_BREAKING = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")  # whatever str.splitlines splits on
DNS = "the host name does not resolve (DNS: no such name)"
REFUSED = "connection refused (nothing listens at that host and port)"


@dataclass(frozen=True)
class Source:
    """One file to download: where it is described (``origin``) and every URL of it. ``what`` names
    it in the error ("dataset 'x'", "model 'org/name'"), ``fix`` the setting to change."""

    dataset: str
    origin: str  # e.g. "entry 'outdoor_advertising' in configs/datasets.yaml"
    filename: str
    urls: tuple[str, ...]
    what: str = ""
    fix: str = "the url (and mirrors)"


class Unreachable(Exception):
    """Every source of a dataset file is unreachable; the message is one line naming the fix."""


def endpoint(url: str) -> tuple[str, int] | None:
    """(host, port) to probe for ``url``; None when it is not probed (not http(s), a proxy applies)."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        return None
    if _proxied(url):
        return None  # the proxy resolves and connects; this machine may not be able to
    return parts.hostname, port


def _proxied(url: str) -> bool:
    import requests.utils

    try:
        return bool(requests.utils.get_environ_proxies(url))
    except Exception:  # a malformed proxy setting: let the run report it
        return True


def probe(host: str, port: int, timeout: float) -> str | None:
    """The cause when ``host:port`` is decisively unreachable (DNS or REFUSED), else None."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return DNS if exc.errno in NO_SUCH_HOST else None
    except (OSError, UnicodeError, ValueError):
        return None
    refused = False
    for family, kind, proto, _, address in infos[:MAX_ADDRESSES]:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout)
                sock.connect(address)
            return None  # something listens
        except ConnectionRefusedError:
            refused = True
        except OSError as exc:
            if exc.errno not in _UNUSABLE_FAMILY:
                return None  # timed out, filtered, unreachable network: not decisive
    return REFUSED if refused else None


def probe_all(endpoints: Iterable[tuple[str, int]], timeout: float,
              prober: Callable[[str, int, float], str | None] = probe) -> dict[tuple[str, int], str]:
    """{(host, port): cause} for the decisively unreachable ones, probed in parallel; whatever has
    not answered within ``timeout`` (a resolver that hangs) counts as reachable."""
    todo = list(dict.fromkeys(endpoints))[:MAX_HOSTS]
    found: dict[tuple[str, int], str] = {}
    lock = threading.Lock()

    def run(ep: tuple[str, int]) -> None:
        try:
            cause = prober(ep[0], ep[1], timeout)
        except Exception:
            cause = None
        if cause:
            with lock:
                found[ep] = cause

    threads = [threading.Thread(target=run, args=(ep,), daemon=True, name=f"probe {ep[0]}") for ep in todo]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    with lock:
        return dict(found)


def check_reachable(sources: Iterable[Source], timeout: float = 3.0,
                    prober: Callable[[str, int, float], str | None] = probe) -> None:
    """Raise Unreachable (one line) when some file has no source that can be reached."""
    sources = list(sources)
    by_url = {u: endpoint(u) for s in sources for u in s.urls}
    causes = probe_all((ep for ep in by_url.values() if ep is not None), timeout, prober)
    dead = []
    for s in sources:
        found = [(u, causes.get(by_url[u])) if by_url[u] is not None else (u, None) for u in s.urls]
        if found and all(cause for _, cause in found):
            dead.append((s, found))
    if not dead:
        return
    s, found = dead[0]
    detail = " | ".join(f"{redact(u)}: host {_host(u)}: {cause}" for u, cause in found)
    more = f" (and {len(dead) - 1} more file(s) with no reachable source)" if len(dead) > 1 else ""
    line = (f"{s.what or f'dataset {s.dataset!r}'}: {s.filename}: no source can be reached: {detail}{more}; "
            f"fix {s.fix} of {s.origin}")
    raise Unreachable(_LINE_BREAKING.sub("?", line))  # a registry is anyone's file: one line, whatever it holds


def _host(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


def hub_sources(cfg, datasets, data_dir: Path, origins: dict[str, str], config_file: str) -> list[Source]:
    """The Hub endpoints a run would ask (the model and hf:// files): none offline (HF_HUB_OFFLINE),
    none for a source pinned to a commit whose snapshot is complete (it needs no request)."""
    from resumable.hub import snapshot_is_complete
    from resumable.hub.api import DEFAULT_ENDPOINT
    from resumable.hub.snapshots import _env_offline, repo_folder
    from resumable.hub.sources import hub_cache
    from resumable.hub.uri import parse

    if _env_offline():
        return []

    def needs_network(root: Path, repo_id: str, repo_type: str, revision: str) -> bool:
        if not re.fullmatch(r"[0-9a-f]{40}", revision):
            return True  # a branch or tag: one metadata request resolves it
        try:
            return not snapshot_is_complete(repo_folder(root, repo_id, repo_type) / revision)
        except (OSError, ValueError):
            return True

    def hub(endpoint: str | None) -> str:
        return (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")

    out = []
    model = getattr(cfg, "model", None)
    if model is not None and needs_network(cfg.path(cfg.models_cache), model.repo_id, "model", model.revision):
        out.append(Source("", f"{config_file}", model.repo_id, (hub(model.endpoint),), what="model",
                          fix="model.endpoint (or HF_ENDPOINT)"))
    for ds in datasets:
        for f in ds.files:
            if not getattr(f, "is_hub", False):
                continue
            uri = parse(f.url)
            root = hub_cache(data_dir / "downloads" / ds.name)
            if needs_network(root, uri.repo_id, uri.repo_type, uri.revision or "main"):
                out.append(Source(ds.name, origins.get(ds.name, f"dataset {ds.name!r}"), f.url,
                                  (hub(f.endpoint),), fix="the url's endpoint (or HF_ENDPOINT)"))
    return out


def pending_sources(datasets, data_dir: Path, origins: dict[str, str]) -> list[Source]:
    """The files of ``datasets`` a run would download: those not verified on disk already."""
    import resumable
    from train_pipeline.config.registry import download_path

    out = []
    for ds in datasets:
        for f in ds.files:
            if getattr(f, "is_hub", False) or resumable.is_verified(download_path(data_dir, ds, f), f.size, f.hash):
                continue
            out.append(Source(ds.name, origins.get(ds.name, f"dataset {ds.name!r}"), f.filename, (f.url, *f.mirrors)))
    return out
