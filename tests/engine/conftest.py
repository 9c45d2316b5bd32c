from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from engine_helpers import free_port, stop, wait_for_port
from offline.file_server import FileServer


def _file_server(root):
    root.mkdir()
    with FileServer(root) as srv:
        yield srv, root


@pytest.fixture()
def served(tmp_path):
    """A FileServer over ``tmp_path/srv``; yields (server, root)."""
    yield from _file_server(tmp_path / "srv")


@pytest.fixture()
def second_server(tmp_path):
    """Another origin (its own port): for cross-host redirects."""
    yield from _file_server(tmp_path / "srv2")


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
        stop(proc)


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
        try:
            wait_for_port(port)
        except RuntimeError:
            proc.kill()
            pytest.fail(f"nginx did not start: {proc.stderr.read().decode()[-500:]}")
        yield f"http://127.0.0.1:{port}", root, base / "access.log"
    finally:  # whatever failed: nginx (master and worker) does not outlive the session
        stop(proc)
        # The files tests served (100 MiB and more) are not kept with the basetemp of a session that
        # failed; nginx's own logs are.
        shutil.rmtree(root, ignore_errors=True)
