"""libcurl (through pycurl, when installed) as the transport of small bodies in batches.

A request through requests and urllib3 costs ~0.7 ms of Python CPU, libcurl's ``perform`` ~0.1 ms:
on thousands of small files that is a fifth of the engine's CPU (bench scenario 4). So, on the
sessions that serve many files (``http.new_session(many=True)``: batches, Hub snapshots), a GET
whose body is expected to be small (its known size, or its origin's last answers were small) is
made by libcurl, the body held in memory. Everything else stays in Python as before: redirects
(credentials never follow them), statuses, validators, the body into the part file, verification.
A body of more than ``BODY_MAX`` bytes ends the libcurl transfer at its headers and the request
is made again through requests, which streams, splices and resumes it.

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
import socket
import threading
from urllib.parse import urlsplit

import requests
import urllib3

from .errors import UsageError

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


_FORCED = BodySizes()


def forced_sizes() -> BodySizes | None:
    """With RESUMABLE_TRANSPORT=curl, every plain session's GETs try libcurl first, not only a
    many-file session's (how the test suite runs the engine's tests through libcurl)."""
    return _FORCED if mode() == "curl" else None


def _origin(url: str) -> tuple:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


class TooLarge(Exception):
    """The body is larger than BODY_MAX: make the request through requests instead."""


def send(url: str, headers: dict, timeout, verify, cert, guard=None) -> requests.Response:
    """GET ``url`` with exactly ``headers``, no redirect followed. Raises TooLarge for a body of
    more than BODY_MAX bytes, and requests' exceptions for a request that got no answer."""
    pycurl = _module()
    curl = getattr(_local, "curl", None)
    if curl is None:
        curl = _local.curl = pycurl.Curl()
    head, body = bytearray(), bytearray()
    curl.reset()  # keeps the handle's connections (keep-alive) and TLS sessions
    _configure(pycurl, curl, url, headers, timeout, verify, cert, guard)
    curl.setopt(pycurl.HEADERFUNCTION, head.extend)
    curl.setopt(pycurl.WRITEFUNCTION, body.extend)
    error, code = None, 0
    try:
        curl.perform()
    except pycurl.error as exc:
        code = exc.args[0]
        if code != pycurl.E_FILESIZE_EXCEEDED:
            error = _mapped(pycurl, curl, code, str(exc.args[1]) if len(exc.args) > 1 else "")
    finally:
        if guard is not None:  # libcurl kept the speed rule (LOW_SPEED_*) once connected: its verdict stands
            guard.kept_elsewhere(code == pycurl.E_OPERATION_TIMEDOUT and bool(guard.limit)
                                 and curl.getinfo(pycurl.CONNECT_TIME) > 0)
    if code == pycurl.E_FILESIZE_EXCEEDED:
        raise TooLarge()
    if len(body) > BODY_MAX:
        raise TooLarge()  # a body without a length that outgrew the limit
    status, reason, fields = _final_head(bytes(head))
    if status is None:
        if not isinstance(error, requests.exceptions.RequestException):
            raise requests.exceptions.ConnectionError(f"Connection aborted: {error or 'no response'}") from None
        raise error
    resp = requests.Response()
    resp.status_code, resp.reason, resp.headers = status, reason, fields
    resp.url = url
    resp.raw = _Body(body, error)
    resp.encoding = None
    return resp


def _configure(pycurl, curl, url: str, headers: dict, timeout, verify, cert, guard) -> None:
    connect_timeout, read_timeout = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    curl.setopt(pycurl.URL, url)
    curl.setopt(pycurl.NOSIGNAL, 1)
    curl.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
    curl.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
    curl.setopt(pycurl.NOPROXY, "*")  # a session that takes nothing from the environment (http._send)
    curl.setopt(pycurl.FOLLOWLOCATION, 0)
    curl.setopt(pycurl.MAXFILESIZE_LARGE, BODY_MAX)
    curl.setopt(pycurl.BUFFERSIZE, BODY_MAX)  # a body in one or two writes: each one takes the GIL
    # Exactly the headers requests would send: none of curl's own ("Name:" removes one, "Name;"
    # sends an empty value).
    given = {name.lower() for name in headers}
    lines = [f"{k}: {v}" if v else f"{k};" for k, v in headers.items()]
    lines += [f"{k}:" for k in ("Accept", "User-Agent") if k.lower() not in given]
    curl.setopt(pycurl.HTTPHEADER, lines)
    if connect_timeout is not None:
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(connect_timeout * 1000)))
    if guard is not None and guard.limit:  # the speed rule (retry.SpeedGuard), kept by libcurl
        curl.setopt(pycurl.LOW_SPEED_LIMIT, max(1, int(guard.limit)))
        curl.setopt(pycurl.LOW_SPEED_TIME, max(1, int(guard.window + 0.999)))
    elif read_timeout is not None:  # no byte for this long: requests' read timeout
        curl.setopt(pycurl.LOW_SPEED_LIMIT, 1)
        curl.setopt(pycurl.LOW_SPEED_TIME, max(1, int(read_timeout + 0.999)))
    if verify is False:
        curl.setopt(pycurl.SSL_VERIFYPEER, 0)
        curl.setopt(pycurl.SSL_VERIFYHOST, 0)
    else:  # exactly the roots requests trusts (certifi's, or the session's bundle), no compiled-in folder
        curl.setopt(pycurl.CAINFO, verify if isinstance(verify, str) else requests.utils.DEFAULT_CA_BUNDLE_PATH)
        curl.unsetopt(pycurl.CAPATH)
    if cert:
        certfile, keyfile = cert if isinstance(cert, tuple) else (cert, None)
        curl.setopt(pycurl.SSLCERT, certfile)
        if keyfile:
            curl.setopt(pycurl.SSLKEY, keyfile)


def _final_head(data: bytes):
    """(status, reason, headers) of the final response head in ``data``: the first complete head
    with a status of 200 or more (1xx heads come before it, chunked trailers after it); Nones when
    none arrived whole."""
    for block in data.split(b"\r\n\r\n")[:-1]:  # the part after the last blank line is not complete
        lines = block.decode("latin-1").split("\r\n")
        status_line = lines[0].split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/") or not status_line[1].isdigit():
            continue
        status = int(status_line[1])
        if status < 200:
            continue
        fields = requests.structures.CaseInsensitiveDict()
        name = None
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and name is not None:  # an obsolete folded continuation line
                fields[name] = f"{fields[name]} {line.strip()}"
                continue
            name, sep, value = line.partition(":")
            if not sep:
                name = None
                continue
            name, value = name.strip(), value.strip()
            fields[name] = f"{fields[name]}, {value}" if name in fields else value
        return status, status_line[2] if len(status_line) > 2 else "", fields
    return None, None, None


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
        chunk = bytes(self._data[self._pos:end])
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
