"""libcurl (through pycurl, when installed) as the transport of small bodies in batches.

A request through requests and urllib3 costs ~0.7 ms of Python CPU, libcurl's ``perform`` ~0.1 ms:
on thousands of small files that is a fifth of the engine's CPU (bench scenario 4). So, on the
sessions that serve many files (``http.new_session(many=True)``: batches, Hub snapshots), a GET
whose body is expected to be small (its known size, or its origin's last answers were small) is
made by libcurl, the body held in memory. Everything else stays in Python as before: redirects
(credentials never follow them), statuses, validators, the body into the part file, verification.
A body of more than ``BODY_MAX`` bytes ends the libcurl transfer at its headers and the request
is made again through requests, which streams, splices and resumes it (so is an answer libcurl
refuses to parse: http.client is more lenient). The main thread keeps requests: libcurl would
hold Ctrl-C until its transfer ends.

libcurl's answers are mapped onto requests' errors, so every caller keeps its one error path: a
refused connection, an unknown host, timeouts, TLS failures. A body cut short comes back as a
response whose body raises at the cut, after the bytes that came (kept and resumed as usual).

``RESUMABLE_TRANSPORT=requests`` turns libcurl off; ``=curl`` makes every GET of every plain
session try it first (the test suite runs the engine's tests that way too).
"""

from __future__ import annotations

import errno
import io
import os
import re
import socket
import threading
from urllib.parse import urlsplit

import requests
import urllib3

from .errors import StalledError, UsageError

BODY_MAX = 1 << 20  # larger bodies go through requests (streamed, spliced, hashed on another thread)

_pycurl = None
_import_lock = threading.Lock()
_local = threading.local()


def _module():
    """pycurl, imported on first use (never at start-up: ``fetch --help`` stays fast), or None."""
    global _pycurl
    if _pycurl is None:
        with _import_lock:
            try:
                import pycurl
            except ImportError:  # optional: requests does everything without it, a little slower
                pycurl = False
            _pycurl = pycurl
    return _pycurl or None


def mode() -> str:
    """"requests", "curl" (every GET tries libcurl first) or "auto"."""
    value = os.environ.get("RESUMABLE_TRANSPORT", "").strip().lower() or "auto"
    if value not in ("auto", "curl", "requests"):
        raise UsageError(f"RESUMABLE_TRANSPORT {value!r}: use auto, curl or requests (or leave it unset)")
    return value


class BodySizes:
    """Per session: whether each origin's last answer had a small body. A request of unknown size
    goes to libcurl only where the last one was small, so an origin of large files costs no
    aborted transfers."""

    def __init__(self):
        self._small: dict[tuple, bool] = {}
        self.through_curl = 0  # answers libcurl brought (a count, for tests and the curious)

    def use_curl(self, url: str, small: bool | None) -> bool:
        choice = mode()
        if choice == "requests" or small is False or _module() is None:
            return False
        return small is True or choice == "curl" or self._small.get(_origin(url), False)

    def saw(self, url: str, length: int | None) -> None:
        self._small[_origin(url)] = length is not None and length <= BODY_MAX


FORCED = BodySizes()


def forced_sizes() -> BodySizes | None:
    """With RESUMABLE_TRANSPORT=curl, every plain session's GETs try libcurl first, not only a
    many-file session's (how the test suite runs the engine's tests through libcurl)."""
    return FORCED if mode() == "curl" else None


def _origin(url: str) -> tuple:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


class UseRequests(Exception):
    """Not for libcurl: a body over BODY_MAX, or an answer libcurl refuses that requests may read
    (http.client is more lenient); the request is made through requests instead."""


_C_MAX = 2**31 - 1  # libcurl's long options: larger speeds and times mean "never"


def send(url: str, headers, timeout, verify, cert, guard=None) -> requests.Response:
    """GET ``url`` with exactly ``headers`` (a case-insensitive mapping), no redirect followed.
    Raises UseRequests (see there), and requests' exceptions for a request that got no answer."""
    pycurl = _module()
    curl = getattr(_local, "curl", None)
    if curl is None:
        curl = _local.curl = pycurl.Curl()
    head, body = bytearray(), bytearray()
    curl.reset()  # keeps the handle's connections (keep-alive) and TLS sessions
    speed_rule_by_callback = _configure(pycurl, curl, url, headers, timeout, verify, cert, guard)
    curl.setopt(pycurl.HEADERFUNCTION, head.extend)
    curl.setopt(pycurl.WRITEFUNCTION, body.extend)
    error, code = None, 0
    try:
        curl.perform()
    except pycurl.error as exc:
        code = exc.args[0]
        if code not in _USE_REQUESTS:
            error = _mapped(pycurl, curl, code, str(exc.args[1]) if len(exc.args) > 1 else "")
    finally:
        if guard is not None:  # libcurl kept the speed rule: its verdict stands, the next window starts now
            if speed_rule_by_callback:
                stalled = code == pycurl.E_ABORTED_BY_CALLBACK
            else:
                stalled = (code == pycurl.E_OPERATION_TIMEDOUT and bool(guard.limit)
                           and curl.getinfo(pycurl.CONNECT_TIME) > 0)
            guard.kept_elsewhere(stalled)
    if code in _USE_REQUESTS or len(body) > BODY_MAX:  # (the latter: a body without a length outgrew it)
        raise UseRequests()
    status, reason, fields = _final_head(bytes(head))
    if status is None:
        if curl.getinfo(pycurl.RESPONSE_CODE) >= 200:
            raise UseRequests()  # libcurl read a head that we cannot: let http.client try
        if not isinstance(error, requests.exceptions.RequestException):
            raise requests.exceptions.ConnectionError(f"Connection aborted: {error or 'no response'}") from None
        raise error
    resp = requests.Response()
    resp.status_code, resp.reason, resp.headers = status, reason, fields
    resp.url = url
    resp.raw = _Body(body, error)
    resp.encoding = None
    return resp


# CURLE_FILESIZE_EXCEEDED (over MAXFILESIZE), and a head libcurl will not parse (two spaces after
# the version, "Content-Length: +12", HTTP/0.9: CURLE_UNSUPPORTED_PROTOCOL, CURLE_WEIRD_SERVER_REPLY):
# requests decides instead.
_USE_REQUESTS = frozenset({63, 1, 8})


def _configure(pycurl, curl, url: str, headers, timeout, verify, cert, guard) -> bool:
    """Set up ``curl`` for this GET; True when the speed rule is kept by a progress callback
    (libcurl's LOW_SPEED_* then keeps the shorter read timeout)."""
    connect_timeout, read_timeout = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    curl.setopt(pycurl.URL, url)
    curl.setopt(pycurl.NOSIGNAL, 1)
    curl.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
    curl.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
    curl.setopt(pycurl.NOPROXY, "*")  # a session that takes nothing from the environment (http._send)
    curl.setopt(pycurl.FOLLOWLOCATION, 0)
    curl.setopt(pycurl.MAXFILESIZE_LARGE, BODY_MAX)
    curl.setopt(pycurl.BUFFERSIZE, BODY_MAX)  # a body in one or two writes: each one takes the GIL
    curl.setopt(pycurl.HTTPHEADER, _header_lines(headers))
    if connect_timeout is not None:
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, _c_long(connect_timeout * 1000))
    by_callback = False
    if guard is not None and guard.limit:  # the speed rule (retry.SpeedGuard)
        if read_timeout is not None and read_timeout < guard.window:
            # Two rules, one LOW_SPEED: it keeps the read timeout, a progress callback the rule.
            by_callback = True
            seen = [0]

            def progress(_dltotal, dlnow, _ultotal, _ulnow) -> int:
                try:
                    guard.add(dlnow - seen[0])
                except StalledError:
                    return 1  # ends the transfer: CURLE_ABORTED_BY_CALLBACK
                seen[0] = dlnow
                return 0

            curl.setopt(pycurl.NOPROGRESS, 0)
            curl.setopt(pycurl.XFERINFOFUNCTION, progress)
            _low_speed(pycurl, curl, 1, read_timeout)
        else:
            _low_speed(pycurl, curl, guard.limit, guard.window)
    elif read_timeout is not None:  # no byte for this long: requests' read timeout
        _low_speed(pycurl, curl, 1, read_timeout)
    if verify is False:
        curl.setopt(pycurl.SSL_VERIFYPEER, 0)
        curl.setopt(pycurl.SSL_VERIFYHOST, 0)
    elif isinstance(verify, str) and os.path.isdir(verify):  # a hashed folder of certificates, as requests takes it
        curl.unsetopt(pycurl.CAINFO)
        curl.setopt(pycurl.CAPATH, verify)
    else:  # exactly the roots requests trusts (certifi's, or the session's bundle), no compiled-in folder
        curl.setopt(pycurl.CAINFO, verify if isinstance(verify, str) else requests.utils.DEFAULT_CA_BUNDLE_PATH)
        curl.unsetopt(pycurl.CAPATH)
    if cert:
        certfile, keyfile = cert if isinstance(cert, tuple) else (cert, None)
        curl.setopt(pycurl.SSLCERT, certfile)
        if keyfile:
            curl.setopt(pycurl.SSLKEY, keyfile)
    return by_callback


def _header_lines(headers) -> list[bytes]:
    """The request's header lines as requests would send them (latin-1, one per name), and none of
    libcurl's own: "Name:" removes one of libcurl's, "Name;" sends an empty value."""
    lines = [(f"{k}: {v}" if str(v).strip() else f"{k};").encode("latin-1") for k, v in headers.items()]
    given = {name.lower() for name in headers}
    return lines + [f"{k}:".encode() for k in ("Accept", "User-Agent") if k.lower() not in given]


def _low_speed(pycurl, curl, limit: float, seconds: float) -> None:
    curl.setopt(pycurl.LOW_SPEED_LIMIT, max(1, _c_long(limit)))
    curl.setopt(pycurl.LOW_SPEED_TIME, max(1, _c_long(seconds + 0.999)))


def _c_long(value: float) -> int:
    return int(min(value, _C_MAX))


_LINE_END = re.compile(rb"\r?\n")


def _final_head(data: bytes):
    """(status, reason, headers) of the final response head in ``data``: the first complete head
    with a status of 200 or more (1xx heads come before it, chunked trailers after it); Nones when
    none arrived whole. Lines end in CRLF or a bare LF, as http.client reads them."""
    block: list[bytes] = []
    for line in _LINE_END.split(data):
        if line:
            block.append(line)
            continue
        if not block:
            continue
        parsed, block = _head(block), []
        if parsed is not None:
            return parsed
    return None, None, None  # what is left in ``block`` never ended: not a complete head


def _head(lines: list[bytes]):
    status_line = lines[0].decode("latin-1").split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/") or not status_line[1].isdigit():
        return None
    status = int(status_line[1])
    if status < 200:
        return None
    fields = requests.structures.CaseInsensitiveDict()
    name = None
    for raw in lines[1:]:
        line = raw.decode("latin-1")
        if line[:1] in (" ", "\t") and name is not None:  # an obsolete folded continuation line
            fields[name] = f"{fields[name]} {line.strip()}"
            continue
        name, sep, value = line.partition(":")
        if not sep:
            name = None
            continue
        name, value = name.strip(), value.strip()
        fields[name] = f"{fields[name]}, {value}" if name in fields else value
    return status, status_line[2].strip() if len(status_line) > 2 else "", fields


class _Body(io.RawIOBase):
    """The body libcurl received, read like urllib3's response (``read1``); raises ``error`` after
    the last byte when the transfer was cut."""

    def __init__(self, data: bytearray, error: BaseException | None):
        self._data, self._pos, self._error = data, 0, error

    def readable(self) -> bool:
        return True

    def read1(self, size: int = -1, decode_content: bool = False) -> bytes:
        return self.read(size)

    def read(self, size: int | None = -1, decode_content: bool = False) -> bytes:
        end = len(self._data) if size is None or size < 0 else min(len(self._data), self._pos + size)
        chunk = bytes(memoryview(self._data)[self._pos:end])  # one copy, not a slice and then a copy
        self._pos = end
        if not chunk and self._error is not None:
            error, self._error = self._error, None
            raise error
        return chunk

    def release_conn(self) -> None:
        pass


def _mapped(pycurl, curl, code: int, message: str) -> BaseException:
    """requests' (or urllib3's, for a cut body) exception for libcurl error ``code``, with the OS
    error underneath where ``http.unreachable`` looks for it."""
    if code in (pycurl.E_COULDNT_RESOLVE_HOST, pycurl.E_COULDNT_RESOLVE_PROXY):
        err = requests.exceptions.ConnectionError(f"NameResolutionError: {message}")
        err.__cause__ = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return err
    if code == pycurl.E_COULDNT_CONNECT:
        err = requests.exceptions.ConnectionError(message)
        if curl.getinfo(pycurl.OS_ERRNO) == errno.ECONNREFUSED:
            err = requests.exceptions.ConnectionError(f"Connection refused: {message}")
            err.__cause__ = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        return err
    if code == pycurl.E_OPERATION_TIMEDOUT:
        if curl.getinfo(pycurl.CONNECT_TIME) > 0 or curl.getinfo(pycurl.RESPONSE_CODE):
            return requests.exceptions.ReadTimeout(f"Read timed out ({message})")
        return requests.exceptions.ConnectTimeout(f"Connection timed out ({message})")
    if code in _TLS_ERRORS:
        return requests.exceptions.SSLError(message)
    # Anything else is the connection or the answer failing (a cut body, a malformed or endless
    # head): worth another try, as urllib3's ProtocolError is.
    return urllib3.exceptions.ProtocolError(f"Connection broken: {message}")


# libcurl's TLS failures: CURLE_SSL_CONNECT_ERROR, SSL_ENGINE_NOTFOUND, SSL_ENGINE_SETFAILED,
# SSL_CERTPROBLEM, SSL_CIPHER, PEER_FAILED_VERIFICATION, SSL_CACERT_BADFILE, SSL_CRL_BADFILE,
# SSL_ISSUER_ERROR, SSL_PINNEDPUBKEYNOTMATCH, SSL_INVALIDCERTSTATUS, SSL_CLIENTCERT
_TLS_ERRORS = frozenset({35, 53, 54, 58, 59, 60, 77, 82, 83, 90, 91, 98})
