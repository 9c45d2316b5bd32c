"""Two processes fetching the same destination (point 8) and multi-connection segments (point 9)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine_helpers import make_file, sha256_of
from resumable import fetch
from resumable.state import part_path
from resumable.segments import plan_bounds

CHILD = """
import sys
from resumable import fetch
url, dest, digest, lock = sys.argv[1:5]
r = fetch(url, dest, hash=digest, progress=False, lock=lock == "1", retry_delay=0.05)
print(r.status, r.bytes_transferred)
"""


def run_two(url, dest, digest, lock: bool):
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, url, str(dest), digest, "1" if lock else "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    return [o[0].split() for o in outs]


@pytest.mark.slow
def test_second_process_waits_and_reuses_the_result(served, tmp_path):
    srv, root = served
    size = 16 << 20
    digest = make_file(root / "f.bin", size)
    srv.fault("f.bin", rate=32 << 20, times=None)
    results = run_two(srv.url("f.bin"), tmp_path / "f.bin", digest, lock=True)
    assert sha256_of(tmp_path / "f.bin") == digest
    assert sorted(r[0] for r in results) == ["cached", "downloaded"]
    assert srv.bytes_sent_total("f.bin") == size  # transferred once


def test_the_lock_holds_between_threads_and_needs_no_file_per_destination(tmp_path):
    """One byte of the folder's shared lock file per destination: threads of one process exclude
    each other on the same name, never wait on another name, and no lock file is made per name."""
    import threading
    import time

    from resumable.locks import exclusive, lock_file

    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    (tmp_path / ".resumable").mkdir()
    entered = []

    def second_writer():
        with exclusive(a):
            entered.append(time.monotonic())

    with exclusive(a):
        t = threading.Thread(target=second_writer)
        t.start()
        with exclusive(b):  # another name: no wait
            pass
        time.sleep(0.3)
        assert not entered  # the same name: waits
        released = time.monotonic()
    t.join(5)
    assert entered and entered[0] >= released
    assert sorted(p.name for p in (tmp_path / ".resumable").iterdir()) == [lock_file(a).name]


@pytest.mark.slow
def test_correct_even_when_the_lock_does_nothing(served, tmp_path):
    # NFS locks can silently do nothing: two writers on one .part must still end byte-identical.
    srv, root = served
    size = 16 << 20
    digest = make_file(root / "f.bin", size)
    srv.fault("f.bin", rate=32 << 20, times=None)
    run_two(srv.url("f.bin"), tmp_path / "f.bin", digest, lock=False)
    assert sha256_of(tmp_path / "f.bin") == digest
    assert not part_path(tmp_path / "f.bin").exists() and not list((tmp_path / ".resumable").glob("*part*"))


@pytest.mark.slow
def test_segments_fetch_in_parallel_and_verify_the_whole_file(served, tmp_path):
    srv, root = served
    size = 70 << 20
    digest = make_file(root / "f.bin", size)
    # Paced (the server counts every block it sends) at a rate a busy machine still reads as it comes:
    # what the kernel buffers between the server's send and our read (up to tcp_rmem's 32 MiB here)
    # is sent before the stop is seen; at 256 MiB/s a reader starved for 50 ms already has 12 MiB there.
    srv.fault("f.bin", rate=32 << 20, times=None)
    result = fetch(srv.url("f.bin"), tmp_path / "f.bin", hash=digest, connections=4, progress=False)
    assert sha256_of(result.path) == digest and result.bytes_transferred == size
    gets = [r for r in srv.log if r.method == "GET"]
    # 70 MiB / 32 MiB minimum segment: two segments (sized 1:2, so the hash follows the transfer);
    # a connection that finishes early takes half of another's rest (pieces sized by the speed),
    # and the connection it took from stops there: only bytes in flight are sent twice.
    b = plan_bounds(size, 2)
    assert {f"bytes=0-{b[1] - 1}", f"bytes={b[1]}-{size - 1}"} <= {r.range for r in gets}
    assert all(r.status == 206 and r.if_range for r in gets)
    assert size <= srv.bytes_sent_total("f.bin") <= size + (len(gets) - 2) * (8 << 20)


@pytest.mark.slow
def test_a_cut_segment_resumes_on_its_own(served, tmp_path):
    srv, root = served
    size = 70 << 20
    digest = make_file(root / "f.bin", size)
    srv.fault("f.bin", cut_after=5 << 20)
    fetch(srv.url("f.bin"), tmp_path / "f.bin", hash=digest, connections=2, retry_delay=0.01, progress=False)
    assert sha256_of(tmp_path / "f.bin") == digest
    # The cut segment resumes exactly where its bytes stopped (5 MiB in); other ranged requests
    # may appear where an idle connection took over half of a segment's rest.
    starts = set(plan_bounds(size, 2)[:2])
    resumed = [r for r in srv.log if r.method == "GET" and int(r.range[6:].split("-")[0]) - (5 << 20) in starts]
    assert resumed and all(r.status == 206 for r in resumed)


def test_small_or_rangeless_files_fall_back_to_one_connection(served, tmp_path):
    srv, root = served
    digest = make_file(root / "f.bin", 1 << 20)
    fetch(srv.url("f.bin"), tmp_path / "f.bin", hash=digest, connections=8, progress=False)
    assert sha256_of(tmp_path / "f.bin") == digest
    assert [r.method for r in srv.log] == ["HEAD", "GET"]


@pytest.mark.slow
def test_segmented_server_ignoring_range_restarts_cleanly(tmp_path):
    from offline.file_server import FileServer

    root = tmp_path / "srv"
    size = 70 << 20
    digest = make_file(root / "f.bin", size)
    with FileServer(root) as srv:
        srv.fault("f.bin", ignore_range=True, times=1)
        result = fetch(srv.url("f.bin"), tmp_path / "f.bin", hash=digest, connections=2, retry_delay=0.01,
                       progress=False)
    assert sha256_of(result.path) == digest


@pytest.mark.slow
def test_segmented_part_resumes_even_when_rerun_with_one_connection(served, tmp_path):
    # A .part preallocated by a multi-connection run has holes: its size is not its progress.
    import signal

    from engine_helpers import kill_when
    from resumable.state import PartState

    srv, root = served
    size = 70 << 20
    digest = make_file(root / "f.bin", size)
    hold = srv.fault("f.bin", hold_after=6 << 20, times=None)  # every segment stops after 6 MiB until the kill
    dest = tmp_path / "f.bin"
    code = ("import sys; from resumable import fetch; "
            "fetch(sys.argv[1], sys.argv[2], connections=4, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code, srv.url("f.bin"), str(dest)])

    def segments_on_record() -> int:
        state = PartState.load(dest)
        return sum(d - s for s, _, d in state.segments) if state and state.segments else 0

    try:
        assert hold.wait_held(60)
        kill_when(proc, lambda: segments_on_record() >= 6 << 20, "6 MiB of segments on record")
    finally:
        proc.kill()
        proc.wait()
        srv.clear_faults()
    assert proc.returncode == -signal.SIGKILL and len(PartState.load(dest).segments) >= 2
    assert part_path(dest).stat().st_size == size  # sparse, full size: its size is not its progress
    # No expected hash: nothing but the resume logic stands between the holes and the result.
    result = fetch(srv.url("f.bin"), dest, connections=1, progress=False)
    assert sha256_of(dest) == digest and result.status == "resumed"
