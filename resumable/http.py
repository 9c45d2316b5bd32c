"""HTTP plumbing: sessions, redirects that never leak credentials, and header parsing."""

from __future__ import annotations

import email.utils
import errno
import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from . import curl, wire
from .errors import STATUS_HINTS, HTTPStatusError, TransferError, UsageError
from .redaction import redact, redact_text
from .retry import DEFAULT_SPEED_LIMIT, DEFAULT_SPEED_TIME, WATCHDOG, SpeedGuard

USER_AGENT = "train-pipeline-resumable/0.1"
MAX_REDIRECTS = 10
# The only request headers that follow a redirect to another origin: any other header may be a
# credential (Authorization, Private-Token, X-Goog-Api-Key, a custom one), so it stays behind.
CROSS_ORIGIN_HEADERS = frozenset({"user-agent", "accept", "accept-encoding", "accept-language", "range",
                                  "if-range", "if-none-match", "if-modified-since"})
_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$", re.I)
_UNSATISFIED_RANGE = re.compile(r"^bytes\s+\*/(\d+)$", re.I)


class RedactingFilter(logging.Filter):
    """Log records with every URL query and userinfo removed (urllib3 logs request lines at DEBUG;
    our own messages may quote other libraries' errors)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg, record.args = record.getMessage(), ()
        record.msg = redact_text(str(record.msg))
        return True


# huggingface_hub's HTTP client (httpx) logs each request's URL at INFO: an endpoint may carry user:password.
for _name in ("urllib3.connectionpool", "resumable", "httpx", "huggingface_hub"):
    logging.getLogger(_name).addFilter(RedactingFilter())


# The guard of the request this thread is making: its connection is handed to it as soon as the
# response head is awaited, so the watchdog can end a head that never finishes.
_current = threading.local()


class _GuardedConnection:
    def getresponse(self, *args, **kwargs):
        guard = getattr(_current, "guard", None)
        if guard is not None:
            guard.attach(self.sock)
        return super().getresponse(*args, **kwargs)


class _GuardedHTTPConnection(_GuardedConnection, urllib3.connection.HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnection, urllib3.connection.HTTPSConnection):
    pass


class _GuardedHTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedAdapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        wire.set_pool_classes(self.poolmanager, {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool})


def new_session(pool_size: int = 10, many: bool = False) -> requests.Session:
    """A session for the engine's requests; ``many``: it serves many files (a batch), so small
    bodies may go through libcurl (curl.py)."""
    s = requests.Session()
    if many:
        s.body_sizes = curl.BodySizes()  # type: ignore[attr-defined]
    adapter = _GuardedAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    s.headers.update({"User-Agent": USER_AGENT})
    # Cookies from one origin must never ride along to another; we keep no jar.
    s.cookies.set_policy(_NoCookies())
    # Trusting the environment makes requests re-read proxies and .netrc on every request
    # (~0.7 ms each): trust it only when it sets a proxy or .netrc; a CA bundle we apply once.
    s.trust_env = _proxies_or_netrc()
    if not s.trust_env:
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            s.verify = bundle
    return s


def _proxies_or_netrc() -> bool:
    import urllib.request

    netrcs = [os.environ.get("NETRC") or "~/.netrc", "~/_netrc"]
    return bool(urllib.request.getproxies()) or any(os.path.exists(os.path.expanduser(n)) for n in netrcs)


class _NoCookies(requests.cookies.cookielib.DefaultCookiePolicy):
    def set_ok(self, cookie, request):
        return False


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ENCODED_CONTROL = re.compile(r"%(?:[01][0-9a-f]|7f)", re.I)


def check_url(url: str) -> str:
    """``url`` when it is an http(s) URL that a request can be made for, else a one-line UsageError."""
    if not isinstance(url, str):
        raise UsageError(f"URL {url!r}: expected text like https://host/path")
    if _CONTROL.search(url):
        raise UsageError(f"URL {redact(url)!r} contains a control character (NUL, CR, LF, ...); remove it")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0-65535
    except ValueError as exc:
        raise UsageError(f"URL {redact(url)!r}: {exc}; write it as https://host[:port]/path") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{redact(url)!r} is not an http(s) URL; write it as https://host/path")
    if _ENCODED_CONTROL.search(parts.path):
        raise UsageError(f"URL {redact(url)!r}: its path encodes a control character (%00-%1F, %7F); no server "
                         "file has such a name, check the URL")
    return url


def origin(url: str) -> tuple[str, str, int | None]:
    p = urlsplit(url)
    port = p.port or {"http": 80, "https": 443}.get(p.scheme)
    return p.scheme, (p.hostname or "").lower(), port


def request(session: requests.Session, method: str, url: str, headers: dict, timeout,
            guard: SpeedGuard | None = None, small: bool | None = None) -> requests.Response:
    """``method url``, following redirects ourselves, so credentials stay with the origin they were
    meant for. ``guard`` (default: the default speed rule) ends a response whose head does not
    arrive in time; it comes back as ``resp.guard`` for the body. ``small``: the body is known to
    be at most curl.BODY_MAX bytes (True), more (False), or not known (None)."""
    guard = guard or SpeedGuard(DEFAULT_SPEED_LIMIT, DEFAULT_SPEED_TIME, redact(url))
    first_origin = origin(url)
    current = url
    hdrs = dict(headers)
    for _ in range(MAX_REDIRECTS + 1):
        _current.guard = guard
        try:
            with WATCHDOG.watching(guard):
                resp = _send(session, method, current, hdrs, timeout, small)
        except UsageError:
            raise  # says what to fix itself (a setting, not the URL)
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader, ValueError) as exc:
            raise UsageError(f"URL {redact(current)!r}: {describe_network_error(exc)}") from None
        except requests.exceptions.RequestException as exc:
            guard.raise_if_tripped()
            raise connect_error(current, exc) from None
        finally:
            _current.guard = None
        if resp.status_code in (301, 302, 303, 307, 308) and "Location" in resp.headers:
            resp.close()
            location = resp.headers["Location"]
            try:
                current = check_url(urljoin(current, location))
            except (UsageError, ValueError) as exc:
                err = TransferError(f"{redact(current)}: redirected to an unusable address "
                                    f"({clip(redact_text(str(exc)))}); check the URL")
                err.transient = False  # the same request gets the same redirect
                raise err from None
            if origin(current) != first_origin:
                hdrs = {k: v for k, v in hdrs.items() if k.lower() in CROSS_ORIGIN_HEADERS}
            continue
        resp.final_url = current  # type: ignore[attr-defined]
        resp.guard = guard  # type: ignore[attr-defined]
        return resp
    raise TransferError(f"{redact(url)}: more than {MAX_REDIRECTS} redirects; check the URL")


def _send(session: requests.Session, method: str, url: str, headers: dict, timeout, small: bool | None = None
          ) -> requests.Response:
    """One request, no redirect followed. Straight to the session's adapter when the session takes
    nothing from the environment and the URL needs no preparing (no userinfo, nothing to quote or
    IDNA-encode): Session.request spends ~0.3 ms of CPU per request on cookies, hooks and merged
    settings that we do not use, a sixth of a small file's cost. On a many-file session a GET
    whose body is (likely) small goes through libcurl (curl.py); ``small``: see ``request``."""
    if (session.trust_env or session.auth or session.params or session.cookies or session.proxies
            or any(session.hooks.values()) or not _plain_url(url)):  # a caller's session: as it is configured
        return session.request(method, url, headers=headers, timeout=timeout, stream=True, allow_redirects=False)
    sent = requests.structures.CaseInsensitiveDict(session.headers)
    sent.update(headers)  # one value per name, the caller's last, as requests merges them (both transports)
    sizes = getattr(session, "body_sizes", None) or curl.forced_sizes()
    if (sizes is not None and method == "GET" and sizes.use_curl(url, small)
            and (sizes is curl.FORCED or threading.current_thread() is not threading.main_thread())):
        try:
            resp = curl.send(url, sent, timeout, session.verify, session.cert, getattr(_current, "guard", None))
        except curl.UseRequests:
            sizes.saw(url, None)  # streamed through requests below
        else:
            sizes.through_curl += 1
            sizes.saw(url, 0)
            return resp
    prepared = requests.PreparedRequest()
    prepared.method, prepared.url, prepared.body = method.upper(), url, None
    prepared.headers = sent
    prepared._cookies = None
    prepared.hooks = {"response": []}
    adapter = session.get_adapter(url)
    resp = adapter.send(prepared, stream=True, timeout=timeout, verify=session.verify, cert=session.cert, proxies={})
    if sizes is not None:
        sizes.saw(url, body_length(resp))
    return resp


_PLAIN_URL = re.compile(r"https?://[a-z0-9.\-]+(:[0-9]{1,5})?/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-F]{2})*"
                        r"(\?(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-F]{2})+)?", re.ASCII)
_DOT_SEGMENT = re.compile(r"/\.\.?(/|\?|$)")


def _plain_url(url: str) -> bool:
    """``url`` is already what requests would send: a lower-case ASCII host, a port, a path without
    dot segments, no userinfo or fragment, every other byte an allowed one or an upper-case
    %-escape of a reserved one."""
    return (_PLAIN_URL.fullmatch(url) is not None and not _DOT_SEGMENT.search(url.partition("?")[0])
            and requests.utils.requote_uri(url) == url)


def connect_error(url: str, exc: BaseException) -> TransferError:
    """The TransferError of a request that got no answer. A host name that does not exist is not
    worth another try (curl and wget give up at once too); a refused connection is marked
    ``refused``: the download decides (attempt.py: worth retrying only once bytes came)."""
    err = TransferError(f"{redact(url)}: {describe_network_error(exc)}")
    why = unreachable(exc)
    err.transient = why != "no such host"
    err.refused = why == "refused"
    return err


def unreachable(exc: BaseException) -> str | None:
    """"no such host" or "refused" when ``exc`` says the host is not there at all, else None."""
    cause = _root_cause(exc)
    if isinstance(cause, socket.gaierror) and cause.errno in _NO_SUCH_HOST:
        return "no such host"
    if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED:
        return "refused"
    return None


# getaddrinfo's "no such name" answers; EAI_AGAIN (a resolver that did not answer) stays transient
_NO_SUCH_HOST = {getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, name)}


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost error under requests' and urllib3's wrappers (``reason``, then the chain)."""
    seen = 0
    while seen < 16:
        seen += 1
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException):
            inner = exc.__cause__ or exc.__context__
        if inner is None and exc.args and isinstance(exc.args[0], BaseException):
            inner = exc.args[0]
        if not isinstance(inner, BaseException) or inner is exc:
            return exc
        exc = inner
    return exc


def describe_network_error(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout) or "timed out" in text.lower():
        return "read timed out"
    if isinstance(exc, requests.exceptions.ConnectionError) and "refused" in text.lower():
        return "connection refused (nothing listens at that host and port); check the URL, or start the server"
    if "NameResolution" in text or "Name or service not known" in text or "nodename nor servname" in text:
        return "the host name does not resolve (DNS); check the host in the URL and the network"
    name = type(exc).__name__
    text = clip(redact_text(text))
    return f"{name}: {text}" if text else name


def clip(text: str, limit: int = 200) -> str:
    """``text`` cut to about ``limit`` characters at a word boundary, marked with an ellipsis: a
    quoted error never ends mid-word."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    cut = max(head.rfind(" "), head.rfind("("), head.rfind(","))
    return (head[:cut] if cut > limit // 2 else head).rstrip(" ,(:") + " …"


def status_error(resp: requests.Response, url: str) -> HTTPStatusError:
    err = HTTPStatusError(redact(url), resp.status_code, resp.reason or "", STATUS_HINTS.get(resp.status_code, ""))
    err.retry_after = parse_retry_after(resp.headers.get("Retry-After"))
    if err.retry_after is None:
        err.retry_after = parse_ratelimit_reset(resp.headers.get("RateLimit"))
    resp.close()
    return err


_DIGITS = re.compile(r"[0-9]{1,20}")
_RATELIMIT = re.compile(r";\s*r=(\d+)\s*;\s*t=(\d+)")


def parse_ratelimit_reset(value: str | None) -> float | None:
    """Seconds until the quota resets, from an IETF ``RateLimit: "api";r=0;t=55`` header (when used up)."""
    m = _RATELIMIT.search(value or "")
    return float(m.group(2)) if m and int(m.group(1)) == 0 else None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if _DIGITS.fullmatch(value):  # ASCII only: str.isdigit() accepts '²', which int() refuses
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class ContentRange:
    start: int
    end: int  # inclusive
    total: int | None


def parse_content_range(value: str | None) -> ContentRange | None:
    if not value:
        return None
    m = _CONTENT_RANGE.match(value.strip())
    if not m:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return ContentRange(int(m.group(1)), int(m.group(2)), total)


def parse_unsatisfied_range(value: str | None) -> int | None:
    m = _UNSATISFIED_RANGE.match((value or "").strip())
    return int(m.group(1)) if m else None


def strong_validator(resp: requests.Response) -> str | None:
    """A validator usable in If-Range: a strong ETag, else Last-Modified."""
    etag = resp.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return resp.headers.get("Last-Modified")


def body_length(resp: requests.Response) -> int | None:
    """Content-Length of the body as sent (None when chunked). A content-encoded body counts too:
    the engine stores the bytes exactly as sent (it never decodes), so their length is binding."""
    if "chunked" in resp.headers.get("Transfer-Encoding", "").lower():
        return None
    cl = resp.headers.get("Content-Length")
    return int(cl) if cl and _DIGITS.fullmatch(cl.strip()) else None
