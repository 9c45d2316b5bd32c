"""Every Python example of the users' guide runs as written, apart from the import line."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from engine_helpers import make_file

GUIDE = Path(__file__).parents[1] / "data" / "download-guide.md"  # a copy of shared/seed/download-guide.md


def examples() -> list[str]:
    return [textwrap.dedent(block) for block in re.findall(r"```python\n(.*?)\n[ \t]*```", GUIDE.read_text(), re.S)]


def test_the_guide_has_the_examples_we_expect():
    assert len(examples()) >= 6


@pytest.mark.parametrize("index", range(len(examples())))
def test_guide_example_runs(served, tmp_path, monkeypatch, index):
    srv, root = served
    monkeypatch.chdir(tmp_path)
    size = 1024 * 1024 * 100  # the guide's expected_size
    digest = make_file(root / "large-file.zip", size)
    (tmp_path / "downloads").mkdir()
    small = make_file(tmp_path / "downloads" / "file.zip", 1024 * 1024, seed=3)
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
