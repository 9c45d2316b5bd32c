"""Fixtures of the extraction tests; archive builders live in extract_archives.py."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A folder holding the archive and the target; tests assert nothing else appears in it."""
    box = tmp_path / "sandbox"
    box.mkdir()
    return box
