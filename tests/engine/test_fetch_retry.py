"""Retries: transient failures only, backoff, Retry-After, a budget that resets on progress (point 4)."""

from __future__ import annotations

import email.utils
import logging
import re
import threading
import time

import pytest

from engine_helpers import make_file, sha256_of
from resumable import HTTPStatusError, TransferError, fetch
from resumable.http import parse_retry_after


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(served, tmp_path, status):
    srv, root = served
    digest = make_file(root / "f.bin", 100_000)
    srv.fault("f.bin", status=status, times=2)
    result = fetch(srv.url("f.bin"), tmp_path / "f.bin", hash=digest, retry_delay=0.01, progress=False)
    assert sha256_of(result.path) == digest
    assert [r.status for r in srv.log] == [status, status, 200]


@pytest.mark.parametrize("status", [401, 403, 404, 410, 400, 451])
def test_permanent_statuses_fail_at_once_with_a_clear_error(served, tmp_path, status):
    srv, root = served
    make_file(root / "f.bin", 1000)
    srv.fault("f.bin", status=status)
    with pytest.raises(HTTPStatusError) as info:
        fetch(srv.url("f.bin"), tmp_path / "f.bin", retry_delay=0.01, progress=False)
    assert len(srv.log) == 1
    message = str(info.value)
    assert f"HTTP {status}" in message and "\n" not in message and srv.url("f.bin") in message
    assert not (tmp_path / "f.bin").exists()


def retry_waits(caplog) -> list[float]:
    """The waits the engine announced before each retry ("...; retry 1/5 in 2.0s")."""
    return [float(m.group(1)) for r in caplog.records if (m := re.search(r"retry \d+/\d+ in ([\d.]+)s$", r.getMessage()))]


def gaps(srv) -> list[float]:
    """Seconds between the arrivals of consecutive requests, as the server saw them."""
    return [b.at - a.at for a, b in zip(srv.log, srv.log[1:])]


@pytest.mark.slow
def test_retry_after_seconds_is_honoured(served, tmp_path, caplog):
    srv, root = served
    digest = make_file(root / "f.bin", 1000)
    srv.fault("f.bin", status=503, retry_after="2")
    with caplog.at_level(logging.WARNING, logger="resumable"):
        result = fetch(srv.url("f.bin"), tmp_path / "f.bin", hash=digest, retry_delay=0.01, progress=False)
    assert sha256_of(result.path) == digest
    assert [r.status for r in srv.log] == [503, 200]
    assert retry_waits(caplog) == [2.0]  # what the server asked, though our own backoff was 10 ms
    assert gaps(srv)[0] >= 2.0 - 0.05  # and waited that long before asking again


@pytest.mark.slow
def test_ratelimit_header_is_honoured_without_retry_after(served, tmp_path, caplog):
    srv, root = served
    make_file(root / "f.bin", 1000)
    srv.fault("f.bin", status=429, headers={"RateLimit": '"api";r=0;t=2'})
    with caplog.at_level(logging.WARNING, logger="resumable"):
        fetch(srv.url("f.bin"), tmp_path / "f.bin", retry_delay=0.01, progress=False)
    assert [r.status for r in srv.log] == [429, 200]
    assert retry_waits(caplog) == [2.0] and gaps(srv)[0] >= 2.0 - 0.05


@pytest.mark.slow
def test_retry_after_http_date_is_honoured(served, tmp_path, caplog):
    """``Retry-After: <HTTP-date>``: the retry comes at that moment, not after our own backoff."""
    srv, root = served
    digest = make_file(root / "f.bin", 1000)
    dates = []

    def three_seconds_from_now() -> str:  # made when the 503 is sent: (2, 3] s ahead, whole seconds
        dates.append(int(time.time()) + 3)
        return email.utils.formatdate(dates[-1], usegmt=True)

    srv.fault("f.bin", status=503, retry_after=three_seconds_from_now)
    with caplog.at_level(logging.WARNING, logger="resumable"):
        result = fetch(srv.url("f.bin"), tmp_path / "f.bin", hash=digest, retry_delay=0.01, progress=False)
    assert sha256_of(result.path) == digest and [r.status for r in srv.log] == [503, 200]
    (wait,) = retry_waits(caplog)
    assert 0.5 < wait <= 3.0  # the date, less the time the answer took to arrive (our backoff: 10 ms)
    assert srv.log[1].at >= dates[0] - 0.05  # not before the date the server named


def test_retry_after_over_the_cap_is_capped(served, tmp_path):
    """A server asking for an hour gets the cap (RetryPolicy's retry_after_cap): the CLI says so and
    waits; the test stops it there rather than sit out the cap."""
    import inspect
    import signal
    import subprocess
    import sys

    from resumable.retry import RetryPolicy

    cap = inspect.signature(RetryPolicy).parameters["retry_after_cap"].default
    assert 0 < cap < 3600
    srv, root = served
    make_file(root / "f.bin", 1000)
    srv.fault("f.bin", status=429, retry_after="3600", times=None)
    proc = subprocess.Popen([sys.executable, "-m", "train_pipeline.cli", "fetch", srv.url("f.bin"), "-o",
                             str(tmp_path / "f.bin"), "-q"], stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(120, proc.kill)  # only if the line never comes
    watchdog.start()
    try:
        line = proc.stderr.readline()
        still_waiting = proc.poll() is None
    finally:
        watchdog.cancel()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert line.rstrip("\n").endswith(f"HTTP 429 Too Many Requests; retry 1/5 in {cap:.1f}s"), line
    assert still_waiting and [r.status for r in srv.log] == [429]  # waiting, not asking again
    assert not (tmp_path / "f.bin").exists()


def test_retry_after_http_date_is_parsed():
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= parse_retry_after(date, now=now) <= 31
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("garbage") is None
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0


def test_budget_resets_whenever_bytes_arrive(served, tmp_path):
    srv, root = served
    digest = make_file(root / "f.bin", 2 << 20)
    # Six cuts in a row with only 2 retries allowed: it still finishes, because each try makes progress.
    for _ in range(6):
        srv.fault("f.bin", cut_after=300_000)
    result = fetch(srv.url("f.bin"), tmp_path / "f.bin", hash=digest, retries=2, retry_delay=0.01, progress=False)
    assert sha256_of(result.path) == digest
    assert len([r for r in srv.log if r.method == "GET"]) == 7


def test_gives_up_after_retries_without_progress(served, tmp_path):
    srv, root = served
    make_file(root / "f.bin", 1000)
    srv.fault("f.bin", status=503, times=None)
    with pytest.raises(HTTPStatusError, match="HTTP 503"):
        fetch(srv.url("f.bin"), tmp_path / "f.bin", retries=3, retry_delay=0.01, progress=False)
    assert len(srv.log) == 4


@pytest.mark.slow
def test_stalled_connection_times_out_and_resumes(served, tmp_path):
    srv, root = served
    digest = make_file(root / "f.bin", 1 << 20)
    stall = srv.fault("f.bin", hold_after=200_000)  # then silence: only the read timeout (2 s) ends it
    giveup = threading.Timer(60, stall.release)  # a timeout that never fires: the body ends whole, unresumed
    giveup.start()
    try:  # the speed rule (30 s) is off: the read timeout alone must end the stall
        result = fetch(srv.url("f.bin"), tmp_path / "f.bin", hash=digest, timeout=(30, 2), retry_delay=0.01,
                       speed_limit=0, progress=False)
    finally:
        giveup.cancel()
    assert sha256_of(result.path) == digest and result.status == "resumed" and stall.holds == 1
    first, second = [r for r in srv.log if r.method == "GET"][:2]
    assert (first.range, first.bytes_sent) == (None, 200_000)
    assert (second.range, second.status) == ("bytes=200000-", 206)


def test_a_refused_first_connection_fails_at_once_with_the_fix(tmp_path):
    """Nothing listens there: a wrong address or a server that is down. Retrying with backoff only
    delayed the one-line answer (35 s with the defaults); curl and wget give up at once too."""
    import time

    from engine_helpers import free_port

    url = f"http://127.0.0.1:{free_port()}/f.bin"
    t0 = time.monotonic()
    with pytest.raises(TransferError, match="connection refused.*check the URL") as info:
        fetch(url, tmp_path / "f.bin", retry_delay=1.0, progress=False)  # default retries: 5
    assert time.monotonic() - t0 < 1.0 and not info.value.transient
    assert not (tmp_path / "f.bin").exists()


def test_a_server_refusing_after_bytes_came_is_waited_for_and_resumed(tmp_path):
    """Refused once the download had bytes: a server restarting. That is retried, and resumed.

    The steps follow what happened, not a clock: the first server holds the body after 1 MiB, goes
    away (listener closed, connection cut), and the new one starts once the engine has been refused."""

    from engine_helpers import free_port
    from offline.file_server import FileServer

    root = tmp_path / "srv"
    digest = make_file(root / "f.bin", 4 << 20)
    port = free_port()
    first = FileServer(root, port=port).start()
    held = first.fault("f.bin", hold_after=1 << 20)  # 1 MiB, then silence until the server stops
    refused, fetch_over = threading.Event(), []
    restarted = []

    class Refusals(logging.Handler):
        def emit(self, record):
            if "refused" in record.getMessage():
                refused.set()

    def restart():
        if held.wait_held(60):
            first.stop()  # nothing listens any more, and the held connection is closed
            if refused.wait(60) and not fetch_over:
                restarted.append(FileServer(root, port=port).start())

    handler = Refusals()
    logging.getLogger("resumable").addHandler(handler)
    helper = threading.Thread(target=restart)
    helper.start()
    try:
        result = fetch(first.url("f.bin"), tmp_path / "f.bin", hash=digest, retry_delay=0.2, progress=False)
    finally:
        logging.getLogger("resumable").removeHandler(handler)
        fetch_over.append(True)
        held.held.set()
        refused.set()  # the helper need not wait any longer
        helper.join()
        first.stop()
        for srv in restarted:
            srv.stop()
    assert restarted and sha256_of(result.path) == digest and result.status == "resumed"
    assert [r.range for r in restarted[0].log if r.method == "GET"] == [f"bytes={1 << 20}-"]


def test_lying_content_length_is_resumed_not_trusted(served, tmp_path):
    srv, root = served
    digest = make_file(root / "f.bin", 1 << 20)
    srv.fault("f.bin", length_delta=+5000)  # promises more than it sends, then hangs up
    result = fetch(srv.url("f.bin"), tmp_path / "f.bin", hash=digest, retry_delay=0.01, timeout=(2, 5),
                   progress=False)
    assert sha256_of(result.path) == digest
