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

from hub_faults import FaultyHub
from resumable.hub import snapshot, snapshot_is_complete
from resumable.state import part_path

ROOT = Path(__file__).resolve().parents[2]
KILL_AFTER = 6 * 1024 * 1024  # bytes in model.safetensors.part when we pull the plug


def start_download(endpoint: str, dest: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "train_pipeline.cli", "model", "download", "org/big", "--endpoint", endpoint,
           "--dest", str(dest), "-q"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_part(proc: subprocess.Popen, part: Path, size: int, timeout: float = 60.0) -> int:
    """The size of ``part`` once it holds ``size`` bytes (the server holds the body there, so the
    child waits mid-file for as long as the test takes)."""
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
    with FaultyHub(big_root, cdn=cdn) as hub:
        commit = hub.repo("org/big").commit
        weights = tmp_path / "org--big" / commit / "model.safetensors"
        part = part_path(weights)
        hub.hold("model.safetensors", KILL_AFTER)  # the body stops there until the kill
        proc = start_download(hub.endpoint, tmp_path)
        try:
            assert hub.held.wait(60), "the download never reached the hold"
            had = wait_for_part(proc, part, KILL_AFTER)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            hub.release()
        assert proc.returncode == -signal.SIGKILL and not weights.exists()
        assert not snapshot_is_complete(weights.parent)
        if cdn:  # the signed URL handed to the killed process dies now, whatever the clock says
            old = [r for r in hub.settle() if r.server == "cdn"][-1]
            hub.expire_signed_urls()
            with pytest.raises(urllib.error.HTTPError, match="403"):
                urllib.request.urlopen(f"{hub.cdn_endpoint}{old.path}?{old.query}", timeout=30)
        mark = len(hub.settle())
        result = snapshot("org/big", dest_root=tmp_path, endpoint=hub.endpoint, progress=False)
        log = hub.settle()[mark:]

    assert result.status == "resumed" and snapshot_is_complete(result.path)
    assert filecmp.cmp(weights, big_root / "org/big/model.safetensors", shallow=False)
    assert not part.exists()
    size = weights.stat().st_size
    assert result.bytes_transferred <= size - had + 100  # only the missing tail (+ the small config)
    ranged = [r for r in log if r.path.endswith("model.safetensors") and r.status == 206]
    assert len(ranged) == 1 and int(ranged[0].range.split("=")[1].rstrip("-")) >= had - 1024 * 1024
    assert ranged[0].server == ("cdn" if cdn else "hub")
    if cdn:  # the resume asked the Hub again and got a fresh signature; the dead URL was never tried
        weights_log = [(r.server, r.status) for r in log if r.path.endswith("model.safetensors")]
        assert weights_log == [("hub", 302), ("cdn", 206)]
        assert ranged[0].query != old.query
