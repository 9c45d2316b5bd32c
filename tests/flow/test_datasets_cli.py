"""`train-pipeline datasets list | download NAME [--data-dir D] [--urls U ...] [--no-extract]`."""

from __future__ import annotations

ARCHIVE = "billboards.tar.gz"  # the dataset archive on the test file server (tests/flow/conftest.py)

import os
import shutil
import subprocess
import sys

import pytest

from train_pipeline.config import PROJECT_ROOT


def _datasets(*args, cwd):
    return subprocess.run([sys.executable, "-m", "train_pipeline.cli", "datasets", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(PROJECT_ROOT)})


@pytest.mark.slow
def test_list_shows_the_guide_names(tmp_path):
    for args in (("list",), ("--list",)):
        r = _datasets(*args, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        for name in ("outdoor_advertising", "gantry_samples", "custom"):
            assert name in r.stdout


@pytest.mark.slow
def test_custom_urls_download_as_a_batch_then_cached(tmp_path, served, dataset_archive):
    shutil.copy(dataset_archive.path, served.root / "second.tar.gz")
    (served.root / "notes.txt").write_text("hello\n")
    urls = [served.url(ARCHIVE), served.url("second.tar.gz"), served.url("notes.txt")]
    r = _datasets("download", "custom", "--data-dir", "data", "--urls", *urls, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("downloaded") == 3
    # Several archives: one folder each, named after the archive; one that holds nothing but a folder
    # of that name fills it with its content (custom/billboards/, not custom/billboards/billboards/).
    custom = tmp_path / "data" / "custom"
    assert (custom / "billboards" / "metadata.jsonl").is_file()
    assert (custom / "second" / "billboards" / "metadata.jsonl").is_file()
    sent = served.bytes_sent_total()

    # The guide's spelling, again: nothing is transferred.
    r = _datasets("--dataset", "custom", "--data-dir", "data", "--urls", *urls, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("cached") >= 3 and served.bytes_sent_total() == sent


def test_no_extract_keeps_the_archive(tmp_path, served):
    r = _datasets("download", "custom", "--data-dir", "d", "--no-extract", "--urls", served.url(ARCHIVE), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "d" / "downloads" / "custom" / ARCHIVE).is_file()
    assert not (tmp_path / "d" / "custom").exists()


@pytest.mark.slow
def test_bad_input_is_one_line(tmp_path, served):
    cases = [
        (("download", "nope"), "unknown dataset 'nope'"),
        (("download", "custom"), "--urls"),
        (("download", "custom", "--urls", "ftp://x/y"), "https://host/path"),
        ((), "datasets list"),
    ]
    for args, text in cases:
        r = _datasets(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert text in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr

    r = _datasets("download", "custom", "--urls", served.url("missing.tar.gz"), cwd=tmp_path)
    assert r.returncode == 1 and "404" in r.stderr and "Traceback" not in r.stderr


def test_registry_mirrors_are_tried_in_order(tmp_path, served, dataset_archive):
    served.fault("primary/" + ARCHIVE, status=503, times=None)  # the first source is down for good
    (served.root / "mirror").mkdir()
    shutil.copy(dataset_archive.path, served.root / "mirror" / ARCHIVE)
    registry = tmp_path / "registry.yaml"
    registry.write_text(
        "datasets:\n"
        "  - name: billboards\n"
        "    description: test\n"
        "    files:\n"
        f"      - url: {served.url('primary/' + ARCHIVE)}\n"
        f"        mirrors: [{served.url('mirror/' + ARCHIVE)}]\n"
        f"        size: {dataset_archive.size}\n"
        f"        hash: {dataset_archive.hash}\n"
        "    extract_to: billboards\n")
    r = subprocess.run([sys.executable, "-m", "train_pipeline.cli", "datasets", "download", "billboards",
                        "--registry", str(registry), "--data-dir", "data", "--quiet", "--retries", "0"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "data" / "billboards" / "billboards" / "metadata.jsonl").is_file()
    assert served.bytes_sent_total("mirror/" + ARCHIVE) == dataset_archive.size
    assert served.requests_for("primary/" + ARCHIVE)  # the primary was tried first


def test_a_registry_entry_whose_hosts_refuse_fails_at_once_naming_what_to_edit(tmp_path):
    """Nothing listens at any of its sources: no retries (default settings), no "run again to
    resume", and the line says which entry of which registry file to fix."""
    import socket

    def free_port() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    dead = [f"http://127.0.0.1:{free_port()}/{ARCHIVE}" for _ in range(2)]
    registry = tmp_path / "registry.yaml"
    registry.write_text("datasets:\n  - name: billboards\n    description: test\n    files:\n"
                        f"      - url: {dead[0]}\n        mirrors: [{dead[1]}]\n    extract_to: billboards\n")
    r = subprocess.run([sys.executable, "-m", "train_pipeline.cli", "datasets", "download", "billboards",
                        "--registry", str(registry), "--data-dir", "data", "--quiet"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert r.returncode == 1
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    line = errors[0]
    assert line.count("connection refused") == 2 and "resume" not in line, line
    assert f"dataset 'billboards' in {registry}" in line, line
