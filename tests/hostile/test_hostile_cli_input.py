"""Hostile input to `train-pipeline datasets download` and `train-pipeline model download`: each is
refused with one line that names the input and the fix, a non-zero exit and no traceback, before
anything is downloaded. Every case runs the real command in a subprocess.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading

import pytest

from train_pipeline.config import PROJECT_ROOT

NOBODY = "http://127.0.0.1:9"  # the discard port: nothing listens, a check that lets input through fails differently
LONG = "n" * 300  # over NAME_MAX (255 bytes)


def _cli(*args: str, cwd, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train_pipeline.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(env or {})})


def _assert_one_line(r: subprocess.CompletedProcess, *words: str) -> str:
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# -- datasets download ------------------------------------------------------------------------------
def _files_under(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


DATASETS = {
    "URL with a bad port": (["--urls", "http://h.example:99999/a.zip"], ["--urls", "https://host[:port]/path"]),
    "URL with a bracket": (["--urls", "http://[h.example/a.zip"], ["--urls", "https://host[:port]/path"]),
    "URL with %00": (["--urls", "http://h.example/a%00.zip"], ["--urls", "check the URL"]),
    "URL naming '..'": (["--urls", f"{NOBODY}/.."], ["--urls", "url", "'name'"]),
    "URL naming %2e%2e": (["--urls", f"{NOBODY}/x/%2e%2e"], ["--urls", "url", "'name'"]),
    "URL file name over NAME_MAX": (["--urls", f"{NOBODY}/{LONG}.zip"], ["--urls", "too long", "'name'"]),
    "NAME that is a path": (["--urls", f"{NOBODY}/a.zip"], ["NAME", "'../x'", "letters, digits"]),
    "--connections far too many": (["--urls", f"{NOBODY}/a.zip", "--connections", "100000"], ["--connections", "use 1 to 32"]),
    "--retries far too many": (["--urls", f"{NOBODY}/a.zip", "--retries", "1000000"], ["--retries", "use 0 to 50"]),
    "--data-dir empty": (["--urls", f"{NOBODY}/a.zip", "--data-dir", ""], ["--data-dir", "empty", "give a path"]),
    "--data-dir with a newline": (["--urls", f"{NOBODY}/a.zip", "--data-dir", "da\nta"], ["--data-dir", "control character"]),
    "--data-dir name over NAME_MAX": (["--urls", f"{NOBODY}/a.zip", "--data-dir", LONG], ["--data-dir", "shorten it"]),
    "--registry empty": (["--urls", f"{NOBODY}/a.zip", "--registry", ""], ["--registry", "empty"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("args, words", DATASETS.values(), ids=DATASETS.keys())
def test_datasets_download_bad_input_is_one_line(tmp_path, args, words):
    name = "../x" if "NAME" in words else "custom"
    if "--data-dir" not in args:
        args = [*args, "--data-dir", "data"]
    r = _cli("datasets", "download", name, "--retries", "0", "--quiet", *args, cwd=tmp_path)
    _assert_one_line(r, *words)
    assert r.returncode == 2, r.stderr
    assert _files_under(tmp_path) == [], "nothing may be written"


def test_datasets_download_into_a_folder_under_a_regular_file(tmp_path):
    (tmp_path / "afile").write_text("not a folder\n")
    for data_dir in ("afile", "afile/sub"):
        r = _cli("datasets", "download", "custom", "--retries", "0", "--quiet", "--urls", f"{NOBODY}/a.tar.gz",
                 "--data-dir", data_dir, cwd=tmp_path)
        line = _assert_one_line(r, f"--data-dir {data_dir}", "Not a directory", "writable folder")
        assert "127.0.0.1" not in line  # refused before any network
    assert (tmp_path / "afile").read_text() == "not a folder\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_datasets_download_into_an_unwritable_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        r = _cli("datasets", "download", "custom", "--retries", "0", "--quiet", "--urls", f"{NOBODY}/a.tar.gz",
                 "--data-dir", "locked", cwd=tmp_path)
        _assert_one_line(r, "--data-dir locked", "writable folder")
    finally:
        locked.chmod(0o755)


def test_datasets_download_of_a_registry_entry_sure_to_fail(tmp_path):
    # Registry entries follow the config's rules (here: a mirror that is the URL itself).
    registry = tmp_path / "reg.yaml"
    registry.write_text(
        "datasets:\n"
        "  - name: twice\n"
        "    extract_to: twice\n"
        f"    files: [{{url: '{NOBODY}/a.zip', mirrors: ['{NOBODY}/a.zip']}}]\n")
    r = _cli("datasets", "download", "twice", "--registry", str(registry), "--data-dir", "data", cwd=tmp_path)
    _assert_one_line(r, str(registry), "mirrors.0", "the url itself", "remove it")
    assert _files_under(tmp_path / "data") == []


def test_a_failure_that_a_rerun_cannot_fix_does_not_say_run_again(tmp_path):
    # A 404 from a real server: one line, exit 1, and no advice to run the same command again.
    (tmp_path / "www").mkdir()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "www"), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/missing.tar.gz"
        r = _cli("datasets", "download", "custom", "--quiet", "--urls", url, "--data-dir", "data", cwd=tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    line = _assert_one_line(r, "404", "check the URL")
    assert r.returncode == 1 and "run the same command again" not in line


# -- model download -----------------------------------------------------------------------------------
MODEL = {
    "revision ../../x": (["--revision", "../../x"], ["revision '../../x'", "branch, tag or 40-hex commit sha"]),
    "revision .": (["--revision", "."], ["revision '.'", "branch, tag or 40-hex commit sha"]),
    "revision with a space": (["--revision", "my branch"], ["revision 'my branch'", "branch, tag"]),
    "revision with a newline": (["--revision", "main\n"], ["revision 'main\\n'", "branch, tag"]),
    "revision main~1": (["--revision", "main~1"], ["revision 'main~1'", "branch, tag"]),
    "revision ending .lock": (["--revision", "v1.lock"], ["revision 'v1.lock'", "branch, tag"]),
    "revision over NAME_MAX": (["--revision", LONG], ["revision", "255 bytes"]),
    "repo id with --": (["--repo", "org/na--me"], ["repo id 'org/na--me'", "ORG/NAME"]),
    "endpoint with a bad port": (["--endpoint", "http://hub.example:99999"], ["http://hub.example:99999", "https://host[:port]"]),
    "endpoint with a bracket": (["--endpoint", "http://[hub.example"], ["http://[hub.example", "https://host[:port]"]),
    "endpoint with a query": (["--endpoint", f"{NOBODY}/?x=1"], ["endpoint", "no '?query'", "https://host[:port][/path]"]),
    "endpoint empty": (["--endpoint", ""], ["endpoint ''", "leave it out"]),
    "--dest empty": (["--dest", ""], ["--dest", "empty", "give a path"]),
    "--dest with a newline": (["--dest", "mo\ndels"], ["--dest", "control character"]),
    "--dest name over NAME_MAX": (["--dest", LONG], ["--dest", "shorten it"]),
    "--token not ASCII": (["--token", "hf_é"], ["--token", "paste it"]),
    "--token with a space": (["--token", "hf_a b"], ["--token", "paste it"]),
    "--workers 0": (["--workers", "0"], ["max_workers 0", "use 1 or more"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("args, words", MODEL.values(), ids=MODEL.keys())
def test_model_download_bad_input_is_one_line(tmp_path, args, words):
    repo = "org/name"
    if args[0] == "--repo":
        repo, args = args[1], args[2:]
    if "--endpoint" not in args:
        args = [*args, "--endpoint", NOBODY]
    if "--dest" not in args:
        args = [*args, "--dest", "models"]
    r = _cli("model", "download", repo, "-q", *args, cwd=tmp_path, env={"HF_ENDPOINT": NOBODY})
    _assert_one_line(r, *words)
    assert r.returncode == 2, r.stderr
    assert _files_under(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("env, words", [
    ({"HF_ENDPOINT": "http://hub.example:99999"}, ["HF_ENDPOINT", "fix or unset"]),
    ({"HF_ENDPOINT": f"{NOBODY}/?x"}, ["HF_ENDPOINT", "no '?query'"]),
    ({"HF_TOKEN": "hf_\u00e9t\u00e9"}, ["HF_TOKEN", "paste it"]),
], ids=["HF_ENDPOINT bad port", "HF_ENDPOINT query", "HF_TOKEN not ASCII"])
def test_model_download_bad_environment_is_one_line(tmp_path, env, words):
    r = _cli("model", "download", "org/name", "-q", "--dest", "models", cwd=tmp_path, env=env)
    _assert_one_line(r, *words)
    assert _files_under(tmp_path) == []


@pytest.fixture
def hub(tmp_path):
    from offline.hub_server import HubServer

    repo = tmp_path / "repos" / "org" / "tiny"
    repo.mkdir(parents=True)
    (repo / "config.json").write_text(json.dumps({"model_type": "tiny"}))
    with HubServer(tmp_path / "repos") as server:
        yield server


@pytest.mark.slow
def test_model_download_into_a_folder_under_a_regular_file(tmp_path, hub):
    work = tmp_path / "work"
    work.mkdir()
    (work / "afile").write_text("not a folder\n")
    for dest in ("afile", "afile/sub"):
        r = _cli("model", "download", "org/tiny", "-q", "--endpoint", hub.endpoint, "--dest", dest, cwd=work)
        _assert_one_line(r, "afile", "Not a directory", "writable --dest")
    assert (work / "afile").read_text() == "not a folder\n"
