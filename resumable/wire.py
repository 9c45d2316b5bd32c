"""The private details of urllib3 and http.client that the engine relies on, all in this module.

Checked against urllib3 2.2.3 and 2.7.0 (pyproject.toml allows ``urllib3>=2.2,<2.8``: 2.2 brought
``HTTPResponse.read1``) on CPython 3.11. tests/engine/test_wire_internals.py checks every one
of them on a real response and fails, naming it, when a release removes one or changes what it
means. At run time a missing detail only costs speed: the body is read through urllib3's public
``read1`` (no splice, no reads into reused buffers), and the connection is not reused.

urllib3.response.HTTPResponse (``resp.raw``):
  ``_fp``               the http.client.HTTPResponse underneath
  ``_fp_bytes_read``    body bytes urllib3 itself has read from it (0: none consumed yet)
  ``_decoded_buffer``   decoded bytes urllib3 holds but has not handed out yet
http.client.HTTPResponse:
  ``fp``, ``chunked``, ``length``   its buffered socket file, chunked framing, body bytes left
  ``_close_conn()``     what http.client does at the end of a body (the socket stays open for reuse)
socket.SocketIO (``fp.raw``):
  ``_sock``             the socket itself, which splice(2) reads (resumable.zerocopy)
ssl.SSLSocket:
  ``_sslobj``           its _ssl object, whose ``read(size, buffer)`` reads one record (body.py's fill)
urllib3.PoolManager:
  ``pool_classes_by_scheme``   the pool class per scheme (resumable.http's guarded connections;
                               not private by name, but undocumented)
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import requests


def plain_body(resp: requests.Response) -> tuple[io.BufferedReader, int | None] | None:
    """(socket file, body length or None) when the body can be read straight from the socket file.

    Only for a plain (not chunked, not decoded) body of http.client, read from its start;
    anything else goes through urllib3's ``read1`` (new bytes per read, same semantics).
    """
    raw = resp.raw
    hr = getattr(raw, "_fp", None)
    fp = getattr(hr, "fp", None)
    if (fp is None or getattr(hr, "chunked", True) or not hasattr(fp, "readinto1")
            or getattr(raw, "_fp_bytes_read", 0) != 0 or len(getattr(raw, "_decoded_buffer", b"") or b"")):
        return None
    length = getattr(hr, "length", 0)
    if length is not None and not isinstance(length, int):
        return None
    return fp, length


def end_plain_body(resp: requests.Response) -> None:
    """The whole body was read around http.client (``plain_body``): end it as http.client would
    and hand the connection back to the pool for the next request (keep-alive); if that is not
    possible the connection is simply closed with the response."""
    hr = resp.raw._fp
    try:
        hr.length = 0
        hr._close_conn()
        resp.raw.release_conn()
    except AttributeError:
        pass


def socket_of(fp) -> object | None:
    """The socket under http.client's socket file ``fp``, or None."""
    return getattr(getattr(fp, "raw", None), "_sock", None)


def tls_object(sock) -> object | None:
    """The _ssl object under ``sock`` (an ssl.SSLSocket), whose ``read(size, buffer)`` is what
    ``SSLSocket.recv_into`` calls through three Python frames; or None."""
    obj = getattr(sock, "_sslobj", None)
    return obj if callable(getattr(obj, "read", None)) else None


def set_pool_classes(poolmanager, classes: dict) -> None:
    """Make ``poolmanager`` open its connection pools with ``classes`` (scheme -> pool class)."""
    poolmanager.pool_classes_by_scheme = classes
