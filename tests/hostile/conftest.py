"""The attack suite's servers: FileServer (offline/file_server.py) misbehaves on demand
(lying lengths, trickles, endless bodies, chosen names, redirects); a second one is another origin."""

from __future__ import annotations

import hashlib
import os
import random
import socket
import threading
from pathlib import Path

import pytest

from offline.file_server import FileServer


def write_random(path: Path, size: int, seed: int = 0) -> str:
    """``size`` reproducible bytes at ``path``; returns their sha256 hex."""
    data = random.Random(seed).randbytes(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(name="write_random")
def write_random_fixture():
    return write_random


def _serve(root: Path):
    root.mkdir()
    with FileServer(root) as srv:
        yield srv, root


@pytest.fixture()
def files(tmp_path):
    """A FileServer over ``tmp_path/www``; yields (server, root)."""
    yield from _serve(tmp_path / "www")


@pytest.fixture()
def other_origin(tmp_path):
    """Another FileServer (its own port, so another origin): it records the headers it receives."""
    yield from _serve(tmp_path / "elsewhere")


@pytest.fixture()
def raw_server():
    """A server that answers every connection with ``reply(sock, request_head)``: for what no real
    server sends. Yields ``start(reply) -> base URL``."""
    servers = []

    def start(reply) -> str:
        srv = socket.create_server(("127.0.0.1", 0))
        servers.append(srv)

        def loop():
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                with conn:
                    head = conn.recv(65536)
                    try:
                        reply(conn, head)
                    except OSError:
                        pass

        threading.Thread(target=loop, daemon=True).start()
        return f"http://127.0.0.1:{srv.getsockname()[1]}"

    try:
        yield start
    finally:
        for srv in servers:
            srv.close()


@pytest.fixture()
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root only): a full disk on demand."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "small"
    mount.mkdir()
    if os.system(f"mount -t tmpfs -o size=4m tmpfs {mount} 2>/dev/null") != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        os.system(f"umount -l {mount}")
