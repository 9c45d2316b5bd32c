"""deployments/README.md's claims about up.sh and down.sh that test_up_script.py leaves out, with the
same kind of stand-in ``prefect`` command on PATH (its 'server' answers /api/health on the port it is
given, its 'worker' runs until signalled; the real sequence with a real Prefect server is
test_deploy_e2e.py's):

- with ``PREFECT_API_URL`` set: a local address where nothing listens gets a server started there
  (down.sh stops it); a local port held by something that is not a Prefect server, and another host
  that does not answer, are one-line errors; a server that answers is used and down.sh leaves it
  running;
- run twice, up.sh reuses what runs (server, work pool, worker) and says so in each line;
  ``TRAIN_PIPELINE_STATE_DIR`` moves the pid and log files, for up.sh and down.sh alike;
- the server and worker run in process groups of their own;
- down.sh falls back to SIGTERM, then SIGKILL of the process group, when SIGINT does not end a
  process. Its waits are counted in ``sleep 0.5`` polls (60 for the 30 s, 30 for the 15 s after
  SIGTERM); here a ``sleep`` on PATH makes each poll 0.02 s, so the order and the group kill are
  checked in about two seconds instead of 45 (the other tests poll every 0.1 s);
- prefect.yaml's job variables give the worker's flow runs the result storage a local run in the
  checkout uses.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deploy_helpers import PROJECT_ROOT, alive, free_port

STUB = r'''#!/usr/bin/env bash
# A stand-in for the prefect command: just what deployments/up.sh and down.sh call.
case "$1 $2" in
    "server start")
        port=4200
        while [ $# -gt 0 ]; do [ "$1" = "--port" ] && port="$2"; shift; done
        exec "$PY" "$STUB_DIR/health.py" "$port" ;;
    "work-pool inspect") [ -f "$STUB_DIR/pool-created" ]; exit $? ;;
    "work-pool create") touch "$STUB_DIR/pool-created"; exit 0 ;;
    "--no-prompt deploy") echo "Deployment 'train-pipeline/default'"; echo "Deployment 'train-pipeline/qwen2-vl-2b'"; exit 0 ;;
    "worker start") echo "Worker started"; exec "$PY" "$STUB_DIR/worker.py" ;;
esac
echo "stub prefect: unexpected: $*" >&2
exit 2
'''

HEALTH = '''import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/api/health" else 404)
        self.end_headers()
        self.wfile.write(b"true")
    def log_message(self, *a):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''

# The worker, and a child of its (in its process group, as a real worker's flow-run processes are).
# Each writes the signals it receives to $STUB_DIR/<role>.signals; those named in $STUB_IGNORE it
# then ignores (a worker stuck in a flow run, say), any other ends it. The worker ends its child.
WORKER = '''import os, signal, subprocess, sys, time
role = sys.argv[1] if len(sys.argv) > 1 else "worker"
stub = os.environ["STUB_DIR"]
ignored = [s for s in os.environ.get("STUB_IGNORE", "").split(",") if s]

def on_signal(sig, frame):
    name = signal.Signals(sig).name[3:]
    with open(os.path.join(stub, role + ".signals"), "a") as f:
        f.write(name + "\\n")
    if name not in ignored:
        raise SystemExit(0)

for name in ("INT", "TERM"):
    signal.signal(getattr(signal, "SIG" + name), on_signal)
child = subprocess.Popen([sys.executable, __file__, "child"]) if role == "worker" else None
with open(os.path.join(stub, role + ".ready"), "w") as f:
    f.write(str(os.getpid()))
try:
    while True:
        time.sleep(600)
finally:
    if child is not None:
        child.terminate()
        child.wait()
'''


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args):
        pass


class _NotPrefect(_Health):
    status = 404  # listens, answers, but is no Prefect server


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a port probe that connects and closes is no error


@pytest.fixture
def listening():
    """``listening(handler)``: an HTTP server on a free port of 127.0.0.1 (someone else's); its port."""
    started: list = []

    def serve(handler=_Health) -> int:
        httpd = _QuietServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append(httpd)
        return httpd.server_address[1]

    try:
        yield serve
    finally:
        for httpd in started:
            httpd.shutdown()
            httpd.server_close()


@pytest.fixture
def checkout(tmp_path):
    """A copy of up.sh/down.sh with the stand-in prefect on PATH; down.sh (and, should a test have
    failed half-way, a SIGKILL to each process group it left) at the end."""
    root = tmp_path / "clone"
    (root / "deployments").mkdir(parents=True)
    for name in ("up.sh", "down.sh"):
        (root / "deployments" / name).write_bytes((PROJECT_ROOT / "deployments" / name).read_bytes())
    (root / "prefect.yaml").write_text("deployments: []\n")
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, text in (("prefect", STUB), ("health.py", HEALTH), ("worker.py", WORKER)):
        (stubs / name).write_text(text)
    (stubs / "prefect").chmod(0o755)
    _sleep_shim(stubs, 0.1)  # the scripts poll every 0.5 s: every 0.1 s here
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TRAIN_PIPELINE_"))}
    env.update(PATH=f"{stubs}:{env['PATH']}", PY=sys.executable, PYTHON=sys.executable, STUB_DIR=str(stubs))
    try:
        yield root, env
    finally:
        for state in (root / ".prefect", tmp_path / "state"):
            if state.is_dir():
                subprocess.run(["bash", str(root / "deployments" / "down.sh")], cwd=root, capture_output=True, timeout=120,
                               env={**env, "TRAIN_PIPELINE_STATE_DIR": str(state)})
        # down.sh removes the pid file of each process it stopped: a file left names a group still running.
        for pidfile in (*tmp_path.rglob("server.pid"), *tmp_path.rglob("worker.pid")):
            _kill_group(int(pidfile.read_text()))


def _sleep_shim(folder: Path, seconds: float) -> None:
    """A ``sleep`` on PATH that waits ``seconds`` whatever it is asked (up.sh and down.sh poll with
    ``sleep 0.5``; their limits are counted in polls)."""
    shim = folder / "sleep"
    shim.write_text(f"#!/bin/sh\nexec {shutil.which('sleep')} {seconds}\n")
    shim.chmod(0o755)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # up.sh made each of them the leader of its own group
    except (ProcessLookupError, PermissionError):
        pass


def _script(name: str, root: Path, env: dict, **extra: str) -> subprocess.CompletedProcess:
    """deployments/NAME; after an up.sh that started a worker, once the stand-in worker and its child
    have their signal handlers in place (a signal before that would find Python's defaults)."""
    r = subprocess.run(["bash", f"deployments/{name}"], cwd=root, env={**env, **extra}, capture_output=True,
                       text=True, timeout=120)
    if name == "up.sh" and r.returncode == 0 and "worker started" in r.stdout:
        for role in ("worker", "child"):
            _ready(Path(env["STUB_DIR"]), role)
    return r


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def _pid(state: Path, name: str) -> int:
    return int((state / f"{name}.pid").read_text())


@pytest.mark.slow
def test_a_local_prefect_api_url_where_nothing_listens_gets_a_server_there(checkout):
    root, env = checkout
    port = free_port()
    up = _script("up.sh", root, env, PREFECT_API_URL=f"http://127.0.0.1:{port}/api")
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"up.sh: starting a Prefect server on 127.0.0.1:{port}" in up.stdout
    assert (root / ".prefect" / "api_url").read_text().strip() == f"http://127.0.0.1:{port}/api"
    assert _answers(port)
    server = _pid(root / ".prefect", "server")

    down = _script("down.sh", root, env, PREFECT_API_URL=f"http://127.0.0.1:{port}/api")
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"down.sh: stopped server (pid {server})" in down.stdout  # up.sh started it: down.sh stops it
    assert not alive(server) and not _answers(port)


@pytest.mark.parametrize("where", ["a local port held by something else", "another host"])
def test_a_prefect_api_url_that_does_not_answer_is_refused_in_one_line(checkout, listening, where):
    root, env = checkout
    if where == "another host":
        url = "http://prefect.invalid:4200/api"  # .invalid never resolves (RFC 2606)
        expected = f"up.sh: error: no Prefect server answers at {url}; start it, or unset PREFECT_API_URL for a local one"
    else:
        url = f"http://127.0.0.1:{listening(_NotPrefect)}/api"
        expected = (f"up.sh: error: PREFECT_API_URL={url}: port {url.split(':')[2].split('/')[0]} is taken by something "
                    "that is not a Prefect server; choose another port in PREFECT_API_URL")
    up = _script("up.sh", root, env, PREFECT_API_URL=url)
    assert up.returncode == 1
    assert up.stderr.strip().splitlines() == [expected], up.stderr
    assert not (root / ".prefect" / "server.pid").exists() and not (root / ".prefect" / "worker.pid").exists()


@pytest.mark.slow
def test_down_leaves_a_server_it_did_not_start_running(checkout, listening):
    root, env = checkout
    port = listening()
    url = f"http://127.0.0.1:{port}/api"
    up = _script("up.sh", root, env, PREFECT_API_URL=url)
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"using the Prefect server at {url} (PREFECT_API_URL)" in up.stdout
    worker = _pid(root / ".prefect", "worker")

    down = _script("down.sh", root, env, PREFECT_API_URL=url)
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"down.sh: stopped worker (pid {worker})" in down.stdout
    assert "down.sh: no server started by up.sh" in down.stdout
    assert not alive(worker)
    assert _answers(port)  # yours, still running
    assert "SIGTERM" not in down.stderr and _signals(Path(env["STUB_DIR"]), "worker") == ["INT"]  # stopped by SIGINT


@pytest.mark.slow
def test_up_twice_reuses_what_runs_says_what_it_did_and_keeps_its_files_in_the_state_dir(checkout, tmp_path):
    """Run twice, up.sh reuses the server, pool and worker; with TRAIN_PIPELINE_STATE_DIR its pid and
    log files go there (not <checkout>/.prefect), for down.sh too."""
    root, env = checkout
    port, state = free_port(), tmp_path / "state"
    env = {**env, "PREFECT_SERVER_API_PORT": str(port)}
    first = _script("up.sh", root, env, TRAIN_PIPELINE_STATE_DIR=str(state))
    assert first.returncode == 0, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    assert lines[0] == f"up.sh: starting a Prefect server on 127.0.0.1:{port} (log: {state}/server.log)"
    assert "up.sh: created work pool train-pipeline-process (process)" in lines
    assert "up.sh: deployed Deployment 'train-pipeline/default' Deployment 'train-pipeline/qwen2-vl-2b' " in lines
    server, worker = _pid(state, "server"), _pid(state, "worker")
    assert f"up.sh: worker started on pool train-pipeline-process (pid {worker}, log: {state}/worker.log)" in lines
    assert lines[-3:] == [f"up.sh: ready (the server's address is also in {state}/api_url). In this shell:",
                          f"  export PREFECT_API_URL=http://127.0.0.1:{port}/api",
                          f"  prefect deployment run train-pipeline/default      # UI: http://127.0.0.1:{port}"]
    assert {p.name for p in state.iterdir()} >= {"server.pid", "server.log", "worker.pid", "worker.log", "deploy.log",
                                                 "api_url"}
    assert not (root / ".prefect").exists()
    # Each in a process group of its own: a Ctrl-C in the terminal that ran up.sh reaches neither.
    assert os.getpgid(server) == server and os.getpgid(worker) == worker
    assert os.getpgid(0) not in (server, worker)

    second = _script("up.sh", root, env, TRAIN_PIPELINE_STATE_DIR=str(state))
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"up.sh: using the Prefect server up.sh started earlier at http://127.0.0.1:{port}/api (pid {server})" \
        in second.stdout
    assert "up.sh: work pool train-pipeline-process exists" in second.stdout
    assert f"up.sh: worker already running (pid {worker})" in second.stdout
    assert (_pid(state, "server"), _pid(state, "worker")) == (server, worker)

    # down.sh without the setting finds nothing of up.sh's; with it, stops both.
    assert _script("down.sh", root, env).stdout.splitlines() == ["down.sh: no worker started by up.sh",
                                                                 "down.sh: no server started by up.sh"]
    assert alive(server) and alive(worker)
    down = _script("down.sh", root, env, TRAIN_PIPELINE_STATE_DIR=str(state))
    assert down.returncode == 0, down.stdout + down.stderr
    assert down.stdout.splitlines() == [f"down.sh: stopped worker (pid {worker})", f"down.sh: stopped server (pid {server})"]
    assert not alive(server) and not alive(worker) and not _answers(port)
    assert not (state / "server.pid").exists() and not (state / "worker.pid").exists()


@pytest.fixture
def quick_sleep(checkout, tmp_path):
    """down.sh's 0.5 s polls 25 times faster: its 30 s and 15 s waits take 1.2 s and 0.6 s."""
    _sleep_shim(tmp_path / "bin", 0.02)
    return checkout


def _ready(stub_dir: Path, role: str) -> int:
    """The pid of the stand-in worker (or its child) once its signal handlers are in place."""
    ready = stub_dir / f"{role}.ready"
    for _ in range(600):
        if ready.is_file() and ready.read_text():
            return int(ready.read_text())
        subprocess.run(["sleep", "0.1"])
    raise AssertionError(f"the stand-in {role} did not start")


def _signals(stub_dir: Path, role: str) -> list[str]:
    path = stub_dir / f"{role}.signals"
    return path.read_text().split() if path.is_file() else []


@pytest.mark.slow
def test_down_falls_back_to_sigterm_then_sigkill_of_the_process_group(quick_sleep):
    """A worker (and its child) ignoring SIGINT and SIGTERM, as one stuck in a flow run: down.sh sends
    SIGINT to the worker, then SIGTERM and SIGKILL to its process group. Each stand-in records the
    signals it receives: SIGINT reached the worker alone, SIGTERM its child too, SIGKILL ended both."""
    root, env = quick_sleep
    env = {**env, "STUB_IGNORE": "INT,TERM"}
    stub_dir = Path(env["STUB_DIR"])
    up = _script("up.sh", root, env, PREFECT_SERVER_API_PORT=str(free_port()))
    assert up.returncode == 0, up.stdout + up.stderr
    state = root / ".prefect"
    worker, server = _pid(state, "worker"), _pid(state, "server")
    assert _ready(stub_dir, "worker") == worker  # (already waited for by _script)
    child = _ready(stub_dir, "child")
    assert os.getpgid(child) == worker

    down = _script("down.sh", root, env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert [line for line in down.stderr.splitlines() if line.startswith("down.sh: worker")] == [
        f"down.sh: worker (pid {worker}) still running after SIGINT; sending SIGTERM",
        f"down.sh: worker (pid {worker}) still running; sending SIGKILL"]
    assert _signals(stub_dir, "worker") == ["INT", "TERM"]  # SIGINT to the worker, SIGTERM to...
    assert _signals(stub_dir, "child") == ["TERM"]          # ...its whole group (SIGKILL leaves no trace)
    assert not alive(worker) and not alive(child)
    assert f"down.sh: stopped worker (pid {worker})" in down.stdout
    assert f"down.sh: stopped server (pid {server})" in down.stdout and not alive(server)  # then the server, by SIGINT


def test_the_worker_and_a_local_run_in_the_checkout_share_one_result_storage(tmp_path, monkeypatch):
    """deployments/README.md: prefect.yaml's job variables give every flow run of the worker the result
    storage that `python flows/pipeline.py` in the same checkout uses by default (one task cache)."""
    import yaml

    from train_pipeline.config import SAMPLE_CONFIG, load_config

    spec = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    assert [step["prefect.deployments.steps.run_shell_script"]["script"] for step in spec["build"]] == ["pwd"]
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for d in spec["deployments"]:
        env = d["work_pool"]["job_variables"]["env"]
        worker = env["TRAIN_PIPELINE_RESULT_STORAGE"].replace("{{ checkout.stdout }}", str(checkout))
        monkeypatch.chdir(checkout)
        monkeypatch.delenv("TRAIN_PIPELINE_RESULT_STORAGE", raising=False)  # a shell in the checkout
        local = load_config(SAMPLE_CONFIG).result_storage_ref()
        assert Path(worker) == local == checkout / "results" / ".prefect-results", d["name"]
