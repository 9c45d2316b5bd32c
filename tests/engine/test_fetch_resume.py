"""Resume across process death, and never splicing two versions of a file (issue 2, points 1, 2, 5, 9)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine_helpers import kill_when, make_file, sha256_of
from resumable import fetch
from resumable.state import PartState, part_path, state_path, url_id

CHILD = """
import sys
from resumable import fetch
url, dest, digest, connections = sys.argv[1:5]
fetch(url, dest, hash=digest, connections=int(connections), progress=False, retry_delay=0.05)
"""


def spawn(url: str, dest: Path, digest: str, connections: int = 1) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, url, str(dest), digest, str(connections)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def progress_of(dest: Path) -> int:
    """Bytes a killed child had secured: .part size, or the segments' done counters; nothing while
    the part has no state record yet (a segmented part is sparse, full size, from the start)."""
    state = PartState.load(dest)
    if state is None:
        return 0
    if state.segments:
        return sum(done - start for start, _, done in state.segments)
    return part_path(dest).stat().st_size if part_path(dest).exists() else 0


@pytest.mark.slow
@pytest.mark.parametrize("connections", [1, 4])
def test_sigkill_at_random_offsets_then_rerun_is_byte_identical(served, tmp_path, connections):
    """Four SIGKILLs, each at a random offset: the server holds every response after a random number
    of bytes, and the child is killed once those bytes are on disk (certainly mid-body: the rest
    never comes while it lives)."""
    srv, root = served
    size = 72 << 20 if connections > 1 else 24 << 20
    digest = make_file(root / "big.bin", size, seed=connections)
    dest = tmp_path / "out" / "big.bin"
    rng = random.Random(1234 + connections)
    secured, steps = [], []
    for _ in range(4):
        step = rng.randint(1 << 20, size // 8 // connections)  # bytes each response sends, then holds
        hold = srv.fault("big.bin", hold_after=step, times=None)
        before = secured[-1] if secured else 0
        proc = spawn(srv.url("big.bin"), dest, "sha256:" + digest, connections)
        try:
            assert hold.wait_held(60), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no hold"
            kill_when(proc, lambda: progress_of(dest) >= before + step, f"{before + step} bytes on record")
        finally:
            proc.kill()
            proc.wait()
            srv.clear_faults()  # lets the held responses go (to a dead socket)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
        proc.stderr.close()
        assert not dest.exists(), "the destination must appear only complete"
        secured.append(progress_of(dest))
        steps.append(step)
        assert before + step <= secured[-1] < size
        state = json.loads(state_path(dest).read_text())
        assert state["url"] == srv.url("big.bin") and state["total"] == size and state["validator"]
    result = fetch(srv.url("big.bin"), dest, hash="sha256:" + digest, connections=connections, progress=False)
    assert result.status == "resumed"
    assert sha256_of(dest) == digest
    assert not part_path(dest).exists() and not state_path(dest).exists()
    ranged = [r for r in srv.log if r.method == "GET" and r.range and not r.range.startswith("bytes=0-")]
    assert ranged and all(r.status == 206 for r in ranged)
    # What was secured on disk at each kill is never fetched again. One connection: nothing is sent
    # twice. Several: a response's bytes since the last record of progress (at most all of them) may be.
    if connections == 1:
        assert srv.bytes_sent_total("big.bin") == size, ([(r.range, r.bytes_sent) for r in srv.log], secured)
    else:
        assert srv.bytes_sent_total("big.bin") <= size + connections * sum(steps)


def test_resume_sends_range_and_if_range_with_stored_validator(served, tmp_path):
    srv, root = served
    digest = make_file(root / "f.bin", 3 << 20)
    srv.fault("f.bin", cut_after=1 << 20)
    dest = tmp_path / "f.bin"
    result = fetch(srv.url("f.bin"), dest, hash=digest, retry_delay=0.01, progress=False)
    assert sha256_of(dest) == digest and result.status == "resumed"
    first, second = [r for r in srv.log if r.method == "GET"]
    assert first.range is None and first.bytes_sent == 1 << 20
    assert second.range == f"bytes={1 << 20}-" and second.status == 206
    assert second.if_range and second.if_range.startswith('"')  # the strong ETag of the first answer
    assert all(r.headers.get("Accept-Encoding") == "identity" for r in srv.log)


def test_changed_file_between_runs_starts_over_not_spliced(served, tmp_path):
    srv, root = served
    make_file(root / "f.bin", 4 << 20, seed=1)
    dest = tmp_path / "f.bin"
    srv.fault("f.bin", cut_after=1 << 20)
    with pytest.raises(Exception):
        fetch(srv.url("f.bin"), dest, retries=0, progress=False)
    assert part_path(dest).stat().st_size == 1 << 20
    time.sleep(0.01)
    new_digest = make_file(root / "f.bin", 4 << 20, seed=2)  # new version, new ETag
    result = fetch(srv.url("f.bin"), dest, progress=False)
    assert sha256_of(dest) == new_digest
    assert result.status == "downloaded"
    last = srv.log[-1]
    assert last.range == f"bytes={1 << 20}-" and last.status == 200  # If-Range failed: whole new file


def test_206_with_wrong_content_range_is_not_appended(served, tmp_path):
    srv, root = served
    digest = make_file(root / "f.bin", 2 << 20)
    size = 2 << 20
    dest = tmp_path / "f.bin"
    srv.fault("f.bin", cut_after=512 << 10)
    with pytest.raises(Exception):
        fetch(srv.url("f.bin"), dest, retries=0, progress=False)
    # The server claims to continue from another offset: appending would corrupt the file.
    srv.fault("f.bin", content_range=f"bytes 1000-{size - 1}/{size}")
    result = fetch(srv.url("f.bin"), dest, hash=digest, retry_delay=0.01, progress=False)
    assert sha256_of(dest) == digest and result.status == "downloaded"
    assert srv.log[-1].range is None  # started over from byte 0


def test_complete_part_finishes_on_416(served, tmp_path):
    srv, root = served
    digest = make_file(root / "f.bin", 1 << 20)
    dest = tmp_path / "f.bin"
    # A run killed after the last byte but before publishing: .part complete, state recorded.
    part_path(dest).parent.mkdir()
    part_path(dest).write_bytes((root / "f.bin").read_bytes())
    from email.utils import formatdate
    PartState(url_id(srv.url("f.bin")), validator=formatdate((root / "f.bin").stat().st_mtime, usegmt=True),
              total=1 << 20).save(dest)
    result = fetch(srv.url("f.bin"), dest, hash=digest, progress=False)
    assert sha256_of(dest) == digest and result.bytes_transferred == 0
    assert srv.log[-1].status == 416 and srv.log[-1].range == f"bytes={1 << 20}-"


def test_server_ignoring_range_restarts_from_zero(served, tmp_path):
    srv, root = served
    digest = make_file(root / "f.bin", 3 << 20)
    dest = tmp_path / "f.bin"
    srv.fault("f.bin", cut_after=1 << 20)
    srv.fault("f.bin", ignore_range=True)
    fetch(srv.url("f.bin"), dest, hash=digest, retry_delay=0.01, progress=False)
    assert sha256_of(dest) == digest
    assert [r.status for r in srv.log if r.method == "GET"] == [200, 200]


def test_python_http_server_without_range_support(stdlib_server, tmp_path):
    base, root = stdlib_server
    digest = make_file(root / "f.bin", 3 << 20)
    dest = tmp_path / "f.bin"
    part_path(dest).parent.mkdir()
    part_path(dest).write_bytes(b"x" * 1000)  # bytes of a run killed earlier
    PartState(url_id(f"{base}/f.bin"), validator="Thu, 01 Jan 2026 00:00:00 GMT", total=3 << 20).save(dest)
    result = fetch(f"{base}/f.bin", dest, hash=digest, progress=False)
    assert sha256_of(dest) == digest and result.size == 3 << 20


@pytest.mark.slow
def test_nginx_resume_after_kill(nginx, tmp_path):
    base, root, access_log = nginx
    size = 24 << 20
    digest = make_file(root / "n.bin", size, seed=9)
    dest = tmp_path / "n.bin"
    proc = spawn(f"{base}/slow/n.bin", dest, "sha256:" + digest)
    # nginx cannot be held: its limit_rate (2 MB/s) leaves the child ~10 s between 3 MiB and the end
    kill_when(proc, lambda: progress_of(dest) >= 3 << 20, "3 MiB on disk")
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    proc.stderr.close()
    have = part_path(dest).stat().st_size
    assert 0 < have < size
    result = fetch(f"{base}/n.bin", dest, hash="sha256:" + digest, progress=False)
    # Another URL of the same server: resumable only because the expected hash proves the bytes.
    assert sha256_of(dest) == digest
    assert result.status == "resumed" and result.bytes_transferred == size - have


def test_a_small_file_cut_short_is_recorded_and_resumed(served, tmp_path):
    # One-read bodies get no resume record up front (a file creation each), but one cut
    # short keeps its bytes resumable.
    srv, root = served
    digest = make_file(root / "small.bin", 300_000)
    dest = tmp_path / "small.bin"
    srv.fault("small.bin", cut_after=100_000)
    with pytest.raises(Exception):
        fetch(srv.url("small.bin"), dest, retries=0, progress=False)
    assert state_path(dest).exists() and part_path(dest).stat().st_size == 100_000
    result = fetch(srv.url("small.bin"), dest, hash=digest, progress=False)
    assert result.status == "resumed" and srv.log[-1].range == "bytes=100000-"
    assert sha256_of(dest) == digest
