"""The one-connection fast path (the kernel splices a plain-HTTP body from the socket into the
file; the hashing thread reads each region once, right behind it) and the ordinary read path it
falls back to: same bytes, every byte hashed once, resumable where it stopped."""

from __future__ import annotations

import os
import socket
import sys
import threading

import pytest

import resumable.hashes
from engine_helpers import make_file, sha256_of
from resumable import fetch, zerocopy

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="splice(2) is Linux only")


@pytest.fixture
def spliced(monkeypatch):
    """Bytes moved by splice, per call of zerocopy.splice_into."""
    moved: list[int] = []
    real = zerocopy.splice_into

    def spy(sock, fd, pos, left, probe=None):
        moved.append(0)
        for n in real(sock, fd, pos, left, probe):
            moved[-1] += n
            yield n

    monkeypatch.setattr(zerocopy, "splice_into", spy)
    return moved


@pytest.fixture
def read_back(monkeypatch):
    """(start, end) of every region the hashing read back from the file."""
    regions: list[tuple[int, int]] = []
    real = resumable.hashes.update_from_fd

    def spy(h, fd, start=0, end=None, buf=None):
        n = real(h, fd, start, end, buf)
        regions.append((start, start + n))
        return n

    monkeypatch.setattr(resumable.hashes, "update_from_fd", spy)
    return regions


def assert_disjoint(regions):
    ordered = sorted(regions)
    assert all(a[1] <= b[0] for a, b in zip(ordered, ordered[1:])), ordered


def test_plain_http_body_is_spliced_and_each_byte_read_back_once(served, tmp_path, spliced, read_back):
    srv, root = served
    size = 9 << 20
    digest = make_file(root / "f.bin", size)
    result = fetch(srv.url("f.bin"), tmp_path / "f.bin", hash=digest, progress=False)
    assert result.digest == f"sha256:{digest}" and sha256_of(result.path) == digest
    # All but what http.client buffered with the headers went socket -> pipe -> file.
    assert len(spliced) == 1 and size - 64 * 1024 <= spliced[0] < size
    assert_disjoint(read_back)
    assert sum(b - a for a, b in read_back) == spliced[0]  # hashed from the page cache once each
    assert read_back[-1][1] == size


def test_cut_spliced_body_resumes_and_reads_the_prefix_once(served, tmp_path, spliced, read_back):
    srv, root = served
    size = 6 << 20
    digest = make_file(root / "f.bin", size)
    srv.fault("f.bin", cut_after=2 << 20)
    result = fetch(srv.url("f.bin"), tmp_path / "f.bin", hash=digest, retry_delay=0.01, progress=False)
    assert sha256_of(result.path) == digest and result.bytes_transferred == size
    assert [r.status for r in srv.log] == [200, 206] and srv.log[1].range == f"bytes={2 << 20}-"
    assert len(spliced) == 2 and sum(spliced) > size - 128 * 1024
    # The resumed attempt hashes the 2 MiB prefix once, then only new bytes: nothing twice.
    resumed = [r for r in read_back if r[0] == 0]
    assert resumed[-1] == (0, 2 << 20)
    assert_disjoint(read_back[read_back.index((0, 2 << 20)):])


def test_chunked_body_is_read_the_ordinary_way_and_resumes(served, tmp_path, spliced):
    srv, root = served
    size = 3 << 20
    digest = make_file(root / "f.bin", size)
    srv.fault("f.bin", chunked=True, cut_after=1 << 20)
    srv.fault("f.bin", chunked=True)
    result = fetch(srv.url("f.bin"), tmp_path / "f.bin", hash=digest, retry_delay=0.01, progress=False)
    assert sha256_of(result.path) == digest
    assert [r.status for r in srv.log] == [200, 206] and srv.log[1].range.startswith("bytes=")
    assert spliced == []  # chunked framing must be decoded: no splice


def test_a_file_that_refuses_splice_gets_a_copy_instead(tmp_path):
    # splice(2) refuses O_APPEND files (EINVAL): the bytes already in the pipe are copied instead.
    data = os.urandom(3 << 20)
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    conn, _ = listener.accept()
    sender = threading.Thread(target=lambda: (conn.sendall(data), conn.close()))
    sender.start()
    out = tmp_path / "out.bin"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        client.settimeout(10)
        moved = sum(zerocopy.splice_into(client, fd, 0, len(data)))
    finally:
        os.close(fd)
        sender.join()
        client.close()
        listener.close()
    assert moved == len(data) and out.read_bytes() == data


def test_a_stalled_socket_times_out_instead_of_hanging(tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    conn, _ = listener.accept()
    fd = os.open(tmp_path / "out.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        conn.sendall(b"x" * 1000)
        client.settimeout(0.3)
        got = []
        with pytest.raises(zerocopy.SocketError) as info:
            for n in zerocopy.splice_into(client, fd, 0, 5000):
                got.append(n)
        assert sum(got) == 1000 and isinstance(info.value.error, TimeoutError)
    finally:
        os.close(fd)
        conn.close()
        client.close()
        listener.close()


def test_a_body_of_one_read_is_not_spliced(served, tmp_path, spliced):
    # A pipe and its system calls gain nothing for a body that arrives in one read.
    srv, root = served
    digest = make_file(root / "small.bin", 512 * 1024)
    assert fetch(srv.url("small.bin"), tmp_path / "small.bin", hash=digest, progress=False).status == "downloaded"
    assert spliced == []
