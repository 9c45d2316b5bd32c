"""A snapshot killed mid-download (SIGKILL, no cleanup) resumes where it stopped, through the CLI."""

from __future__ import annotations

import filecmp
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from offline.hub_server import HubServer
from resumable.hub import snapshot, snapshot_is_complete
from resumable.state import part_path

ROOT = Path(__file__).resolve().parents[2]
KILL_AFTER = 6 * 1024 * 1024  # bytes in model.safetensors.part when we pull the plug


def start_download(endpoint: str, dest: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "train_pipeline.cli", "model", "download", "org/big", "--endpoint", endpoint,
           "--dest", str(dest), "-q"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_part(proc: subprocess.Popen, part: Path, size: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if part.exists() and part.stat().st_size >= size:
            return part.stat().st_size
        if proc.poll() is not None:
            raise AssertionError(f"downloader exited early: {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError(f"{part} never reached {size} bytes")


@pytest.mark.slow
@pytest.mark.parametrize("cdn", [False, True], ids=["hub", "cdn-expired-url"])
def test_killed_snapshot_resumes_with_a_range_request(big_root, tmp_path, cdn):
    with HubServer(big_root, cdn=cdn, cdn_ttl=1.0) as hub:
        commit = hub.repo("org/big").commit
        weights = tmp_path / "org--big" / commit / "model.safetensors"
        part = part_path(weights)
        hub.slow = 8_000_000.0  # ~4 s for the whole file: time to kill it half-way
        proc = start_download(hub.endpoint, tmp_path)
        try:
            had = wait_for_part(proc, part, KILL_AFTER)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL and not weights.exists()
        assert not snapshot_is_complete(weights.parent)
        hub.slow = None
        if cdn:  # let the signed URL handed to the killed process expire
            old = [r for r in hub.settle() if r.server == "cdn"][-1]
            time.sleep(1.2)
        mark = len(hub.settle())
        result = snapshot("org/big", dest_root=tmp_path, endpoint=hub.endpoint, progress=False)
        log = hub.settle()[mark:]
        if cdn:  # the URL the killed process held is dead now
            with pytest.raises(urllib.error.HTTPError, match="403"):
                urllib.request.urlopen(f"{hub.cdn_endpoint}{old.path}?{old.query}", timeout=10)

    assert result.status == "resumed" and snapshot_is_complete(result.path)
    assert filecmp.cmp(weights, big_root / "org/big/model.safetensors", shallow=False)
    assert not part.exists()
    size = weights.stat().st_size
    assert result.bytes_transferred <= size - had + 100  # only the missing tail (+ the small config)
    ranged = [r for r in log if r.path.endswith("model.safetensors") and r.status == 206]
    assert len(ranged) == 1 and int(ranged[0].range.split("=")[1].rstrip("-")) >= had - 1024 * 1024
    assert ranged[0].server == ("cdn" if cdn else "hub")
    if cdn:  # the resume resolved again and got a fresh signature, not the expired one
        resolves = [r for r in log if "/resolve/" in r.path and r.path.endswith("model.safetensors")]
        assert resolves and resolves[0].status == 302
        assert ranged[0].query != old.query
