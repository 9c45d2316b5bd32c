"""Every Python example of the users' guide runs as written, apart from the import line."""

from __future__ import annotations

import os
import re
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


@pytest.mark.parametrize("index", range(len(examples())))
def test_guide_example_runs(guide_server, tmp_path, downloads, monkeypatch, index):
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
    if "is_valid" in namespace:
        assert namespace["is_valid"] is True
    if "download_file(url, filepath)" in code:
        assert (tmp_path / "downloads" / "other.zip").stat().st_size == size
