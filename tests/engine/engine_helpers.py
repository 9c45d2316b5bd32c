"""Helpers shared by the engine tests (a uniquely named module: pytest puts every test folder on sys.path)."""

from __future__ import annotations

import hashlib
import random
import socket
import subprocess
import time
from pathlib import Path

def make_file(path: Path, size: int, seed: int = 0) -> str:
    """Write ``size`` reproducible pseudo-random bytes; returns their sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = rng.randbytes(min(left, 4 << 20))
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def stop(proc, grace: float = 10) -> None:
    """End a server process: SIGTERM, then SIGKILL if it ignores that for ``grace`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kill_when(proc, reached, what: str, timeout: float = 60) -> None:
    """SIGKILL ``proc`` once ``reached()`` is true: progress the test made certain to come and certain
    not to be passed (a server-side hold keeps the child mid-body), so the kill lands there whatever
    the machine's load. Fails if the child ends first or the progress never comes."""
    import signal

    deadline = time.monotonic() + timeout
    try:
        while not reached():
            if proc.poll() is not None:
                raise AssertionError(f"the child ended before {what} (exit {proc.returncode})")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not happen in {timeout} s")
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
