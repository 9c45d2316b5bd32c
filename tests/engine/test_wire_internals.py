"""The urllib3 and http.client internals listed in resumable/wire.py, checked on real responses.

At run time the engine falls back to slower public paths when one of them is missing or means
something else, so nothing else would notice: each check here fails, naming the attribute and
the urllib3 version, instead of letting a silent slow fallback pass.
"""

from __future__ import annotations

import http.client
import io
import socket
import sys

import pytest
import urllib3

from engine_helpers import make_file
from resumable import wire, zerocopy
from resumable.http import new_session

SIZE = 3 << 20


def require(condition: bool, what: str) -> None:
    assert condition, f"urllib3 {urllib3.__version__}: {what} (see resumable/wire.py)"


def get(session, url: str):
    return session.get(url, stream=True, headers={"Accept-Encoding": "identity"})


@pytest.fixture()
def big(served):
    srv, root = served
    make_file(root / "f.bin", SIZE)
    return srv, srv.url("f.bin")


def test_a_plain_body_is_read_from_http_clients_socket_file(big):
    _, url = big
    with new_session() as session, get(session, url) as resp:
        raw = resp.raw
        require(hasattr(raw, "_fp"), "urllib3.response.HTTPResponse._fp is gone")
        hr = raw._fp
        require(isinstance(hr, http.client.HTTPResponse),
                f"urllib3.response.HTTPResponse._fp is a {type(hr).__name__}, not an http.client.HTTPResponse")
        require(getattr(raw, "_fp_bytes_read", None) == 0,
                "urllib3.response.HTTPResponse._fp_bytes_read is gone or not 0 before the body is read")
        require(hasattr(raw, "_decoded_buffer") and len(raw._decoded_buffer) == 0,
                "urllib3.response.HTTPResponse._decoded_buffer is gone or not empty before the body is read")
        require(hr.chunked is False, "http.client.HTTPResponse.chunked is not False for a Content-Length body")
        require(hr.length == SIZE, f"http.client.HTTPResponse.length is {hr.length!r}, not the Content-Length")
        fp = hr.fp
        require(isinstance(fp, io.BufferedReader) and hasattr(fp, "readinto1") and hasattr(fp, "peek"),
                f"http.client.HTTPResponse.fp is a {type(fp).__name__}, not a buffered socket file")
        require(wire.plain_body(resp) == (fp, SIZE), "wire.plain_body fell back to urllib3's read1 on a plain body")

        first = raw.read1(1000, decode_content=False)
        require(raw._fp_bytes_read == len(first),
                "urllib3.response.HTTPResponse._fp_bytes_read does not count the body bytes urllib3 read")
        require(hr.length == SIZE - len(first), "http.client.HTTPResponse.length does not count the bytes left")
        require(wire.plain_body(resp) is None, "wire.plain_body offers a body that urllib3 already started reading")


def test_the_socket_under_the_socket_file_is_the_connections(big):
    _, url = big
    with new_session() as session, get(session, url) as resp:
        fp = resp.raw._fp.fp
        require(isinstance(fp.raw, socket.SocketIO), f"the raw file under http.client's fp is a {type(fp.raw).__name__}")
        sock = wire.socket_of(fp)
        require(type(sock) is socket.socket, f"socket.SocketIO._sock is {type(sock).__name__}, not a socket")
        require(sock is resp.raw.connection.sock, "socket.SocketIO._sock is not the connection's socket")
        if sys.platform.startswith("linux"):
            require(zerocopy.body_socket(fp) is sock, "zerocopy.body_socket finds no socket: splice is never used")


def test_a_body_read_around_urllib3_hands_its_connection_back(big):
    _, url = big
    with new_session(1) as session:
        resp = get(session, url)
        sock = resp.raw.connection.sock
        fp, left = wire.plain_body(resp)
        buf = memoryview(bytearray(left))
        got = 0
        while got < left:
            n = fp.readinto1(buf[got:])
            assert n, "the body ended early"
            got += n
        hr = resp.raw._fp
        wire.end_plain_body(resp)
        require(hr.fp is None, "http.client.HTTPResponse._close_conn() did not end the body")
        require(resp.raw.connection is None, "HTTPResponse.release_conn() kept the connection")
        resp.close()
        with get(session, url) as again:
            require(again.raw.connection.sock is sock,
                    "the next request opened a new connection: wire.end_plain_body lost keep-alive")


def test_a_chunked_body_is_left_to_urllib3(big):
    srv, url = big
    srv.fault("f.bin", chunked=True)
    with new_session() as session, get(session, url) as resp:
        require(resp.raw._fp.chunked is True, "http.client.HTTPResponse.chunked is not True for a chunked body")
        require(wire.plain_body(resp) is None, "wire.plain_body offers a chunked body")


def test_sessions_open_the_guarded_connection_pools(big):
    _, url = big
    require(set(urllib3.PoolManager().pool_classes_by_scheme) == {"http", "https"},
            "urllib3.PoolManager.pool_classes_by_scheme is gone or changed")
    with new_session() as session:
        pool = session.get_adapter(url).poolmanager.connection_from_url(url)
        require(pool.ConnectionCls.getresponse is not urllib3.connection.HTTPConnection.getresponse,
                "urllib3.PoolManager.pool_classes_by_scheme no longer decides the pool class: the speed "
                "watchdog cannot see a response head that never finishes")
