"""HTTPS: the same guarantees over TLS (a certificate made for the test, trusted through
REQUESTS_CA_BUNDLE), where a read returns one TLS record at a time: the engine fills its buffer
with what is at hand, and a connection cut mid-body still loses no byte it received."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

import resumable
from offline.file_server import FileServer


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return str(cert), str(key)


@pytest.fixture()
def tls_server(tmp_path, certificate, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certificate[0])
    root = tmp_path / "srv"
    root.mkdir()
    data = os.urandom(24 << 20)
    (root / "big.bin").write_bytes(data)
    with FileServer(root, tls=certificate) as server:
        yield server, data


def test_a_file_over_https_arrives_whole_and_verified(tls_server, tmp_path):
    server, data = tls_server
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    r = resumable.fetch(server.url("big.bin"), tmp_path / "big.bin", hash=digest, progress=False)
    assert server.url("big.bin").startswith("https://")
    assert r.status == "downloaded" and r.digest == digest and (tmp_path / "big.bin").read_bytes() == data
    assert [q.method for q in server.log] == ["GET"]


@pytest.mark.slow
def test_a_cut_https_connection_resumes_from_the_last_byte_received(tls_server, tmp_path):
    server, data = tls_server
    cut = (10 << 20) + 12345  # not on a TLS record boundary
    server.fault("big.bin", cut_after=cut)
    r = resumable.fetch(server.url("big.bin"), tmp_path / "big.bin", size=len(data), retries=3, progress=False)
    assert r.status == "resumed" and (tmp_path / "big.bin").read_bytes() == data
    gets = [q for q in server.log if q.method == "GET"]
    assert gets[0].range is None and gets[0].bytes_sent == cut
    assert gets[1].range == f"bytes={cut}-"  # every byte of the cut response was kept
    # and no byte was fetched twice, however many more tries a busy machine needed (each one
    # continues from the last byte received, as the first did)
    assert r.bytes_transferred == len(data)
    assert all(q.range and int(q.range.removeprefix("bytes=").rstrip("-")) >= cut for q in gets[2:])


@pytest.mark.slow
def test_several_connections_over_https(tls_server, tmp_path):
    server, _ = tls_server
    data = os.urandom(80 << 20)  # segments are at least 32 MiB
    (server.root / "bigger.bin").write_bytes(data)
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    r = resumable.fetch(server.url("bigger.bin"), tmp_path / "bigger.bin", hash=digest, connections=3, progress=False)
    assert r.digest == digest and (tmp_path / "bigger.bin").read_bytes() == data
    assert sum(1 for q in server.log if q.method == "GET" and q.range) >= 2


def test_the_tls_object_that_fills_buffers_is_found(tls_server):
    """body.py fills its buffers through the _ssl object under the socket (wire.tls_object): at run
    time a missing one only costs speed (SSLSocket.recv_into), so a release that renames it fails here."""
    from resumable import wire
    from resumable.http import new_session

    server, data = tls_server
    with new_session() as session, session.get(server.url("big.bin"), stream=True,
                                               headers={"Accept-Encoding": "identity"}) as resp:
        fp, length = wire.plain_body(resp)
        sock = wire.socket_of(fp)
        obj = wire.tls_object(sock)
        assert obj is not None, "ssl.SSLSocket._sslobj is gone or has no read(size, buffer) (see resumable/wire.py)"
        head = fp.read(len(fp.peek(1)[:length]))  # what http.client buffered with the headers
        buf = bytearray(1 << 16)
        n = obj.read(len(buf), buf)
        assert 0 < n <= len(buf) and bytes(buf[:n]) == data[len(head):len(head) + n]


def test_a_large_https_body_is_written_around_the_page_cache(tls_server, tmp_path):
    """disk.DirectWriter: the 24 MiB body goes to the file with O_DIRECT (no copy into the page
    cache on the thread that decrypts), so next to none of the file's pages are cached afterwards;
    written through the page cache, all 24 MiB would be."""
    import shutil

    fincore = shutil.which("fincore")
    if fincore is None:
        pytest.skip("fincore (util-linux) is not installed")
    from resumable.disk import DirectWriter

    fd = os.open(tmp_path / "probe", os.O_RDWR | os.O_CREAT)
    try:
        if DirectWriter.start(fd, 0, None) is None:
            pytest.skip(f"the file system under {tmp_path} refuses O_DIRECT")
    finally:
        os.close(fd)
    server, data = tls_server
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    r = resumable.fetch(server.url("big.bin"), tmp_path / "big.bin", hash=digest, connections=1, progress=False)
    assert r.digest == digest and (tmp_path / "big.bin").read_bytes() == data
    # read_bytes above cached it all again: the check is on a second fetch's fresh file
    (tmp_path / "again").mkdir()
    resumable.fetch(server.url("big.bin"), tmp_path / "again" / "big.bin", hash=digest, connections=1,
                    progress=False)
    cached = int(subprocess.run([fincore, "--bytes", "--noheadings", "--output", "RES",
                                 str(tmp_path / "again" / "big.bin")], capture_output=True, text=True,
                                check=True).stdout.split()[0])
    assert cached <= 2 << 20, f"{cached} bytes of the 24 MiB file are in the page cache"


KILLED_CHILD = """
import sys
from resumable import fetch
fetch(sys.argv[1], sys.argv[2], size=int(sys.argv[3]), connections=1, progress=False, retry_delay=0.05)
"""


@pytest.mark.slow
def test_sigkill_while_the_server_stalls_loses_almost_nothing_written_around_the_page_cache(tls_server, tmp_path):
    """A body written with O_DIRECT (24 MiB, over 16): the server stalls at an unaligned offset,
    and what was read is in the file within DIRECT_FLUSH (64 KiB), though a staging buffer holds
    1 MiB; the SIGKILLed download resumes from its part file and ends byte-identical."""
    import sys

    from engine_helpers import kill_when
    from resumable.disk import DIRECT_FLUSH
    from resumable.state import part_path

    server, data = tls_server
    stall = (9 << 20) + (1 << 19) + 12345  # half a staging buffer past a full one, and unaligned
    hold = server.fault("big.bin", hold_after=stall, times=1)
    dest = tmp_path / "out" / "big.bin"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, server.url("big.bin"), str(dest), str(len(data))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    part = part_path(dest)
    try:
        assert hold.wait_held(60)
        kill_when(proc, lambda: part.exists() and part.stat().st_size > stall - DIRECT_FLUSH,
                  f"more than {stall - DIRECT_FLUSH} bytes in the part file")
    finally:
        proc.kill()
        proc.wait()
        server.clear_faults()
    proc.stderr.close()
    kept = part.stat().st_size
    assert stall - DIRECT_FLUSH < kept <= stall and part.read_bytes() == data[:kept]
    r = resumable.fetch(server.url("big.bin"), dest, size=len(data), progress=False)
    assert r.status == "resumed" and dest.read_bytes() == data
    assert [q.range for q in server.log if q.method == "GET"][-1] == f"bytes={kept}-"
