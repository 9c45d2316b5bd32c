"""deployments/up.sh picks its server as the README says (issue 16, item 7), checked cheaply with a
stand-in ``prefect`` command on PATH (its 'server' answers /api/health, its 'worker' waits for a
signal): without PREFECT_API_URL it never uses a server someone else started on 127.0.0.1:4200 --
it starts its own on a free port and says so --, it refuses a taken PREFECT_SERVER_API_PORT with
one line, and a second up.sh reuses the server the first one started. The real sequence (a real
Prefect server) is test_deploy_e2e.py's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deploy_helpers import PROJECT_ROOT, free_port

STUB = r'''#!/usr/bin/env bash
# A stand-in for the prefect command: just what deployments/up.sh and down.sh call.
case "$1 $2" in
    "server start")
        port=4200
        while [ $# -gt 0 ]; do [ "$1" = "--port" ] && port="$2"; shift; done
        exec "$PY" "$STUB_DIR/health.py" "$port" ;;
    "work-pool inspect") exit 0 ;;
    "--no-prompt deploy") echo "Deployment 'train-pipeline/default'"; exit 0 ;;
    "worker start") echo "Worker started"; exec "$PY" -c "import time; time.sleep(600)" ;;
esac
echo "stub prefect: unexpected: $*" >&2
exit 2
'''

HEALTH = '''import os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

# Where the UI of a real server would look for its API: it must be this very port.
with open(os.path.join(os.environ["STUB_DIR"], "ui-api-port"), "w") as f:
    f.write(os.environ.get("PREFECT_SERVER_API_PORT", "unset"))

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/api/health" else 404)
        self.end_headers()
        self.wfile.write(b"true")
    def log_message(self, *a):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args):
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a port probe that connects and closes is not an error worth a traceback on stderr


@pytest.fixture
def foreign_server():
    """Something answering /api/health on a port: someone else's Prefect server, as up.sh sees it."""
    def serve(port: int):
        httpd = _QuietServer(("127.0.0.1", port), _Health)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append(httpd)
        return httpd

    started: list = []
    yield serve
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def checkout(tmp_path):
    root = tmp_path / "clone"
    (root / "deployments").mkdir(parents=True)
    for name in ("up.sh", "down.sh"):
        (root / "deployments" / name).write_bytes((PROJECT_ROOT / "deployments" / name).read_bytes())
    (root / "prefect.yaml").write_text("deployments: []\n")
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "prefect").write_text(STUB)
    (stubs / "prefect").chmod(0o755)
    (stubs / "health.py").write_text(HEALTH)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PATH=f"{stubs}:{env['PATH']}", PY=sys.executable, PYTHON=sys.executable, STUB_DIR=str(stubs))
    yield root, env
    subprocess.run(["bash", "deployments/down.sh"], cwd=root, env=env, capture_output=True, timeout=60)


def _up(root: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "deployments/up.sh"], cwd=root, env=env, capture_output=True, text=True, timeout=60)


def _taken(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@pytest.mark.slow
def test_without_prefect_api_url_a_server_on_4200_is_not_reused(checkout, foreign_server):
    root, env = checkout
    if not _taken(4200):
        foreign_server(4200)  # else someone's server already holds 4200: the case itself
    up = _up(root, env)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "127.0.0.1:4200 is taken" in up.stdout and "not using it" in up.stdout
    api_url = (root / ".prefect" / "api_url").read_text().strip()
    assert api_url.startswith("http://127.0.0.1:") and ":4200/" not in api_url
    assert f"export PREFECT_API_URL={api_url}" in up.stdout
    assert (root / ".prefect" / "server.pid").is_file()  # ours: down.sh stops it
    port = api_url.split(":")[2].split("/")[0]
    assert (Path(env["STUB_DIR"]) / "ui-api-port").read_text() == port  # the UI asks this server, not 4200

    again = _up(root, env)  # idempotent: the server the first up.sh started
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"using the Prefect server up.sh started earlier at {api_url}" in again.stdout
    assert (root / ".prefect" / "api_url").read_text().strip() == api_url


def test_a_taken_server_port_is_refused_in_one_line(checkout, foreign_server):
    root, env = checkout
    port = free_port()
    foreign_server(port)
    up = _up(root, {**env, "PREFECT_SERVER_API_PORT": str(port)})
    assert up.returncode == 1
    lines = up.stderr.strip().splitlines()
    assert lines == [f"up.sh: error: PREFECT_SERVER_API_PORT={port}: that port is taken (another server?); choose a "
                     "free port, or set PREFECT_API_URL to use the server there"], up.stderr
    assert not (root / ".prefect" / "server.pid").exists()


@pytest.mark.slow
def test_prefect_api_url_is_used_as_given(checkout, foreign_server):
    root, env = checkout
    port = free_port()
    foreign_server(port)
    up = _up(root, {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"})
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"using the Prefect server at http://127.0.0.1:{port}/api (PREFECT_API_URL)" in up.stdout
    assert not (root / ".prefect" / "server.pid").exists()  # not ours: down.sh leaves it alone
