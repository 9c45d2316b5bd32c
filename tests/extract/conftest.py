"""Fixtures of the extraction tests; archive builders live in extract_archives.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The tests import extract_archives by name; this works under any --import-mode (importlib included).
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A folder holding the archive and the target; tests assert nothing else appears in it."""
    box = tmp_path / "sandbox"
    box.mkdir()
    return box
