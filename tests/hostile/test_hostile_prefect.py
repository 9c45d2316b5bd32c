"""Hostile conditions on the Prefect side of the pipeline, through the real command line
(`python flows/pipeline.py --config FILE`, its own PREFECT_HOME, against the session's Prefect
server as a deployment's runs would be) and real HTTP servers on 127.0.0.1:

- whoever can write to the result storage must not run code in a later run: a stored record that
  is a pickle, JSON naming a class to import, garbage or data of the wrong shape is a cache miss
  with a warning, and the step runs again;
- a signed URL's secrets (query, userinfo) never reach Prefect's database, the result storage,
  the run's output or the engine's own records, whether the run succeeds or fails.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import pickle
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from offline.file_server import FileServer
from offline.hub_server import HubServer

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ARCHIVE = "labels.tar.gz"
REPO = "org/tiny"
STEPS = ("snapshot", "fetch", "verify", "extract")


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory) -> Path:
    """One PREFECT_HOME for this module's runs (the client side: settings, local storage)."""
    return tmp_path_factory.mktemp("hostile-prefect-home")


@pytest.fixture
def cli(tmp_path, prefect_home, prefect_server):
    """``run(config, name=..., pythonpath=...)``: the command line against the session's server
    (starting a temporary server per run would cost each run ~8 s and test nothing more here)."""
    return lambda config, **kw: run_cli(tmp_path, prefect_home, prefect_server.api_url, config, **kw)


@pytest.fixture
def files(tmp_path):
    """A file server holding a small tar.gz."""
    root = tmp_path / "served"
    root.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i in range(3):
            body = f"label {i}\n".encode()
            info = tarfile.TarInfo(f"labels/{i}.txt")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    (root / ARCHIVE).write_bytes(buf.getvalue())
    with FileServer(root) as server:
        yield server


@pytest.fixture
def hub(tmp_path):
    """A Hub-compatible server with one tiny model repository."""
    repo = tmp_path / "hub" / REPO
    repo.mkdir(parents=True)
    (repo / "config.json").write_text(json.dumps({"model_type": "tiny"}))
    (repo / "README.md").write_text("# tiny\n")
    with HubServer(tmp_path / "hub") as server:
        yield server


def _archive_spec(files) -> dict:
    data = (files.root / ARCHIVE).read_bytes()
    return {"size": len(data), "hash": "sha256:" + hashlib.sha256(data).hexdigest()}


def _config(tmp_path, **overrides) -> dict:
    cfg = {
        "train": None,
        "data_dir": str(tmp_path / "data"),
        "models_cache": str(tmp_path / "models_cache"),
        "results_dir": str(tmp_path / "results"),
        "result_storage": str(tmp_path / "result-storage"),
        "task_retries": 0,
        "retries": 0,
    }
    cfg.update(overrides)
    return cfg


def run_cli(tmp_path: Path, prefect_home: Path, api_url: str, config: dict, name: str = "pipeline",
            pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    """`python flows/pipeline.py --config FILE` in a fresh process on ``prefect_home``, talking to ``api_url``."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")
           and k not in ("TRAIN_PIPELINE_RESULT_STORAGE", "PYTHONPATH")}
    env.update({
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_URL": api_url,
        "PREFECT_LOCAL_STORAGE_PATH": str(prefect_home / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "DO_NOT_TRACK": "1",
        "COLUMNS": "200",  # Prefect's console: one line per record
    })
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "flows/pipeline.py", "--config", str(path)], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=280)


def task_states(output: str) -> dict[str, str]:
    """{step: final state name} from Prefect's console lines ("Task run 'fetch x' - Finished in state Cached(...)")."""
    found = re.findall(r"Task run '([a-z-]+)[^']*' - Finished in state (\w+)\(", output)
    return dict(found)


# -- A: no code execution from stored results -------------------------------------------------
MARKER_MODULE = "hostile_prefect_marker"


def _pickle_touching(marker: Path) -> bytes:
    """A pickle whose loading calls open(marker, "a"): the marker file appears."""

    class Touch:
        def __reduce__(self):
            return open, (str(marker), "a")

    return base64.encodebytes(pickle.dumps(Touch()))  # as Prefect's PickleSerializer stores it


def _hostile_records(marker: Path, blob: Path) -> list[bytes]:
    """Records an attacker with write access to the result storage plants: whole records as
    Prefect writes them by default, and metadata on its own (as Prefect writes it when a cache
    policy has a key storage) pointing at ``blob``, a planted pickle."""
    blob.write_bytes(_pickle_touching(marker))
    meta = {"storage_key": str(blob), "expiration": None, "prefect_version": "3.9.1", "storage_block_id": None}

    def record(serializer: dict, result: str) -> bytes:
        return json.dumps({"metadata": {**meta, "storage_key": None, "serializer": serializer}, "result": result}).encode()

    return [
        record({"type": "pickle", "picklelib": "cloudpickle"}, _pickle_touching(marker).decode()),
        record({"type": "json"}, json.dumps({"__class__": f"{MARKER_MODULE}.Payload", "data": {}})),  # imports it
        json.dumps({**meta, "serializer": {"type": "pickle", "picklelib": "cloudpickle"}}).encode(),
        json.dumps({**meta, "serializer": {"type": "pickle", "picklelib": MARKER_MODULE}}).encode(),  # imported when validated
    ]


def _plant(paths: list[Path], contents: list[bytes]) -> dict[Path, bytes]:
    """Each folder's files get the contents in turn (so each kind lands on some step's record)."""
    planted = {}
    for folder in sorted({p.parent for p in paths}):
        for i, path in enumerate(sorted(p for p in paths if p.parent == folder)):
            planted[path] = contents[i % len(contents)]
            path.write_bytes(planted[path])
    return planted


def _hostile_payloads(marker: Path) -> list[bytes]:
    """Result payloads (what a record's metadata points at) an attacker plants."""
    return [
        _pickle_touching(marker),
        json.dumps({"__class__": f"{MARKER_MODULE}.Payload", "data": {}}).encode(),
        b"\x00\xff" + os.urandom(64),
    ]


def _is_metadata(path: Path) -> bool:
    """A record's metadata on its own (Prefect keeps it apart from the result when a cache policy
    has a key storage): JSON with a top-level 'serializer'."""
    try:
        return "serializer" in json.loads(path.read_bytes())
    except (ValueError, TypeError):
        return False


def _assert_rerun_safely(run, marker: Path, planted: dict[Path, bytes]) -> None:
    out = run.stdout + run.stderr
    assert not marker.exists(), "a stored result ran code:\n" + out
    assert run.returncode == 0, out
    assert task_states(out) == dict.fromkeys(STEPS, "Completed"), out  # each step ran again, none Cached
    warnings = [line for line in out.splitlines() if "WARNING" in line and "cached result" in line]
    for step in STEPS:
        assert any(re.search(rf"\b{step}\b", line) for line in warnings), (step, out)
    for path, content in planted.items():
        assert path.read_bytes() != content, path  # overwritten by the step's new result


def test_hostile_stored_results_are_cache_misses_never_executed(tmp_path, cli, files, hub):
    marker = tmp_path / "EXECUTED"
    modules = tmp_path / "modules"
    modules.mkdir()
    # Importing this module (what Prefect does for a class or library a record names) leaves the marker.
    (modules / f"{MARKER_MODULE}.py").write_text(
        f"open({str(marker)!r}, 'a').close()\n\nclass Payload:\n    pass\n\ndumps = loads = repr\n")
    storage = tmp_path / "result-storage"
    cfg = _config(tmp_path, model={"repo_id": REPO, "endpoint": hub.endpoint},
                  datasets=[{"name": "labels", "extract_to": "labels",
                             "files": [{"url": files.url(ARCHIVE), **_archive_spec(files)}]}])

    first = cli(cfg, pythonpath=modules)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out
    assert task_states(out) == dict.fromkeys(STEPS, "Completed"), out
    stored = sorted(p for p in storage.rglob("*") if p.is_file())
    assert len(stored) >= len(STEPS), stored

    # 1. Every file of the result storage replaced by a hostile record (each kind lands on some step).
    blob = storage / "planted-pickle"
    planted = _plant(stored, _hostile_records(marker, blob))
    _assert_rerun_safely(cli(cfg, name="again", pythonpath=modules), marker, planted)
    blob.unlink()

    # 2. The records left as the run wrote them, the results they point at replaced: by another
    #    step's genuine result (data of the wrong type), a pickle, JSON naming a class, garbage.
    payloads = sorted(p for p in storage.rglob("*") if p.is_file() and not _is_metadata(p))
    assert len(payloads) == len(STEPS), payloads
    planted = _plant(payloads, [payloads[1].read_bytes()] + _hostile_payloads(marker))
    _assert_rerun_safely(cli(cfg, name="payloads", pythonpath=modules), marker, planted)

    # The cache is whole again: the next run is Cached throughout, without warnings.
    last = cli(cfg, name="last", pythonpath=modules)
    out = last.stdout + last.stderr
    assert last.returncode == 0, out
    assert task_states(out) == dict.fromkeys(STEPS, "Cached"), out
    assert "cached result" not in out
    assert not marker.exists()


# -- B: secrets stay secret -------------------------------------------------------------------
SECRETS = ("SECRETSIG123", "SECRETTOK456", "SECRETMIR789", "SECRETPW999")
SIGNED = "?X-Amz-Signature=SECRETSIG123&token=SECRETTOK456"


def _leaks(root: Path) -> list[str]:
    """Files under ``root`` whose bytes contain a secret (sqlite databases and their WAL included)."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path}: {s}" for s in SECRETS if s.encode() in data]
    return found


def test_signed_url_secrets_never_reach_prefect_storage_or_output(tmp_path, prefect_home, prefect_server, cli, files):
    # The server wants the credentials of the URL's userinfo: the flow must download with the
    # real URL, while Prefect keeps none of its secrets.
    files.require_auth(ARCHIVE, "Basic " + base64.b64encode(b"user:SECRETPW999").decode())
    url = files.url(ARCHIVE).replace("http://", "http://user:SECRETPW999@") + SIGNED
    mirror = "http://user:SECRETPW999@nonexistent.invalid/labels.tar.gz?sig=SECRETMIR789"
    ok = _config(tmp_path, datasets=[{"name": "labels", "extract_to": "labels", "files": [
        {"url": url, "mirrors": [mirror], **_archive_spec(files)}]}])
    good = cli(ok, name="signed")
    assert good.returncode == 0, good.stdout + good.stderr
    assert files.bytes_sent_total(ARCHIVE) == _archive_spec(files)["size"]

    # A server that is there but lacks the file: the run starts (the check before it only stops
    # sources that cannot be reached at all) and fails inside Prefect, which records the failure.
    missing = files.url("not-there.bin") + SIGNED
    where = missing.split("/")[2]
    broken = _config(tmp_path, data_dir=str(tmp_path / "data-broken"), task_retries=1, task_retry_delay=0,
                     datasets=[{"name": "broken", "files": [{"url": missing, "mirrors": [mirror]}]}])
    bad = cli(broken, name="broken")
    output = good.stdout + good.stderr + bad.stdout + bad.stderr
    assert bad.returncode == 1, output
    assert where in bad.stderr  # the failure is reported (without its secrets)

    leaks = [f"output: {s}" for s in SECRETS if s in output]
    leaks += _leaks(prefect_server.database_dir)  # flow and task runs, states, logs, events; WAL included
    leaks += _leaks(prefect_home)  # the client's side: settings, local storage
    leaks += _leaks(tmp_path / "result-storage")
    assert not leaks, "\n".join(leaks) + "\n\n" + output
    # The database did record this run's failure: its message, without the secrets.
    db = b"".join(p.read_bytes() for p in prefect_server.database_dir.rglob("*.db*") if p.is_file())
    assert f"{where}/not-there.bin".encode() in db


def test_signed_url_secrets_never_reach_the_engine_records(tmp_path, cli, files):
    """The engine's own records beside the downloads (`.resumable/`, `.part.json`) after a success and
    after a transfer cut short (the engine's part of the redaction: kept apart so that a failure
    here names it)."""
    files.fault(ARCHIVE, cut_after=100)  # the first transfer is cut short: a .part and its record stay
    cfg = _config(tmp_path, datasets=[{"name": "labels", "files": [
        {"url": files.url(ARCHIVE) + SIGNED, **_archive_spec(files)}]}])
    cut = cli(cfg, name="cut")
    assert cut.returncode == 1, cut.stdout + cut.stderr
    leaks = _leaks(tmp_path / "data")
    done = cli(cfg, name="resumed")
    assert done.returncode == 0, done.stdout + done.stderr
    leaks += _leaks(tmp_path / "data")
    assert not leaks, "\n".join(leaks)


def test_stored_parameters_are_redacted_and_a_redacted_url_is_refused():
    """What Prefect stores of a config (its JSON form) has no secrets, the config itself keeps
    them; a download task handed a URL whose query Prefect dropped says so instead of trying it."""
    from resumable.errors import UsageError
    from tasks.download import check_not_redacted
    from train_pipeline.config import parse_config

    url = "https://user:SECRETPW999@bucket.example/data.tar.gz" + SIGNED
    cfg = parse_config({"datasets": [{"name": "d", "files": [{"url": url, "mirrors": [url + "&m=SECRETMIR789"]}]}],
                        "model": {"repo_id": "org/m", "endpoint": "https://user:SECRETPW999@hub.example"},
                        "train": None}, "test")
    stored = cfg.model_dump_json()
    assert not [s for s in SECRETS if s in stored], stored
    assert "https://bucket.example/data.tar.gz?" in stored and "hub.example" in stored
    assert cfg.datasets[0].files[0].url == url and cfg.model_dump()["datasets"][0]["files"][0]["url"] == url

    check_not_redacted(url)
    redacted = json.loads(stored)["datasets"][0]["files"][0]["url"]
    with pytest.raises(UsageError, match="query .* is not kept in Prefect"):
        check_not_redacted(redacted)
