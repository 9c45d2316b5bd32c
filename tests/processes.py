"""Whether a process still runs, for the tests that check what is left behind (tests/ is on
sys.path for every test module: pytest puts the root conftest's folder there)."""

from __future__ import annotations

from pathlib import Path


def alive(pid: int) -> bool:
    """``pid`` exists and has not exited (a zombie nobody has reaped yet has exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
