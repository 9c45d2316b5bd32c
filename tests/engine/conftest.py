from __future__ import annotations

import hashlib
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from train_pipeline.servers.files import FileServer


def make_file(path: Path, size: int, seed: int = 0) -> str:
    """Write ``size`` reproducible pseudo-random bytes; returns their sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = rng.randbytes(min(left, 4 << 20))
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture()
def served(tmp_path):
    """A FileServer over ``tmp_path/srv``; yields (server, root)."""
    root = tmp_path / "srv"
    root.mkdir()
    with FileServer(root) as srv:
        yield srv, root


@pytest.fixture()
def second_server(tmp_path):
    root = tmp_path / "srv2"
    root.mkdir()
    with FileServer(root) as srv:
        yield srv, root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture()
def stdlib_server(tmp_path):
    """Python's own ``http.server``: no Range support at all."""
    root = tmp_path / "plain"
    root.mkdir()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}", root
    finally:
        proc.terminate()
        proc.wait()


@pytest.fixture(scope="session")
def nginx(tmp_path_factory):
    """nginx on 127.0.0.1 serving a folder (installed by .ci/run)."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if binary is None:
        pytest.skip("nginx is not installed (.ci/run installs it)")
    base = tmp_path_factory.mktemp("nginx")
    root = base / "www"
    root.mkdir()
    port = free_port()
    conf = base / "nginx.conf"
    conf.write_text(f"""
daemon off;
{"user root;" if os.geteuid() == 0 else ""}
worker_processes 1;
pid {base}/nginx.pid;
error_log {base}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {base}/access.log;
    client_body_temp_path {base}/tmp; proxy_temp_path {base}/tmp; fastcgi_temp_path {base}/tmp;
    uwsgi_temp_path {base}/tmp; scgi_temp_path {base}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /slow/ {{ alias {root}/; limit_rate 2m; }}
    }}
}}
""")
    proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(base)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_for_port(port)
    except RuntimeError:
        proc.kill()
        pytest.fail(f"nginx did not start: {proc.stderr.read().decode()[-500:]}")
    yield f"http://127.0.0.1:{port}", root, base / "access.log"
    proc.terminate()
    proc.wait()
