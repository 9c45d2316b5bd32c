"""``train-pipeline fetch``: exit codes, one-line errors, no heavy imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine_helpers import make_file, sha256_of


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train_pipeline.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_fetch_to_file_with_hash_and_size(served, tmp_path):
    srv, root = served
    digest = make_file(root / "a.bin", 300_000)
    out = tmp_path / "a.bin"
    r = cli("fetch", srv.url("a.bin"), "-o", str(out), "--hash", f"sha256:{digest}", "--size", "300000", "-q")
    # -q: no progress bar, the result line only
    assert r.returncode == 0 and r.stderr == f"downloaded {out} sha256:{digest}\n" and sha256_of(out) == digest
    r = cli("fetch", srv.url("a.bin"), "-o", str(out), "--hash", digest)
    assert r.returncode == 0 and "cached" in r.stderr


def test_several_urls_into_a_directory_one_failing(served, tmp_path):
    srv, root = served
    make_file(root / "a.bin", 1000)
    make_file(root / "b.bin", 2000)
    r = cli("fetch", "-q", "--retries", "0", "-d", str(tmp_path / "d"), srv.url("a.bin"), srv.url("missing.bin"),
            srv.url("b.bin"))
    assert r.returncode == 1
    assert (tmp_path / "d" / "a.bin").stat().st_size == 1000 and (tmp_path / "d" / "b.bin").stat().st_size == 2000
    lines = r.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "missing.bin" in errors[0] and "HTTP 404" in errors[0]
    assert sorted(line.split()[0] for line in lines if line not in errors) == ["downloaded", "downloaded"]
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_bad_inputs_give_one_line_errors(served, tmp_path):
    srv, root = served
    make_file(root / "a.bin", 1000)
    cases = [
        (["fetch", srv.url("a.bin"), "-o", str(tmp_path / "x"), "--hash", "sha256:nothex"], "hash"),
        (["fetch", "ftp://example.invalid/x", "-o", str(tmp_path / "x")], "http"),
        (["fetch", srv.url("a.bin"), srv.url("a.bin"), "-o", str(tmp_path / "x")], "-d DIR"),
        (["fetch", srv.url("a.bin"), "-o", str(tmp_path / "x"), "--size", "12"], "expected 12"),
        (["fetch", srv.url("a.bin"), "-o", str(tmp_path / "x"), "--header", "novalue"], "NAME: VALUE"),
    ]
    for args, needle in cases:
        r = cli(*args)
        assert r.returncode != 0, args
        assert "Traceback" not in r.stderr and needle in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_fetch_imports_no_prefect_torch_or_transformers(served, tmp_path):
    srv, root = served
    make_file(root / "a.bin", 1000)
    code = (
        "import sys\nfrom train_pipeline.cli import main\n"
        f"assert main(['fetch', '-q', {srv.url('a.bin')!r}, '-o', {str(tmp_path / 'a.bin')!r}]) == 0\n"
        "heavy = [m for m in ('prefect', 'torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_mirror_is_used_when_the_first_source_fails(served, tmp_path):
    srv, root = served
    digest = make_file(root / "a.bin", 5000)
    r = cli("fetch", "-q", "--retries", "0", srv.url("gone.bin"), "--mirror", srv.url("a.bin"), "-o",
            str(tmp_path / "a.bin"), "--hash", digest)
    assert r.returncode == 0 and sha256_of(tmp_path / "a.bin") == digest


def test_result_lines_of_files_finishing_together_stay_whole(served, tmp_path):
    """Files finish on several threads at once: each result line is printed whole, never two on
    one line with an empty one after (a print() is two writes)."""
    srv, root = served
    names = [f"f{i:03d}.bin" for i in range(120)]
    for name in names:
        make_file(root / name, 100)
    r = cli("fetch", "-q", "--jobs", "16", "-d", str(tmp_path / "d"), *(srv.url(n) for n in names))
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == len(names) and all(line.split()[0] == "downloaded" and line.count(" sha256:") == 1
                                            for line in lines), r.stderr
