"""Connections chosen by the engine (issue 13, point 2): with no setting, a large file on a server
that caps each connection gets more connections, and a server that gains nothing from them, serves
no ranges or has no strong validator keeps one. The ramp's rule, as properties."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine_helpers import kill_when, make_file, sha256_of
from resumable import fetch
from resumable.ramp import (AUTO_CAP, BATCH_BUSY, BATCH_WINDOW, MIN_READS, SETTLE, WAITING, WINDOW, LinkProbe, Ramp,
                            WorkerRamp)
from resumable.segments import STEAL_FLOOR
from resumable.state import PartState

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


# The kill below lands where the server holds every connection: the whole-file GET after FIRST_HOLD
# bytes (at 8 MiB/s that is 3 s of reads that wait on the link: the probe splits long before), every
# ranged GET after RANGE_HOLD bytes. A split leaves both halves at least STEAL_FLOOR bytes, more than
# RANGE_HOLD, so every ranged GET holds before its segment ends: the download cannot finish, and the
# test kills it once two segments are on record, however slowly the machine gets there.
FIRST_HOLD = 24 << 20
RANGE_HOLD = 256 << 10


def _ranges(requests) -> list[tuple[int, int]]:
    """(first, last) byte of each ranged GET (``bytes=a-b``)."""
    spans = []
    for x in requests:
        a, _, b = x.range.removeprefix("bytes=").partition("-")
        spans.append((int(a), int(b)))
    return spans


@pytest.mark.slow
def test_an_auto_split_download_killed_midway_resumes_its_segments(served, tmp_path):
    assert RANGE_HOLD < STEAL_FLOOR < FIRST_HOLD
    srv, root = served
    digest = make_file(root / "big.bin", BIG)
    srv.fault("big.bin", rate=8 << 20, hold_after=FIRST_HOLD)  # the first GET: the whole file
    ranged = srv.fault("big.bin", rate=8 << 20, hold_after=RANGE_HOLD, times=None)  # every later GET
    dest = tmp_path / "big.bin"
    child = subprocess.Popen([sys.executable, "-c", "import sys; from resumable import fetch; "
                              "fetch(sys.argv[1], sys.argv[2], progress=False)", srv.url("big.bin"), str(dest)])

    def segments_under_way() -> int:
        state = PartState.load(dest)
        return sum(1 for s, _, d in state.segments if d > s) if state and state.segments else 0

    # killed once a helper connection is held mid-body and two segments have bytes on record
    kill_when(child, lambda: ranged.held.is_set() and segments_under_way() >= 2,
              "two segments under way, a ranged GET held", timeout=120)
    state = PartState.load(dest)
    assert not dest.exists() and state and len([1 for s, _, d in state.segments if d > s]) >= 2, state
    on_record = [(s, d) for s, _, d in state.segments if d > s]
    kept = sum(d - s for s, d in on_record)
    assert 0 < kept < BIG
    srv.clear_faults()  # the held bodies end (their client is gone)
    srv.log.clear()
    r = fetch(srv.url("big.bin"), dest, hash=f"sha256:{digest}", progress=False)
    assert r.status == "resumed" and sha256_of(dest) == digest
    assert r.bytes_transferred == BIG - kept  # every byte on record kept, no byte fetched twice
    reads = gets(srv)
    assert reads and all(x.range for x in reads), [x.range for x in reads]
    for a, b in _ranges(reads):  # no range asks again for bytes the record kept
        assert all(b < s or a >= d for s, d in on_record), ((a, b), on_record)


_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" (?P<status>\d{3}) (?P<sent>\d+)')


def _nginx_requests(access_log, mark: int, path: str, size: int, timeout: float = 60.0) -> list[dict]:
    """The access-log entries for ``path`` after byte ``mark`` of the log, once they hold the
    whole-file answer (200) and account for ``size`` body bytes: nginx writes an entry when it ends a
    request, which may be a moment after the client has every byte (waited for here, not raced)."""
    deadline = time.monotonic() + timeout
    while True:
        with open(access_log, "rb") as f:
            f.seek(mark)
            found = [m.groupdict() for m in map(_ACCESS.search, f.read().decode().splitlines())
                     if m and m["path"] == path]
        whole = any(e["status"] == "200" for e in found) and sum(int(e["sent"]) for e in found) >= size
        if whole or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.mark.slow
def test_an_unthrottled_nginx_keeps_one_connection(nginx, tmp_path, caplog):
    """Reads that find their data waiting (this machine, not the link, is the limit) get no company:
    on loopback a second connection only costs.

    Whether a read finds its data waiting is the scheduler's call, not the test's: on an idle machine
    nginx stays ahead, on one whose cores are busy it can miss its turn, and then the connection does
    wait (a link-bound connection, by the probe's rule, which the property tests below pin). So: one
    request, unless the engine said that its connection waited on the link; split or not, auto mode
    opens no connection before that word, the file is requested whole once, and every byte arrives
    exactly once."""
    base, root, access_log = nginx
    digest = make_file(root / "fast.bin", BIG, seed=7)
    mark = access_log.stat().st_size
    with caplog.at_level(logging.DEBUG, logger="resumable"):
        r = fetch(f"{base}/fast.bin", tmp_path / "fast.bin", hash=f"sha256:{digest}", progress=False)
    assert r.status == "downloaded" and sha256_of(tmp_path / "fast.bin") == digest
    assert r.bytes_transferred == BIG  # no byte fetched twice
    entries = _nginx_requests(access_log, mark, "/fast.bin", BIG)
    answers = [(e["method"], e["status"]) for e in entries]
    split = [rec.getMessage() for rec in caplog.records if "waiting on the link" in rec.getMessage()]
    if not split:
        assert answers == [("GET", "200")] and int(entries[0]["sent"]) == BIG, entries
    else:  # the connection waited (a busy machine): others joined it, each for a range of the rest
        assert answers.count(("GET", "200")) == 1 and set(answers) == {("GET", "200"), ("GET", "206")}, (split, entries)


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


# -- a batch's workers ------------------------------------------------------------------------------
def run_batch(cap: int, busy_of, seconds: float = 2.0, step: float = 0.01) -> list[int]:
    """A batch process's workers over time, its CPU busy ``busy_of(workers, now)`` seconds per second."""
    clock, cpu = Clock(), Clock()
    ramp = WorkerRamp(cap, clock=clock, cpu=cpu)
    workers, seen = 1, []
    while clock.now < seconds:
        clock.now += step
        cpu.now += busy_of(workers, clock.now) * step
        workers += ramp.more(workers)
        seen.append(workers)
    return seen


@settings(max_examples=200, deadline=None)
@given(busy=st.floats(BATCH_BUSY + 0.01, 4.0), cap=st.integers(1, 32))
def test_a_busy_batch_process_keeps_one_worker(busy, cap):
    """Its core is the limit: a second worker would only add GIL hand-offs."""
    assert set(run_batch(cap, lambda _n, _t: busy)) == {1}


@settings(max_examples=200, deadline=None)
@given(per_worker=st.floats(0.0, (BATCH_BUSY - 0.01) / 32), cap=st.integers(1, 32))
def test_waiting_workers_double_up_to_the_cap(per_worker, cap):
    """Files that keep their workers waiting (a far server): every worker counts, as in aria2c -j8."""
    seen = run_batch(cap, lambda n, _t: per_worker * n)
    assert seen[-1] == cap and seen == sorted(seen)
    assert all(b in (a, min(2 * a, cap)) for a, b in zip(seen, seen[1:]))  # doubles, never jumps
    steps = (cap - 1).bit_length()  # doublings from 1 to the cap
    assert seen.index(cap) * 0.01 <= (steps + 1) * (BATCH_WINDOW + 0.01)


@settings(max_examples=200, deadline=None)
@given(loads=st.lists(st.floats(0.0, 3.0), min_size=1, max_size=40), cap=st.integers(1, 64))
def test_any_load_stays_within_one_and_the_cap_and_never_shrinks(loads, cap):
    seen = run_batch(cap, lambda n, t: loads[min(int(t / 0.05), len(loads) - 1)] * min(n, 2))
    assert all(1 <= n <= cap for n in seen) and seen == sorted(seen)
