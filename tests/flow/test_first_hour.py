"""The first hour of a new user (issue 16), as a script on a fresh clone (``git clone`` of this
repository; the installed environment through PYTHONPATH, nothing pip-installed): the README's
commands and what they print.

- ``python flows/pipeline.py``: the sample end to end with Prefect's temporary server, then again
  (everything cached): no ERROR and no Traceback anywhere, the last lines name the final model,
  the loss curve and metrics.jsonl (all in place, readable by others like every other output);
- ``python flows/pipeline.py --check`` of both profiles, offline;
- ``train-pipeline fetch`` interrupted with Ctrl-C against a server without Range support, then
  run again: what the interruption leaves and what the re-run does is said, once, on the default
  output;
- a wrong ``--hash``, a host that does not exist, the pipeline with a source nobody listens at:
  each one line that names the cause and the fix, a non-zero exit, no traceback.

The user's environment: the test session's PREFECT_* settings (and DO_NOT_TRACK) are taken out,
so Prefect's own defaults -- telemetry included -- are what the commands meet.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from train_pipeline.config import PROJECT_ROOT

pytestmark = pytest.mark.slow

WRONG_HASH = "sha256:" + "0" * 64
TRAINED = "tiny-qwen2-vl-outdoor_advertising_sample+billboard_parquet_sample"


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("first-hour") / "train-pipeline"
    subprocess.run(["git", "clone", "-q", str(PROJECT_ROOT), str(root)], check=True, timeout=120)
    return root


@pytest.fixture(scope="module")
def user_env(clone, tmp_path_factory) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "TRAIN_PIPELINE_")) and k != "DO_NOT_TRACK"}
    env.update(PYTHONPATH=str(clone), PREFECT_HOME=str(tmp_path_factory.mktemp("user-prefect-home")),
               COLUMNS="200")
    return env


def run(args: list[str], cwd: Path, env: dict, timeout: float = 300, terminal: bool = False
        ) -> subprocess.CompletedProcess:
    """``terminal``: stdout and stderr in one stream, in the order a terminal shows them."""
    return subprocess.run(args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT if terminal else subprocess.PIPE, text=True, timeout=timeout)


def cli(*args: str, cwd: Path, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "train_pipeline.cli", *args], cwd, env, timeout)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    """The run failed with exactly one 'error:' line on stderr, and no traceback; that line."""
    assert r.returncode != 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
    return errors[0]


def assert_quiet_success(r: subprocess.CompletedProcess) -> str:
    out = r.stdout + (r.stderr or "")
    assert r.returncode == 0, out[-4000:]
    assert "Traceback" not in out and "ERROR" not in out and "error:" not in out, out[-4000:]
    return out


def assert_outputs_named(shown: str, clone: Path) -> None:
    """The last three lines on the terminal (after Prefect's own last line) say where the outputs are."""
    last = shown.strip().splitlines()[-3:]
    named = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in last}
    results = clone / "results" / TRAINED
    assert named["final model"].split("  (")[0] == str(results / "final"), last
    assert "AutoProcessor needs torchvision" in named["final model"]  # how to load it on this machine
    assert named["loss curve"] == str(results / "loss_curve.png")
    assert named["metrics"] == str(results / "metrics.jsonl")
    for path in (results / "final" / "model.safetensors", results / "loss_curve.png", results / "metrics.jsonl"):
        assert path.is_file(), path


def test_the_readme_sample_run_then_a_cached_rerun(clone, user_env):
    t0 = time.monotonic()
    first = run([sys.executable, "flows/pipeline.py"], clone, user_env, terminal=True)
    first_s = time.monotonic() - t0
    out = assert_quiet_success(first)  # no telemetry ERROR from Prefect's temporary server
    assert "Starting temporary server" in out  # the user's case: no PREFECT_API_URL
    assert "3 item(s)" in first.stdout and "downloaded" in first.stdout
    assert_outputs_named(first.stdout, clone)
    # The final model is readable like every other output (safetensors itself writes 0600).
    final = clone / "results" / TRAINED / "final"
    modes = {stat.S_IMODE(p.stat().st_mode) for p in final.iterdir()}
    assert modes == {stat.S_IMODE((clone / "results" / TRAINED / "metrics.jsonl").stat().st_mode)}, modes

    t0 = time.monotonic()
    again = run([sys.executable, "flows/pipeline.py"], clone, user_env, terminal=True)
    again_s = time.monotonic() - t0
    assert_quiet_success(again)
    assert "3 item(s), 0 B transferred" in again.stdout
    rows = [line for line in again.stdout.splitlines() if line.startswith(("outdoor_", "hf://", "train-pipeline/"))]
    assert len(rows) == 3 and all(" cached " in row for row in rows), rows
    assert_outputs_named(again.stdout, clone)
    print(f"first run {first_s:.1f} s, cached re-run {again_s:.1f} s")


@pytest.mark.parametrize("profile", [None, "configs/qwen2-vl-2b.yaml"])
def test_check_of_both_profiles(clone, user_env, profile):
    args = [sys.executable, "flows/pipeline.py", *(["--config", profile] if profile else []), "--check"]
    r = run(args, clone, user_env, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stdout.strip() == f"{profile or 'configs/sample.yaml'}: OK"


@pytest.fixture
def no_range_server(tmp_path):
    """A server without Range support (as ``python -m http.server``), slow enough to interrupt."""
    from offline.file_server import FileServer

    root = tmp_path / "www"
    root.mkdir()
    (root / "big.bin").write_bytes(os.urandom(8 << 20))
    with FileServer(root, ranges=False) as srv:
        yield srv


def test_interrupted_fetch_from_a_server_without_range(clone, user_env, tmp_path, no_range_server):
    srv = no_range_server
    srv.fault("big.bin", rate=2 << 20)  # the first download: 2 MiB/s, interrupted below
    dest = tmp_path / "out" / "big.bin"
    proc = subprocess.Popen([sys.executable, "-m", "train_pipeline.cli", "fetch", srv.url("big.bin"), "-o", str(dest)],
                            cwd=clone, env=user_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    part = dest.parent / ".resumable" / "big.bin.part"
    deadline = time.monotonic() + 60
    while not (part.is_file() and part.stat().st_size >= 1 << 20):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    origin = srv.base_url
    assert err.strip().splitlines()[-1] == (
        f"interrupted: partial downloads are kept and resume on the next run, except from {origin}, which serves "
        "no byte ranges: those downloads start over from byte 0")

    r = cli("fetch", srv.url("big.bin"), "-o", str(dest), cwd=clone, env=user_env)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    said = [line for line in r.stderr.splitlines() if "does not serve byte ranges" in line]
    assert len(said) == 1 and said[0].startswith(f"WARNING big.bin: the server at {origin} does not serve byte ranges")
    assert "already here are downloaded again" in said[0]
    assert r.stderr.strip().splitlines()[-1].startswith(f"downloaded {dest} sha256:")


def test_wrong_hash_unreachable_host_and_dead_source_are_one_line_each(clone, user_env, tmp_path, no_range_server):
    srv = no_range_server
    # A wrong hash: two more downloads, each announced as what it is, then the cause and the fix.
    r = cli("fetch", srv.url("big.bin"), "-o", str(tmp_path / "big.bin"), "--hash", WRONG_HASH, cwd=clone, env=user_env)
    line = one_error_line(r)
    assert "expected " + WRONG_HASH.split(":")[1] in line and "gave up after 3 downloads" in line
    assert "the expected hash or size is wrong" in line and "correct it (--hash" in line
    notes = [x for x in r.stderr.splitlines() if x.startswith("WARNING") and "downloading it again" in x]
    assert [n.split("(download ")[1] for n in notes] == ["2 of at most 3 in this run)", "3 of at most 3 in this run)"]
    assert "retry 1/5" not in r.stderr

    # A host that does not exist: at once, the cause and what to check.
    t0 = time.monotonic()
    r = cli("fetch", "http://nonexistent.invalid/x.bin", "-o", str(tmp_path / "x.bin"), cwd=clone, env=user_env)
    assert time.monotonic() - t0 < 30
    assert one_error_line(r) == ("error: http://nonexistent.invalid/x.bin: the host name does not resolve (DNS); "
                                 "check the host in the URL and the network")

    # The pipeline with a source where nothing listens: before Prefect starts, naming what to edit.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    registry = tmp_path / "registry.yaml"
    registry.write_text(f"datasets:\n  - name: signs\n    description: test\n    files:\n"
                        f"      - url: http://127.0.0.1:{port}/signs.tar.gz\n")
    config = tmp_path / "mine.yaml"
    config.write_text(f"datasets: [signs]\nregistry: {registry}\ntrain: null\n")
    r = run([sys.executable, "flows/pipeline.py", "--config", str(config)], clone, user_env, timeout=120)
    line = one_error_line(r)
    assert "temporary server" not in r.stdout + r.stderr  # failed before Prefect started
    assert line.startswith("error: dataset 'signs': signs.tar.gz: no source can be reached")
    assert f"127.0.0.1:{port}" in line and line.endswith(f"of entry 'signs' in {registry}")
