"""Connections chosen by the engine (issue 13, point 2): with no setting, a large file on a server
that caps each connection gets more connections, and a server that gains nothing from them, serves
no ranges or has no strong validator keeps one. The ramp's rule, as properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine_helpers import make_file, sha256_of
from resumable import fetch
from resumable.ramp import AUTO_CAP, MIN_READS, SETTLE, WAITING, WINDOW, LinkProbe, Ramp

BIG = 80 << 20  # above the 64 MiB auto mode splits from


def gets(srv):
    return [r for r in srv.log if r.method == "GET"]


@pytest.mark.slow
def test_a_server_capping_each_connection_gets_more_connections(served, tmp_path):
    srv, root = served
    digest = make_file(root / "big.bin", BIG)
    srv.fault("big.bin", rate=8 << 20, times=None)  # 8 MiB/s per connection: one alone would take 10 s
    r = fetch(srv.url("big.bin"), tmp_path / "big.bin", hash=f"sha256:{digest}", progress=False)
    assert r.status == "downloaded" and sha256_of(tmp_path / "big.bin") == digest
    reads = gets(srv)
    # the first GET streams the whole file; the others take ranges of it, never from byte 0 again
    # (how far the ramp goes depends on the rates it sees: the ramp's own tests below)
    assert reads[0].range is None and len(reads) >= 2, [x.range for x in reads]
    assert all(x.range and not x.range.startswith("bytes=0-") for x in reads[1:])
    assert r.bytes_transferred == BIG


@pytest.mark.slow
def test_connections_1_keeps_one_connection_on_the_same_server(served, tmp_path):
    srv, root = served
    digest = make_file(root / "big.bin", BIG)
    srv.fault("big.bin", rate=64 << 20, times=None)
    fetch(srv.url("big.bin"), tmp_path / "big.bin", hash=f"sha256:{digest}", progress=False, connections=1)
    assert [x.range for x in gets(srv)] == [None]


@pytest.mark.slow
def test_small_files_and_servers_without_ranges_keep_one_connection(served, stdlib_server, tmp_path):
    srv, root = served
    digest = make_file(root / "small.bin", 8 << 20)
    srv.fault("small.bin", rate=16 << 20, times=None)
    fetch(srv.url("small.bin"), tmp_path / "small.bin", hash=f"sha256:{digest}", progress=False)
    assert len(gets(srv)) == 1  # below 64 MiB: not worth a second connection
    url, plain_root = stdlib_server  # no Range support: nothing to split
    digest = make_file(plain_root / "big.bin", BIG)
    r = fetch(f"{url}/big.bin", tmp_path / "plain.bin", hash=f"sha256:{digest}", progress=False)
    assert r.status == "downloaded" and r.bytes_transferred == BIG


@pytest.mark.slow
def test_an_auto_split_download_killed_midway_resumes_its_segments(served, tmp_path):
    import subprocess
    import sys
    import time

    srv, root = served
    digest = make_file(root / "big.bin", BIG)
    srv.fault("big.bin", rate=8 << 20, times=None)
    dest = tmp_path / "big.bin"
    child = subprocess.Popen([sys.executable, "-c", "import sys; from resumable import fetch; "
                              "fetch(sys.argv[1], sys.argv[2], progress=False)", srv.url("big.bin"), str(dest)])
    from resumable.state import PartState

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # killed once the segments are on record and under way
        state = PartState.load(dest)
        if state and len(state.segments) >= 2 and sum(d - s for s, _, d in state.segments) > 16 << 20:
            break
        time.sleep(0.02)
    child.kill()
    child.wait()
    assert state and len(state.segments) >= 2
    srv.log.clear()
    r = fetch(srv.url("big.bin"), dest, hash=f"sha256:{digest}", progress=False)
    assert r.status == "resumed" and sha256_of(dest) == digest
    assert r.bytes_transferred < BIG - (16 << 20)
    assert all(x.range for x in gets(srv))


@pytest.mark.slow
def test_an_unthrottled_nginx_keeps_one_connection(nginx, tmp_path):
    """Reads that find their data waiting (this machine, not the link, is the limit) get no company:
    on loopback a second connection only costs."""
    base, root, access_log = nginx
    digest = make_file(root / "fast.bin", BIG, seed=7)
    mark = access_log.stat().st_size
    r = fetch(f"{base}/fast.bin", tmp_path / "fast.bin", hash=f"sha256:{digest}", progress=False)
    assert r.status == "downloaded" and sha256_of(tmp_path / "fast.bin") == digest
    with open(access_log, "rb") as f:
        f.seek(mark)
        lines = [ln for ln in f.read().decode().splitlines() if "/fast.bin" in ln]
    assert len(lines) == 1, lines


# -- the ramp's rule ---------------------------------------------------------------------------------
def drive(ramp: Ramp, rate_of, seconds: float = 10.0, step: float = 0.01) -> list[int]:
    """Feed ``ramp`` the bytes a link delivers at ``rate_of(connections, now)`` bytes/s; the counts seen."""
    now, transferred, seen = 0.0, 0.0, []
    while now < seconds:
        now += step
        transferred += rate_of(ramp.connections, now) * step
        seen.append(ramp.update(now, int(transferred)))
    return seen


@settings(max_examples=200, deadline=None)
@given(per_connection=st.floats(1e3, 1e10), cap=st.integers(1, 32))
def test_a_per_connection_cap_ramps_to_the_cap_fast(per_connection, cap):
    seen = drive(Ramp(0.0, cap), lambda n, _t: per_connection * n)
    assert seen[-1] == cap
    assert seen == sorted(seen)  # never fewer
    # near-linear growth after the first doubling jumps straight to the cap: two measurements
    assert seen.index(cap) * 0.01 <= 2 * (SETTLE + WINDOW) + 0.05


@settings(max_examples=200, deadline=None)
@given(link=st.floats(1e3, 1e10), cap=st.integers(2, 32))
def test_a_shared_bottleneck_stops_at_two(link, cap):
    seen = drive(Ramp(0.0, cap), lambda n, _t: link)
    assert max(seen) == 2 and seen[-1] == 2


@settings(max_examples=200, deadline=None)
@given(rates=st.lists(st.floats(0, 1e10), min_size=1, max_size=40), cap=st.integers(1, 64))
def test_any_rates_stay_within_one_and_the_cap_and_never_shrink(rates, cap):
    seen = drive(Ramp(0.0, cap), lambda n, t: rates[min(int(t / 0.1), len(rates) - 1)] * min(n, 3), seconds=5)
    assert all(1 <= n <= cap for n in seen) and seen == sorted(seen)


def test_nothing_arriving_decides_nothing():
    assert set(drive(Ramp(0.0, AUTO_CAP), lambda n, _t: 0.0)) == {1}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@settings(max_examples=300, deadline=None)
@given(waits=st.lists(st.booleans(), min_size=1, max_size=200), gap=st.floats(0.001, 0.2))
def test_the_probe_splits_only_after_a_window_where_most_reads_waited(waits, gap):
    clock = Clock()
    probe = LinkProbe(0.0, clock)
    start, reads, waited_reads = 0.0, 0, 0  # the documented rule, computed alongside
    for waited in waits:
        clock.now += gap
        due = clock.now - start >= WINDOW
        expected = due and reads >= MIN_READS and waited_reads >= WAITING * reads
        assert probe.stop_here() == expected
        if expected:
            assert probe.split
            return
        if due:
            start, reads, waited_reads = clock.now, 0, 0
        probe.note(waited, 1000)
        reads, waited_reads = reads + 1, waited_reads + waited
    assert not probe.split


def test_a_link_bound_connection_starts_the_ramp_at_two():
    ramp = Ramp(0.0, AUTO_CAP, transferred=5 << 20, one_rate=20e6)
    assert ramp.connections == 2
    seen = drive(ramp, lambda n, _t: 20e6 * n)
    assert seen[-1] == AUTO_CAP
