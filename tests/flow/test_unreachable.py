"""Unreachable hosts fail fast and clearly (issue 14, point 5): a host name that does not exist
(``nonexistent.invalid``: RFC 6761, no resolver has it) or a port where nothing listens is tried
once per source — not retried by the engine, not retried again by Prefect — from the command line
(``python flows/pipeline.py``, ``train-pipeline datasets download``) and inside the flow, and the
one-line error names the dataset, the host, the cause and the file to edit.

The time bound is asserted by counting what costs time (name lookups, connection attempts, task
runs, a Prefect server start), never by a clock.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from train_pipeline.config import PROJECT_ROOT
from train_pipeline.reachability import (DNS, REFUSED, Source, Unreachable, check_reachable, endpoint,
                                         pending_sources, probe)

DEAD_NAME = "nonexistent.invalid"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def lookups(monkeypatch):
    """Counts name lookups (host -> n) and connection attempts ((host, port) -> n) of this process."""
    names: Counter = Counter()
    connects: Counter = Counter()
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        names[host if isinstance(host, str) else host.decode()] += 1
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self, address):
        if isinstance(address, tuple):
            connects[address[:2]] += 1
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return names, connects


def _registry(tmp_path, *urls: str, name: str = "billboards"):
    registry = tmp_path / "registry.yaml"
    mirrors = f"\n        mirrors: [{', '.join(urls[1:])}]" if len(urls) > 1 else ""
    registry.write_text(f"datasets:\n  - name: {name}\n    description: test\n    files:\n"
                        f"      - url: {urls[0]}{mirrors}\n    extract_to: {name}\n")
    return registry


def test_the_reserved_name_does_not_resolve_here():
    """The premise of these tests: this machine's resolver answers 'no such name' for .invalid."""
    assert probe(DEAD_NAME, 443, 3.0) == DNS
    assert probe("127.0.0.1", free_port(), 3.0) == REFUSED


# -- the check the command line makes before starting Prefect -------------------------------------

def test_a_file_without_any_reachable_source_is_one_line_naming_dataset_host_cause_and_file(lookups):
    names, connects = lookups
    port = free_port()
    src = Source("billboards", "entry 'billboards' in /x/datasets.yaml", "a.tar.gz",
                 (f"https://{DEAD_NAME}/a.tar.gz", f"http://127.0.0.1:{port}/a.tar.gz"))
    with pytest.raises(Unreachable) as err:
        check_reachable([src])
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith("dataset 'billboards': a.tar.gz: no source can be reached: ")
    assert f"host {DEAD_NAME}: {DNS}" in line and f"host 127.0.0.1:{port}: {REFUSED}" in line
    assert line.endswith("fix the url (and mirrors) of entry 'billboards' in /x/datasets.yaml")
    assert names[DEAD_NAME] == 1 and connects[("127.0.0.1", port)] == 1  # once each, no retries


def test_one_probe_per_host_however_many_files_name_it(lookups):
    names, _ = lookups
    files = [Source("shards", "entry 'shards' in r.yaml", f"{i}.parquet", (f"https://{DEAD_NAME}/{i}.parquet",))
             for i in range(50)]
    with pytest.raises(Unreachable, match=r"and 49 more file\(s\)"):
        check_reachable(files)
    assert names[DEAD_NAME] == 1


def test_one_reachable_source_is_enough(served):
    port = free_port()
    src = Source("d", "entry 'd' in r.yaml", "x", (f"http://127.0.0.1:{port}/x", served.url("x")))
    check_reachable([src])  # the mirror listens: the run will fall over to it


def test_undecided_answers_are_left_to_the_run(monkeypatch):
    seen = []

    def undecided(host, port, timeout):
        seen.append(host)
        return None  # a resolver that did not answer (EAI_AGAIN), a timeout, a filtered port

    check_reachable([Source("d", "o", "x", (f"https://{DEAD_NAME}/x",))], prober=undecided)
    assert seen == [DEAD_NAME]

    # Behind a proxy this machine may resolve nothing itself: those hosts are not probed.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert endpoint(f"https://{DEAD_NAME}/x") is None
    check_reachable([Source("d", "o", "x", (f"https://{DEAD_NAME}/x",))])


def test_hub_sources_and_files_on_disk_are_not_probed(tmp_path):
    import resumable
    from train_pipeline.config import DatasetSpec

    assert endpoint("hf://datasets/org/name@main/data/train-*.parquet") is None
    assert endpoint("ftp://host/x") is None
    served = tmp_path / "downloads" / "d" / "x.bin"
    served.parent.mkdir(parents=True)
    served.write_bytes(b"abc")
    assert resumable.verify_file(served, size=3)  # verified once: the record lets a run trust it
    ds = DatasetSpec.model_validate({"name": "d", "files": [{"url": f"https://{DEAD_NAME}/x.bin", "size": 3},
                                                            {"url": f"https://{DEAD_NAME}/y.bin"}]})
    pending = pending_sources([ds], tmp_path, {"d": "entry 'd' in r.yaml"})
    assert [s.filename for s in pending] == ["y.bin"]


@settings(max_examples=60, deadline=None)
@given(name=st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
       path=st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
       origin=st.text(max_size=40))
def test_the_error_is_one_line_whatever_the_registry_says(name, path, origin):
    """A registry may be anyone's: whatever its names, paths and file names, one line."""
    from urllib.parse import quote

    url = f"https://{DEAD_NAME}/{quote(path)}"
    src = Source(name, origin, path or "download", (url,))

    def dead(host, port, timeout):
        return DNS

    try:
        check_reachable([src], prober=dead)
    except Unreachable as exc:
        text = str(exc)
        assert f"dataset {name!r}" in text and DNS in text
        assert len(text.splitlines()) == 1
    else:
        raise AssertionError("a dead source passed")


# -- python flows/pipeline.py ------------------------------------------------------------------------

def _pipeline(config, cwd):
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "flows" / "pipeline.py"), "--config", str(config)],
                          cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})


def _fails_before_prefect(config, cwd) -> str:
    """``python flows/pipeline.py --config config`` exits 1 with its one error line, and no Prefect
    server was started; returns that line."""
    r = _pipeline(config, cwd)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "temporary server" not in r.stderr + r.stdout, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1, r.stderr
    return errors[0]


@pytest.mark.slow
@pytest.mark.parametrize("dead", ["dns", "refused"])
def test_pipeline_command_fails_before_starting_prefect(tmp_path, dead):
    """The whole failure is the check before the run: no Prefect server is started (the 6-16 s
    part), no task runs; the line names the dataset, host, cause and registry file."""
    host = DEAD_NAME if dead == "dns" else f"127.0.0.1:{free_port()}"
    registry = _registry(tmp_path, f"http://{host}/billboards.tar.gz")
    config = tmp_path / "c.yaml"
    config.write_text(f"datasets: [billboards]\nregistry: {registry}\ntrain: null\ndata_dir: {tmp_path / 'data'}\n"
                      f"models_cache: {tmp_path / 'models'}\nresults_dir: {tmp_path / 'results'}\n")
    line = _fails_before_prefect(config, tmp_path)
    assert line.startswith("error: dataset 'billboards': billboards.tar.gz: no source can be reached")
    assert f"host {host}: {DNS if dead == 'dns' else REFUSED}" in line
    assert line.endswith(f"of entry 'billboards' in {registry}")


# -- the flow itself (a deployment, the UI's retry, a test) ---------------------------------------

@pytest.mark.parametrize("dead", ["dns", "refused"])
def test_flow_tries_each_source_once_and_names_what_to_edit(tmp_path, run_pipeline, task_runs, lookups, dead):
    """Default retry settings (5 engine retries, 2 Prefect task retries): one fetch task run, one
    lookup or connection per source, and a failure line naming the dataset, step, host, cause and
    the registry entry to edit."""
    from flows.failures import failure_reason
    from train_pipeline.config import parse_config

    names, connects = lookups
    port = free_port()
    primary = f"http://{DEAD_NAME}/billboards.tar.gz" if dead == "dns" else f"http://127.0.0.1:{port}/billboards.tar.gz"
    mirror = f"http://mirror.{DEAD_NAME}/billboards.tar.gz" if dead == "dns" else f"http://127.0.0.1:{port}/m.tar.gz"
    registry = _registry(tmp_path, primary, mirror)
    cfg = parse_config({"datasets": ["billboards"], "registry": str(registry), "train": None,
                        "data_dir": str(tmp_path / "data"), "models_cache": str(tmp_path / "models"),
                        "results_dir": str(tmp_path / "results"), "task_retry_delay": 0.1}, "test config")
    assert (cfg.retries, cfg.task_retries) == (5, 2)  # the defaults: neither multiplies a failure no retry fixes

    state = run_pipeline(cfg)
    assert state.is_failed()
    fetches = [r for r in task_runs(state.state_details.flow_run_id) if r.name.startswith("fetch")]
    assert len(fetches) == 1 and fetches[0].run_count == 1, [(r.name, r.run_count) for r in fetches]
    if dead == "dns":
        assert names[DEAD_NAME] == 1 and names[f"mirror.{DEAD_NAME}"] == 1, names
    else:
        assert connects[("127.0.0.1", port)] == 2, connects  # the url once, the mirror once

    line = failure_reason(state)
    assert "\n" not in line
    assert line.startswith("dataset 'billboards': fetch billboards.tar.gz: all sources failed: ")
    cause = "the host name does not resolve" if dead == "dns" else "connection refused"
    assert line.count(cause) == 2 and (DEAD_NAME in line if dead == "dns" else f"127.0.0.1:{port}" in line)
    assert f"fix the url (and mirrors) of entry 'billboards' in {registry}" in line
    assert "resume" not in line


# -- train-pipeline datasets download ------------------------------------------------------------

@pytest.mark.parametrize("dead", ["dns", "refused"])
def test_datasets_download_tries_each_source_once(tmp_path, lookups, capsys, dead):
    from train_pipeline.cli import main

    names, connects = lookups
    port = free_port()
    hosts = [DEAD_NAME, f"mirror.{DEAD_NAME}"] if dead == "dns" else [f"127.0.0.1:{port}"] * 2
    registry = _registry(tmp_path, f"http://{hosts[0]}/billboards.tar.gz", f"http://{hosts[1]}/m/billboards.tar.gz")
    rc = main(["datasets", "download", "billboards", "--registry", str(registry), "--data-dir",
               str(tmp_path / "data"), "--quiet"])
    assert rc == 1
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1
    line = errors[0]
    if dead == "dns":
        assert names[DEAD_NAME] == 1 and names[f"mirror.{DEAD_NAME}"] == 1, names
        assert line.count("the host name does not resolve") == 2
    else:
        assert connects[("127.0.0.1", port)] == 2, connects
        assert line.count("connection refused") == 2
    assert f"dataset 'billboards' in {registry}" in line and "resume" not in line


def test_flow_hub_source_on_a_dead_endpoint_runs_once_and_names_what_to_edit(tmp_path, run_pipeline, task_runs):
    """An hf:// source whose Hub endpoint refuses: the Hub client's own few attempts, no Prefect
    retry on top, and the line names the dataset, the endpoint and the entry to fix."""
    from flows.failures import failure_reason
    from train_pipeline.config import parse_config

    port = free_port()
    registry = tmp_path / "registry.yaml"
    registry.write_text("datasets:\n  - name: signs\n    files:\n"
                        "      - url: hf://datasets/org/signs@main/data/train-*.parquet\n"
                        f"        endpoint: http://127.0.0.1:{port}\n")
    cfg = parse_config({"datasets": ["signs"], "registry": str(registry), "train": None,
                        "data_dir": str(tmp_path / "data"), "models_cache": str(tmp_path / "models"),
                        "results_dir": str(tmp_path / "results"), "task_retry_delay": 0.1}, "test config")
    state = run_pipeline(cfg)
    assert state.is_failed()
    runs = task_runs(state.state_details.flow_run_id)
    assert len(runs) == 1 and runs[0].run_count == 1, [(r.name, r.run_count) for r in runs]
    line = failure_reason(state)
    assert "\n" not in line and line.startswith("dataset 'signs': fetch ")
    assert f"127.0.0.1:{port}" in line
    assert f"fix the url (or its endpoint) of entry 'signs' in {registry}" in line


# -- the Hub endpoints: the model and hf:// sources ------------------------------------------------

def _hub_config(tmp_path, model_endpoint: str | None, hf_endpoint: str | None, revision: str = "main"):
    registry = tmp_path / "registry.yaml"
    registry.write_text("datasets:\n  - name: signs\n    files:\n"
                        f"      - url: hf://datasets/org/signs@{revision}/data/train-*.parquet\n"
                        + (f"        endpoint: {hf_endpoint}\n" if hf_endpoint else ""))
    config = tmp_path / "c.yaml"
    model = f"model: {{repo_id: org/tiny, endpoint: '{model_endpoint}'}}\n" if model_endpoint else ""
    config.write_text(f"{model}datasets: [signs]\nregistry: {registry}\ntrain: null\ndata_dir: {tmp_path / 'data'}\n"
                      f"models_cache: {tmp_path / 'models'}\nresults_dir: {tmp_path / 'results'}\n")
    return config, registry


@pytest.fixture
def hub(tmp_path):
    """A Hub look-alike with a model org/tiny and a dataset org/signs."""
    from offline.hub_server import HubServer

    repos = tmp_path / "repos"
    (repos / "org" / "tiny").mkdir(parents=True)
    (repos / "org" / "tiny" / "config.json").write_text("{}")
    (repos / "datasets" / "org" / "signs" / "data").mkdir(parents=True)
    (repos / "datasets" / "org" / "signs" / "data" / "train-0.parquet").write_bytes(b"not really parquet")
    with HubServer(repos) as server:
        yield server


@pytest.mark.slow
@pytest.mark.parametrize("which", ["model", "hf source"])
def test_pipeline_command_checks_the_hub_endpoints_before_starting_prefect(tmp_path, hub, which):
    """The model's and an hf:// source's Hub endpoint are checked like any host: a dead one fails
    before Prefect starts, naming the model or the dataset and the setting to edit."""
    dead = f"http://127.0.0.1:{free_port()}"
    config, registry = _hub_config(tmp_path, dead if which == "model" else hub.endpoint,
                                   dead if which == "hf source" else hub.endpoint)
    line = _fails_before_prefect(config, tmp_path)
    assert f"host {dead.removeprefix('http://')}: {REFUSED}" in line
    if which == "model":
        assert line.startswith("error: model: org/tiny: ") and line.endswith(f"fix model.endpoint (or HF_ENDPOINT) of {config}")
    else:
        assert line.startswith("error: dataset 'signs': hf://datasets/org/signs@main/data/train-*.parquet: ")
        assert line.endswith(f"fix the url's endpoint (or HF_ENDPOINT) of entry 'signs' in {registry}")


def test_hub_endpoints_offline_or_pinned_and_complete_are_not_probed(tmp_path, hub, monkeypatch):
    """Offline, or pinned to a commit whose snapshot is complete, a source asks the Hub nothing: its
    endpoint is not checked (a dead one must not stop such a run)."""
    from resumable.hub.sources import fetch_hf
    from train_pipeline.config import load_config
    from train_pipeline.config.load import planned_datasets
    from train_pipeline.reachability import hub_sources

    commit = fetch_hf("hf://datasets/org/signs/data/train-*.parquet", tmp_path / "data" / "downloads" / "signs",
                      endpoint=hub.endpoint, progress=False).commit
    dead = f"http://127.0.0.1:{free_port()}"

    def probed(revision: str) -> list[str]:
        config, _ = _hub_config(tmp_path, dead, dead, revision=revision)
        cfg = load_config(config)
        datasets = planned_datasets(cfg, str(config))
        return [s.what or s.dataset for s in hub_sources(cfg, datasets, cfg.path(cfg.data_dir), {}, str(config))]

    assert probed("main") == ["model", "signs"]  # a branch needs a request to resolve it
    assert probed("b" * 40) == ["model", "signs"]  # a commit without its snapshot needs the files
    assert probed(commit) == ["model"]  # pinned and complete: nothing to ask
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert probed("main") == []


def test_flow_model_failure_names_the_model_and_what_to_edit(tmp_path, hub, run_pipeline):
    """Inside the flow (a deployment, the UI's retry: no check before the run) a model snapshot that
    fails says it was the model; a wrong name also says which settings to edit."""
    from flows.failures import failure_reason
    from train_pipeline.config import load_config

    dead = f"http://127.0.0.1:{free_port()}"
    config, _ = _hub_config(tmp_path, dead, hub.endpoint)
    line = failure_reason(run_pipeline(load_config(config)))
    assert "\n" not in line and line.startswith("model 'org/tiny': snapshot: ") and dead in line

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    config, _ = _hub_config(wrong, hub.endpoint, hub.endpoint)
    config.write_text(config.read_text().replace("org/tiny", "org/nothing-here"))
    line = failure_reason(run_pipeline(load_config(config)))
    assert line.startswith("model 'org/nothing-here': snapshot: ") and "not found" in line
    assert "fix model (repo_id, revision, include/exclude, endpoint) in the flow's config parameter" in line
