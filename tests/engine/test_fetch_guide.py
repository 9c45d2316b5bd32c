"""Every Python example of the users' guide runs as written, apart from the import line."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine_helpers import make_file

GUIDE = Path(__file__).parents[1] / "data" / "download-guide.md"  # a copy of shared/seed/download-guide.md


def examples() -> list[str]:
    return [textwrap.dedent(block) for block in re.findall(r"```python\n(.*?)\n[ \t]*```", GUIDE.read_text(), re.S)]


LARGE_SIZE = 1024 * 1024 * 100  # the guide's expected_size


@pytest.fixture(scope="session")
def large_file(tmp_path_factory):
    """The guide's 100 MiB large-file.zip, written once per session (each example's server gets a hard
    link to it) and removed at the end of the session; yields (path, sha256 hex)."""
    path = tmp_path_factory.mktemp("guide-large-file") / "large-file.zip"
    digest = make_file(path, LARGE_SIZE)
    yield path, digest
    path.unlink(missing_ok=True)


@pytest.fixture
def guide_server(served, large_file):
    """The test server with large-file.zip: a hard link to the session's file (the server only reads
    it), removed after the test: once the session's file goes too, nothing keeps the 100 MiB on disk."""
    srv, root = served
    source, digest = large_file
    os.link(source, root / "large-file.zip")
    yield srv, digest
    (root / "large-file.zip").unlink(missing_ok=True)


@pytest.fixture
def downloads(tmp_path):
    """The examples' ./downloads folder; the 100 MiB files the examples download are removed after the test."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    yield folder
    for name in ("large-file.zip", "other.zip"):
        (folder / name).unlink(missing_ok=True)


def test_the_guide_has_the_examples_we_expect():
    assert len(examples()) >= 6


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(examples())))
def test_guide_example_runs(guide_server, tmp_path, downloads, monkeypatch, capsys, index):
    srv, digest = guide_server
    monkeypatch.chdir(tmp_path)
    size = LARGE_SIZE
    small = make_file(downloads / "file.zip", 1024 * 1024, seed=3)
    code = examples()[index]
    code = code.replace("from download_utils import", "from resumable import")
    code = code.replace("https://example.com/large-file.zip", srv.url("large-file.zip"))
    code = code.replace('"sha256_hash"', repr(digest)).replace('"abc123..."', repr(small))
    namespace = {"url": srv.url("large-file.zip"), "filepath": "./downloads/other.zip"}
    if "import" not in code:  # a fragment that continues an earlier example
        exec("from resumable import ResumableDownloader, progress_bar\ndownloader = ResumableDownloader()",
             namespace)
    exec(compile(code, f"guide-example-{index}", "exec"), namespace)
    if "success" in namespace:
        assert namespace["success"] is True
        assert sha256_file(downloads / "large-file.zip") == digest  # the file's bytes, verified
    if "progress_callback=progress_callback" in code:  # the bar was drawn, and ends at 100 %
        out = capsys.readouterr().out
        assert out.startswith("\r[") and out.endswith("\n") and " 100.0% 100.0 MiB/100.0 MiB " in out.rsplit("\r", 1)[-1]
    if "is_valid" in namespace:
        assert namespace["is_valid"] is True
    if "download_file(url, filepath)" in code:
        assert (tmp_path / "downloads" / "other.zip").stat().st_size == size
        assert sha256_file(downloads / "other.zip") == digest
    elif "= ResumableDownloader(" in code and "download_file" not in code and "_verify_file" not in code:
        # a configuration example: the settings are taken, and that downloader downloads and verifies
        downloader = namespace["downloader"]
        for name, value in re.findall(r"(chunk_size|max_retries|retry_delay)=([\d.]+)", code):
            assert getattr(downloader, name) == float(value)
        assert downloader.download_file(srv.url("large-file.zip"), downloads / "other.zip", expected_hash=digest)
        assert sha256_file(downloads / "other.zip") == digest
    if "logging.basicConfig(level=logging.DEBUG)" in code:
        # debug output appears: run as a program (pytest's log capture makes basicConfig a no-op here)
        program = code.replace("# Your download code here", "from resumable import fetch\n"
                               f"fetch({srv.url('large-file.zip')!r}, 'debug.zip', hash={digest!r}, progress=False)")
        proc = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120, env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2])))
        (tmp_path / "debug.zip").unlink(missing_ok=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert '"GET /large-file.zip HTTP/1.1" 200' in proc.stderr and "DEBUG:" in proc.stderr
        assert "INFO:resumable:debug.zip: downloaded" in proc.stderr
