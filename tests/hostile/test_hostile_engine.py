"""Attacks on the transfer engine: a file is done only with the URL's bytes, sidecars never collide
with downloads, only regular files in the destination's folder are written, and every transfer ends.

Each test sets up what a hostile server, a careless user or planted local state would, then drives
the real engine (``resumable.fetch`` or the ``train-pipeline fetch`` command) against a real server
on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from resumable import FetchItem, curl, fetch, fetch_many, http
from resumable.errors import DiskSpaceError, IntegrityError, ResumableError, TransferError, UsageError
from resumable.state import part_path, record_dir, state_path
from resumable.verify import is_verified

REPO = Path(__file__).resolve().parents[2]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def gets(srv) -> list:
    return [r for r in srv.log if r.method == "GET"]


def plant_state(dest: Path, url: str, **fields) -> None:
    """A resume record as a killed run would leave it (both the URL and its digest, so the record
    reads the same to every version of the engine)."""
    record = {"url": url, "source": hashlib.sha256(url.encode()).hexdigest(), "owner": "x" * 32,
              "segments": [], "validator": None, "total": None, "expected_hash": None, **fields}
    state_path(dest).parent.mkdir(exist_ok=True)
    state_path(dest).write_text(json.dumps(record))


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "train_pipeline.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def assert_one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# -- 1. done means the URL's bytes ---------------------------------------------------------------
def test_a_file_the_user_wrote_is_replaced_not_reported_cached(files, tmp_path, write_random):
    srv, root = files
    digest = write_random(root / "f.bin", 100_000)
    dest = tmp_path / "out" / "f.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"my own notes, not the server's file")
    result = fetch(srv.url("f.bin"), dest, progress=False)
    assert result.status == "downloaded" and sha256(dest) == digest


def test_a_file_from_another_url_is_not_this_urls(files, tmp_path, write_random):
    srv, root = files
    write_random(root / "a.bin", 50_000, seed=1)
    b = write_random(root / "b.bin", 50_000, seed=2)
    dest = tmp_path / "f.bin"
    fetch(srv.url("a.bin"), dest, progress=False)
    result = fetch(srv.url("b.bin"), dest, size=50_000, progress=False)
    assert result.status == "downloaded" and sha256(dest) == b


def test_an_unreachable_url_never_reports_a_file_in_place_as_done(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"whatever was here")
    with pytest.raises(TransferError, match="connection refused"):
        fetch(f"http://127.0.0.1:{port}/f.bin", dest, retries=0, progress=False)
    assert dest.read_bytes() == b"whatever was here"  # kept: nothing verified replaced it


@pytest.mark.slow
def test_without_size_or_hash_a_file_is_revalidated_by_a_conditional_request(files, tmp_path, write_random):
    srv, root = files
    write_random(root / "f.bin", 200_000, seed=1)
    dest = tmp_path / "f.bin"
    fetch(srv.url("f.bin"), dest, progress=False)
    again = fetch(srv.url("f.bin"), dest, progress=False)
    last = gets(srv)[-1]
    assert again.status == "cached" and last.status == 304 and last.bytes_sent == 0
    assert last.headers.get("If-None-Match")  # the ETag the first download recorded
    time.sleep(1.1)  # a new version, with a new mtime and ETag
    new = write_random(root / "f.bin", 200_000, seed=2)
    changed = fetch(srv.url("f.bin"), dest, progress=False)
    assert changed.status == "downloaded" and sha256(dest) == new


@pytest.mark.parametrize("ranges", [True, False], ids=["if-range", "no-range-support"])
def test_a_file_rolled_back_to_an_older_date_is_not_taken_for_unchanged(tmp_path, write_random, ranges):
    from offline.file_server import FileServer

    root = tmp_path / "www"
    write_random(root / "f.bin", 200_000, seed=1)
    dest = tmp_path / "f.bin"
    with FileServer(root, etags=False, ranges=ranges) as srv:  # Last-Modified is the only validator
        fetch(srv.url("f.bin"), dest, progress=False)
        if ranges:
            again = fetch(srv.url("f.bin"), dest, progress=False)
            assert again.status == "cached" and (gets(srv)[-1].status, gets(srv)[-1].range) == (206, "bytes=0-0")
        older = write_random(root / "f.bin", 200_000, seed=2)
        os.utime(root / "f.bin", (1_500_000_000, 1_500_000_000))  # another file, with an older date
        result = fetch(srv.url("f.bin"), dest, progress=False)
    assert result.status == "downloaded" and sha256(dest) == older


def test_a_file_changed_in_place_with_its_mtime_restored_is_not_trusted(files, tmp_path, write_random):
    srv, root = files
    digest = write_random(root / "f.bin", 100_000)
    dest = tmp_path / "f.bin"
    fetch(srv.url("f.bin"), dest, hash=digest, progress=False)
    before = os.stat(dest)
    with open(dest, "r+b") as f:  # same size, one byte flipped, mtime put back
        f.seek(500)
        f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
    os.utime(dest, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert not is_verified(dest, hash=digest)
    result = fetch(srv.url("f.bin"), dest, hash=digest, progress=False)
    assert result.status == "downloaded" and sha256(dest) == digest


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".part", ".part.json", ".corrupt", ".lock", ".verified.json"])
def test_a_server_chosen_name_equal_to_a_sidecar_takes_nothing_from_the_other_file(files, tmp_path, write_random,
                                                                                  suffix):
    srv, root = files
    a = write_random(root / "a.bin", 3 << 20, seed=1)
    b = write_random(root / "b.bin", 200_000, seed=2)
    srv.content_disposition("b.bin", f'attachment; filename="a.bin{suffix}"')
    out = tmp_path / "out"
    srv.fault("a.bin", cut_after=1 << 20)  # a.bin is left part-way, as a killed run leaves it
    with pytest.raises(TransferError):
        fetch(srv.url("a.bin"), out / "a.bin", retries=0, progress=False)
    proc = run_cli("fetch", "-d", str(out), "-q", srv.url("b.bin"), srv.url("a.bin"))
    assert proc.returncode == 0, proc.stderr
    assert sha256(out / f"a.bin{suffix}") == b and sha256(out / "a.bin") == a


def test_a_hub_repo_holding_a_file_and_its_part_name_snapshots_both(tmp_path, write_random):
    from resumable.hub import snapshot
    from offline.hub_server import HubServer

    repo = tmp_path / "repos" / "org" / "clash"
    w = write_random(repo / "w.bin", 2 << 20, seed=1)
    p = write_random(repo / "w.bin.part", 300_000, seed=2)
    (repo / "config.json").write_text("{}")
    with HubServer(tmp_path / "repos") as hub:
        for include in ("w.bin.part", "w.bin", None):  # one file at a time, then the whole repo
            result = snapshot("org/clash", dest_root=tmp_path / "cache", endpoint=hub.endpoint, include=include,
                              progress=False)
            assert sha256(result.path / "w.bin.part") == p  # never taken for the other file's partial download
            transferred = result.bytes_transferred
    assert sha256(result.path / "w.bin") == w and transferred == 2  # only config.json was new


def test_two_urls_naming_one_file_in_a_batch_are_refused_before_any_transfer(files, tmp_path, write_random):
    srv, root = files
    write_random(root / "x" / "data.bin", 10_000, seed=1)
    write_random(root / "y" / "data.bin", 10_000, seed=2)
    proc = run_cli("fetch", "-d", str(tmp_path / "out"), "-q", srv.url("x/data.bin"), srv.url("y/data.bin"))
    line = assert_one_line_error(proc)
    assert "data.bin" in line and proc.returncode == 2
    assert not gets(srv) and not (tmp_path / "out" / "data.bin").exists()


def test_fetch_many_refuses_two_items_with_one_destination(files, tmp_path):
    from resumable import FetchItem, fetch_many

    srv, _ = files
    items = [FetchItem(srv.url("a"), tmp_path / "same"), FetchItem(srv.url("b"), tmp_path / "same")]
    with pytest.raises(UsageError, match="both be saved as"):
        fetch_many(items, progress=False)


_WRITER = """
import json, sys
from resumable import fetch
r = fetch(sys.argv[1], sys.argv[2], lock=False, progress=False, retry_delay=0.05)
print(json.dumps({"digest": r.digest}))
"""


def _writers(urls: list[str], dest: Path) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, url, str(dest)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for url in urls]
    digests = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        digests.append(json.loads(out.strip().splitlines()[-1])["digest"])
    return digests


@pytest.mark.slow
def test_without_the_lock_four_writers_of_one_url_return_the_files_digest(files, tmp_path, write_random):
    srv, root = files
    digest = write_random(root / "f.bin", 8 << 20)
    srv.fault("f.bin", rate=16 << 20, times=None)  # slow enough that the four overlap
    dest = tmp_path / "f.bin"
    returned = _writers([srv.url("f.bin")] * 4, dest)
    assert sha256(dest) == digest and returned == [f"sha256:{digest}"] * 4


@pytest.mark.slow
def test_without_the_lock_writers_of_two_urls_never_publish_a_mix(files, tmp_path, write_random):
    srv, root = files
    a = write_random(root / "a.bin", 8 << 20, seed=1)
    b = write_random(root / "b.bin", 8 << 20, seed=2)
    for name in ("a.bin", "b.bin"):
        srv.fault(name, rate=16 << 20, times=None)
    dest = tmp_path / "f.bin"
    returned = _writers([srv.url("a.bin"), srv.url("b.bin"), srv.url("a.bin"), srv.url("b.bin")], dest)
    assert sha256(dest) in (a, b)
    assert set(returned) == {f"sha256:{a}", f"sha256:{b}"}
    assert not list(record_dir(dest).glob("*part*"))  # no writer's part file is left behind


# -- 2. writes only where they belong -------------------------------------------------------------
def test_a_fifo_as_destination_is_refused(files, tmp_path, write_random):
    srv, root = files
    write_random(root / "f.bin", 1000)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="FIFO"):
        fetch(srv.url("f.bin"), fifo, progress=False)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and not gets(srv)


def test_a_socket_or_device_as_destination_is_refused(files, tmp_path, write_random):
    srv, root = files
    write_random(root / "f.bin", 1000)
    sock = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock))
        with pytest.raises(UsageError, match="socket"):
            fetch(srv.url("f.bin"), sock, progress=False)
    assert stat.S_ISSOCK(os.lstat(sock).st_mode)
    if os.geteuid() == 0:
        null = tmp_path / "null"
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null of our own
        with pytest.raises(UsageError, match="character device"):
            fetch(srv.url("f.bin"), null, progress=False)
        assert stat.S_ISCHR(os.lstat(null).st_mode)
    proc = run_cli("fetch", srv.url("f.bin"), "-o", str(sock), "-q")
    assert "socket" in assert_one_line_error(proc)


def test_a_planted_part_symlink_is_never_written_through(files, tmp_path, write_random):
    srv, root = files
    digest = write_random(root / "f.bin", 300_000)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"x" * 1000)
    dest = tmp_path / "dl" / "f.bin"
    dest.parent.mkdir()
    part_path(dest).parent.mkdir(exist_ok=True)
    os.symlink(victim, part_path(dest))
    st = os.stat(root / "f.bin")
    from email.utils import formatdate
    plant_state(dest, srv.url("f.bin"), validator=formatdate(st.st_mtime, usegmt=True), total=300_000)
    fetch(srv.url("f.bin"), dest, progress=False)
    assert victim.read_bytes() == b"x" * 1000
    assert not dest.is_symlink() and sha256(dest) == digest


def test_a_record_folder_that_is_a_symlink_is_refused(files, tmp_path, write_random):
    srv, root = files
    write_random(root / "f.bin", 1000)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "dl").mkdir()
    os.symlink(elsewhere, tmp_path / "dl" / ".resumable")
    with pytest.raises(UsageError, match=".resumable"):
        fetch(srv.url("f.bin"), tmp_path / "dl" / "f.bin", progress=False)
    assert not list(elsewhere.iterdir()) and not (tmp_path / "dl" / "f.bin").exists()


def test_a_lock_file_that_is_a_symlink_is_one_line(files, tmp_path, write_random):
    srv, root = files
    write_random(root / "f.bin", 1000)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    dest = tmp_path / "dl" / "f.bin"
    record_dir(dest).mkdir(parents=True)
    from resumable.locks import lock_file

    os.symlink(victim, lock_file(dest))
    proc = run_cli("fetch", srv.url("f.bin"), "-o", str(dest), "-q")
    assert "symlink" in assert_one_line_error(proc)
    assert victim.read_text() == "keep me"


# -- 3. secrets stay secret -------------------------------------------------------------------------
def test_a_redirect_to_another_origin_carries_no_user_header(files, other_origin, write_random, tmp_path):
    srv, _ = files
    cdn, cdn_root = other_origin
    digest = write_random(cdn_root / "f.bin", 10_000)
    srv.redirect("f.bin", cdn.url("f.bin"))
    secret = {"Authorization": "Bearer s1", "Private-Token": "s2", "X-Goog-Api-Key": "s3", "X-My-Secret": "s4",
              "Cookie": "session=s5"}
    fetch(srv.url("f.bin"), tmp_path / "f.bin", headers=secret, progress=False)
    assert sha256(tmp_path / "f.bin") == digest
    sent = {k.lower(): v for k, v in gets(cdn)[-1].headers.items()}
    assert not {k.lower() for k in secret} & set(sent), sent
    assert gets(srv)[-1].headers.get("Private-Token") == "s2"  # the origin it was meant for got it


def test_a_signed_urls_query_never_reaches_an_error_a_log_or_a_record(files, tmp_path, caplog, write_random):
    srv, root = files
    write_random(root / "f.bin", 3 << 20)
    secret = "X-Amz-Signature=SECRETSIG&token=SECRETTOK"
    caplog.set_level("DEBUG")
    srv.fault("f.bin", cut_after=1 << 20)
    with pytest.raises(TransferError) as cut:
        fetch(srv.url(f"f.bin?{secret}"), tmp_path / "f.bin", retries=0, progress=False)
    with pytest.raises(ResumableError) as dns:  # requests' own text quotes the whole request target
        fetch(f"http://nonexistent.invalid/f.bin?{secret}", tmp_path / "g.bin", retries=0, progress=False)
    with pytest.raises(UsageError) as bad_port:
        fetch(f"http://u:pw@h:99999/f.bin?{secret}", tmp_path / "h.bin", progress=False)
    texts = [str(cut.value), str(dns.value), str(bad_port.value), caplog.text]
    texts += [p.read_text(errors="replace") for p in record_dir(tmp_path / "f.bin").glob("*.json")]
    for text in texts:
        assert "SECRET" not in text and "pw@" not in text, text


# -- 4. every transfer ends -----------------------------------------------------------------------
_FETCH = """
import sys
from resumable import fetch
from resumable.errors import ResumableError
try:
    fetch(sys.argv[1], sys.argv[2], hash=sys.argv[3] or None, retries=2, retry_delay=0.01, progress=False)
except ResumableError as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
"""


def _bounded_fetch(url: str, dest: Path, hash: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", _FETCH, url, str(dest), hash], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_an_overstated_content_length_ends_within_a_few_full_downloads(files, tmp_path, write_random):
    srv, root = files
    write_random(root / "f.bin", 500_000)
    srv.fault("f.bin", length_delta=1000, times=None)
    proc = _bounded_fetch(srv.url("f.bin"), tmp_path / "f.bin")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    full = [r for r in gets(srv) if r.range is None]
    assert 1 <= len(full) <= 4, [(r.status, r.range) for r in gets(srv)]  # never more than a few full copies
    assert not (tmp_path / "f.bin").exists()


def test_an_overstated_content_length_completes_when_the_hash_agrees(files, tmp_path, write_random):
    srv, root = files
    digest = write_random(root / "f.bin", 500_000)
    srv.fault("f.bin", length_delta=1000, times=None)
    proc = _bounded_fetch(srv.url("f.bin"), tmp_path / "f.bin", hash=f"sha256:{digest}")
    assert proc.returncode == 0, proc.stderr
    assert sha256(tmp_path / "f.bin") == digest and len(gets(srv)) == 2  # the body, then a 416 for the rest


@pytest.mark.slow
def test_a_trickle_is_a_stall_that_ends(files, tmp_path, write_random):
    srv, root = files
    write_random(root / "f.bin", 100_000)
    srv.fault("f.bin", rate=40, times=None)  # 40 bytes a second, forever
    t0 = time.monotonic()
    with pytest.raises(TransferError, match="slower than"):
        fetch(srv.url("f.bin"), tmp_path / "f.bin", retries=1, retry_delay=0.01, speed_limit=1000, speed_time=1,
              progress=False)
    assert time.monotonic() - t0 < 15


def test_a_body_past_the_expected_size_stops_at_once(files, tmp_path, write_random):
    srv, root = files
    write_random(root / "f.bin", 10_000)
    srv.fault("f.bin", endless=True, chunked=True, times=None)
    with pytest.raises(IntegrityError, match="runs past the expected 10000 bytes"):
        fetch(srv.url("f.bin"), tmp_path / "f.bin", size=10_000, retries=0, progress=False)
    assert srv.bytes_sent_total("f.bin") < 64 << 20  # stopped, not read until the client gave up


@pytest.mark.parametrize("fault", [dict(endless=True, chunked=True), dict(endless=True, close_delimited=True)],
                         ids=["chunked", "spliced"])
def test_an_endless_body_stops_at_a_full_disk_with_one_line_and_a_resumable_part(files, small_disk, write_random,
                                                                                 fault):
    srv, root = files
    write_random(root / "f.bin", 1000)
    srv.fault("f.bin", times=None, **fault)
    dest = small_disk / "f.bin"
    with pytest.raises(DiskSpaceError, match="no space left"):
        fetch(srv.url("f.bin"), dest, retries=0, progress=False)
    assert part_path(dest).stat().st_size > 1 << 20 and state_path(dest).exists()  # kept for a resume
    for leftover in record_dir(dest).iterdir():
        leftover.unlink()
    proc = run_cli("fetch", srv.url("f.bin"), "-o", str(dest), "-q", "--retries", "0")
    assert "no space left" in assert_one_line_error(proc)


# -- 5. bad input is one line -------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("url", ["http://h:abc/x", "http://h:99999/x", "http://[::1/x", "http://h/a%00b",
                                 "ftp://h/x", "http://"])
def test_a_malformed_url_is_one_line(url, tmp_path):
    assert_one_line_error(run_cli("fetch", url, "-o", str(tmp_path / "f"), "-q"))


@pytest.mark.slow
def test_bad_destinations_are_one_line(files, tmp_path, write_random):
    srv, root = files
    write_random(root / "f.bin", 1000)
    (tmp_path / "afile").write_text("x")
    for args in (["-o", ""], ["-o", str(tmp_path / "afile" / "f.bin")], ["-d", str(tmp_path / "afile")],
                 ["-o", str(tmp_path)]):
        assert_one_line_error(run_cli("fetch", srv.url("f.bin"), "-q", *args))


def test_a_redirect_to_an_unusable_address_is_one_line(files, tmp_path):
    srv, _ = files
    srv.redirect("f.bin", "http://127.0.0.1:99999/f.bin")
    line = assert_one_line_error(run_cli("fetch", srv.url("f.bin"), "-o", str(tmp_path / "f"), "-q"))
    assert "redirected" in line


def test_names_up_to_name_max_download_with_their_sidecars(files, tmp_path, write_random):
    srv, root = files
    digest = write_random(root / "f.bin", 2 << 20)
    for length in (246, 250, 255):
        dest = tmp_path / ("n" * (length - 4) + ".bin")
        srv.fault("f.bin", cut_after=1 << 20)  # so that a resume record and a part are written
        result = fetch(srv.url("f.bin"), dest, hash=digest, retry_delay=0.01, progress=False)
        assert result.status == "resumed" and sha256(dest) == digest


@pytest.mark.parametrize("record", [
    {"segments": 5, "total": 2 << 20},
    {"segments": [[0, 10, 99]], "total": 2 << 20},
    {"validator": "\"abc\"\r\nX-Injected: 1", "total": 2 << 20},
    {"validator": 12345, "total": 2 << 20},
    {"total": -5},
    {"total": "lots"},
], ids=["segments-int", "segments-overrun", "validator-crlf", "validator-int", "total-negative", "total-text"])
def test_a_malformed_resume_record_is_ignored_not_fatal(files, tmp_path, write_random, record):
    srv, root = files
    digest = write_random(root / "f.bin", 2 << 20)
    dest = tmp_path / "f.bin"
    part_path(dest).parent.mkdir()
    part_path(dest).write_bytes(b"\x00" * 1000)
    plant_state(dest, srv.url("f.bin"), **record)
    assert fetch(srv.url("f.bin"), dest, hash=digest, progress=False).status == "downloaded"
    assert sha256(dest) == digest
    assert fetch(srv.url("f.bin"), dest, hash=digest, progress=False).status == "cached"


# -- found by a hostile tester after the first round ------------------------------------------------
def test_a_cut_body_with_a_content_encoding_is_not_published(raw_server, tmp_path):
    import gzip

    body = gzip.compress(os.urandom(1 << 20))

    def half(conn, head):  # S3/GCS serve objects stored gzip-encoded as they are, whatever we accept
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n" % len(body) + body[: len(body) // 2])

    base = raw_server(half)
    with pytest.raises(TransferError, match="body ended at byte"):
        fetch(f"{base}/f.bin", tmp_path / "f.bin", retries=1, retry_delay=0.01, progress=False)
    assert not (tmp_path / "f.bin").exists()


def test_a_server_without_validators_that_cuts_every_body_ends(tmp_path, write_random):
    from offline.file_server import FileServer

    root = tmp_path / "www"
    write_random(root / "f.bin", 3 << 20)
    with FileServer(root, validators=False) as srv:  # no ETag, no Last-Modified: nothing to resume against
        srv.fault("f.bin", cut_after=2 << 20, times=None)
        with pytest.raises(TransferError, match="gave up after 3 downloads from byte 0"):
            fetch(srv.url("f.bin"), tmp_path / "f.bin", retries=5, retry_delay=0.01, progress=False)
        assert len(gets(srv)) <= 4


def test_mirrors_share_one_budget_of_full_downloads(files, other_origin, tmp_path, write_random):
    srv, root = files
    mirror, mirror_root = other_origin
    digest = write_random(root / "f.bin", 300_000)
    write_random(mirror_root / "f.bin", 300_000)
    for server in (srv, mirror):
        server.fault("f.bin", corrupt_at=7, times=None)
    with pytest.raises(TransferError):
        fetch(srv.url("f.bin"), tmp_path / "f.bin", hash=digest, mirrors=[mirror.url("f.bin")], retries=5,
              retry_delay=0.01, progress=False)
    assert len(gets(srv)) + len(gets(mirror)) <= 4  # 3 full copies at most, and one try of the mirror


def test_a_batch_sees_through_folder_symlinks_and_dot_dots(files, tmp_path, write_random):
    from resumable import FetchItem, fetch_many

    srv, root = files
    write_random(root / "a.bin", 1000, seed=1)
    write_random(root / "b.bin", 1000, seed=2)
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    for a, b in ((tmp_path / "link" / "g.bin", tmp_path / "real" / "g.bin"),
                 (tmp_path / "real" / ".." / "real" / "g.bin", tmp_path / "real" / "g.bin")):
        with pytest.raises(UsageError, match="both be saved as"):
            fetch_many([FetchItem(srv.url("a.bin"), a), FetchItem(srv.url("b.bin"), b)], progress=False)
    assert not gets(srv)


def test_dir_mode_never_writes_through_a_symlink_in_the_folder(files, tmp_path, write_random):
    srv, root = files
    write_random(root / "small.txt", 1000)
    out = tmp_path / "d"
    out.mkdir()
    (out / "other.txt").write_text("precious")
    os.symlink("other.txt", out / "small.txt")
    line = assert_one_line_error(run_cli("fetch", srv.url("small.txt"), "-d", str(out), "-q"))
    assert "symlink" in line and (out / "other.txt").read_text() == "precious"


def test_a_part_that_is_a_hard_link_to_another_file_is_not_written(files, tmp_path, write_random):
    srv, root = files
    digest = write_random(root / "f.bin", 3 << 20)
    victim = tmp_path / "victim.bin"
    victim.write_bytes((root / "f.bin").read_bytes()[: 1 << 20])  # looks like a good start of the file
    dest = tmp_path / "dl" / "f.bin"
    part_path(dest).parent.mkdir(parents=True)
    os.link(victim, part_path(dest))
    st = os.stat(root / "f.bin")
    from offline.file_server import etag_of

    plant_state(dest, srv.url("f.bin"), validator=etag_of(st), total=3 << 20)
    fetch(srv.url("f.bin"), dest, hash=digest, progress=False)
    assert victim.stat().st_size == 1 << 20 and sha256(dest) == digest


def test_userinfo_never_reaches_the_datasets_table_or_a_snapshot_manifest(files, tmp_path, write_random):
    srv, root = files
    write_random(root / "small.txt", 1000)
    url = srv.url("small.txt").replace("http://", "http://user:s3cretpw@")
    proc = subprocess.run([sys.executable, "-m", "train_pipeline.cli", "datasets", "download", "mydata",
                           "--data-dir", str(tmp_path / "dd"), "--urls", url, "--quiet"],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr
    assert "s3cretpw" not in proc.stdout + proc.stderr

    from resumable.hub import snapshot
    from offline.hub_server import HubServer

    (tmp_path / "repos" / "org" / "m").mkdir(parents=True)
    (tmp_path / "repos" / "org" / "m" / "config.json").write_text("{}")
    with HubServer(tmp_path / "repos") as hub:
        result = snapshot("org/m", dest_root=tmp_path / "cache", progress=False,
                          endpoint=hub.endpoint.replace("http://", "http://user:pa55word@"))
    assert "pa55word" not in (result.path / ".snapshot.json").read_text()


def test_a_url_that_names_no_file_is_reported_without_its_secrets(files, tmp_path):
    srv, _ = files
    for url in (srv.url("").replace("http://", "http://u:p@ss@"), srv.url("?t=abc'SECRET9")):
        line = assert_one_line_error(run_cli("fetch", url, "-d", str(tmp_path / "q"), "-q"))
        assert "ss@" not in line and "SECRET9" not in line, line


def test_a_name_over_name_max_is_one_line(files, tmp_path):
    srv, _ = files
    for dest in (tmp_path / ("a" * 256), tmp_path / ("b" * 256) / "f.bin"):
        assert "too long" in assert_one_line_error(run_cli("fetch", srv.url("f.bin"), "-o", str(dest), "-q"))
        with pytest.raises(ResumableError):
            fetch(srv.url("f.bin"), dest, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("answer", [b"<html>proxy login</html>", b'[{"type": "file", "path": "a"}]',
                                    b'[{"type": "file", "path": "a", "size": "6", "oid": "' + b"0" * 40 + b'"}]'],
                         ids=["html", "no-size", "size-as-text"])
def test_an_endpoint_that_is_not_the_hub_is_one_line(raw_server, tmp_path, answer):
    sha = "a" * 40

    def reply(conn, head):
        body = (b'{"id": "org/m", "sha": "%s"}' % sha.encode()) if b"/revision/" in head else answer
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n%s" % (len(body), body))

    base = raw_server(reply)
    proc = run_cli("model", "download", "org/m", "--revision", sha, "--endpoint", base, "--dest",
                   str(tmp_path / "mc"), "-q")
    assert "Hub" in assert_one_line_error(proc)


@pytest.mark.slow
def test_ctrl_c_stops_a_download_at_once_and_it_resumes(files, tmp_path, write_random):
    import signal

    srv, root = files
    digest = write_random(root / "f.bin", 40 << 20)
    srv.fault("f.bin", rate=4 << 20)  # ten seconds for the whole file
    dest = tmp_path / "f.bin"
    proc = subprocess.Popen([sys.executable, "-m", "train_pipeline.cli", "fetch", srv.url("f.bin"), "-o", str(dest),
                             "-q"], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 30
    while not (part_path(dest).exists() and part_path(dest).stat().st_size > 4 << 20):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    assert proc.wait(timeout=20) == 130 and time.monotonic() - t0 < 3
    assert "interrupted" in proc.stderr.read()
    assert fetch(srv.url("f.bin"), dest, hash=digest, progress=False).status == "resumed"


def _forever(conn, first: bytes, then: bytes, pause: float = 0.0) -> None:
    conn.sendall(first)
    while True:
        conn.sendall(then)
        time.sleep(pause)


# Answers that never deliver a body byte.
NO_BODY_EVER = [
    lambda conn, head: _forever(conn, b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a", pause=0.2),  # a header, a byte at a time
    lambda conn, head: _forever(conn, b"", b"HTTP/1.1 100 Continue\r\n\r\n"),  # interim answers, never the final one
    lambda conn, head: _forever(conn, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n",
                                b"X-Trailer: 1\r\n"),  # a body, then endless trailers
]
NO_BODY_EVER_IDS = ["trickled-header", "endless-100-continue", "endless-trailers"]


@pytest.mark.slow
@pytest.mark.parametrize("reply", NO_BODY_EVER, ids=NO_BODY_EVER_IDS)
def test_a_response_that_never_delivers_body_bytes_still_ends(raw_server, tmp_path, reply):
    base = raw_server(reply)
    t0 = time.monotonic()
    with pytest.raises(TransferError, match="slower than"):
        fetch(f"{base}/f.bin", tmp_path / "f.bin", retries=1, retry_delay=0.01, speed_limit=1000, speed_time=1,
              timeout=(5, 5), progress=False)
    assert time.monotonic() - t0 < 15 and not (tmp_path / "f.bin").exists()


@pytest.mark.skipif(curl._module() is None, reason="pycurl is not installed")
@pytest.mark.parametrize("reply", [
    *NO_BODY_EVER,
    lambda conn, head: conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"),
    lambda conn, head: conn.sendall(b"garbage\r\n\r\n"),
    lambda conn, head: conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n"),
], ids=[*NO_BODY_EVER_IDS, "short-body", "not-http", "interim-then-close"])
def test_hostile_answers_through_libcurl_end_with_a_transfer_error(raw_server, tmp_path, reply):
    # A batch item of a known small size: libcurl makes the request (resumable/curl.py).
    base = raw_server(reply)
    t0 = time.monotonic()
    result, _ = _through_libcurl(f"{base}/f.bin", dest=tmp_path / "f.bin", size=100, retries=0, speed_limit=1000,
                                 speed_time=1, timeout=(5, 5))
    assert isinstance(result, TransferError), result
    assert time.monotonic() - t0 < 15 and not (tmp_path / "f.bin").exists()


def _through_libcurl(url: str, headers: dict | None = None, **options):
    """A batch of one item of a known small size (so libcurl makes the request, resumable/curl.py)
    on a session of our own: (result, answers libcurl brought)."""
    session = http.new_session(1, many=True)
    try:
        (result,) = fetch_many([FetchItem(url, options.pop("dest"), size=options.pop("size", 10))], helpers=0,
                               headers=headers or {}, session=session, **options)
    finally:
        session.close()
    return result, session.body_sizes.through_curl


@pytest.mark.skipif(curl._module() is None, reason="pycurl is not installed")
@pytest.mark.parametrize("head", [
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 Fine\r\nContent-Length: 10\r\nETag: \"v1\"\r\nX-Dup: a\r\n"
    b"X-Dup: b\r\nX-Fold: one\r\n two\r\n\r\n",
    b"HTTP/1.1 200 Fine\nContent-Length: 10\nETag: \"v1\"\nX-Dup: a\nX-Dup: b\r\nX-Fold: one\n two\n\n",
], ids=["crlf-after-100", "bare-lf"])
def test_heads_through_libcurl_read_as_http_client_reads_them(raw_server, tmp_path, head):
    seen = {}
    base = raw_server(lambda conn, request: conn.sendall(head + b"0123456789"))
    session = http.new_session(1, many=True)

    def get():  # on a worker thread, as in a batch (the main thread keeps requests: Ctrl-C)
        with http.request(session, "GET", f"{base}/f.bin", {}, (5, 5), small=True) as resp:
            seen.update(status=resp.status_code, reason=resp.reason, body=resp.raw.read(100), dup=resp.headers["x-dup"],
                        fold=resp.headers["X-Fold"], etag=http.strong_validator(resp), length=http.body_length(resp))

    worker = threading.Thread(target=get)
    worker.start()
    worker.join(30)
    session.close()
    assert seen == dict(status=200, reason="Fine", body=b"0123456789", dup="a, b", fold="one two", etag='"v1"',
                        length=10)
    assert session.body_sizes.through_curl == 1


@pytest.mark.skipif(curl._module() is None, reason="pycurl is not installed")
def test_an_answer_libcurl_refuses_is_read_through_requests(raw_server, tmp_path):
    base = raw_server(lambda conn, head: conn.sendall(b"HTTP/1.1  200 OK\r\nContent-Length: 10\r\n\r\n0123456789"))
    result, through_curl = _through_libcurl(f"{base}/f.bin", dest=tmp_path / "f.bin")
    assert result.status == "downloaded" and through_curl == 0
    assert (tmp_path / "f.bin").read_bytes() == b"0123456789"


@pytest.mark.skipif(curl._module() is None, reason="pycurl is not installed")
def test_headers_through_libcurl_are_merged_and_encoded_as_requests_sends_them(raw_server, tmp_path):
    heads = []

    def reply(conn, head):
        heads.append(head)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789")

    base = raw_server(reply)
    # A caller's "accept-encoding: gzip" never beats the engine's identity (bytes are stored as sent).
    result, through_curl = _through_libcurl(f"{base}/f.bin", {"accept-encoding": "gzip", "x-user": "Jos\u00e9",
                                                              "X-Blank": " "}, dest=tmp_path / "f.bin")
    assert result.status == "downloaded" and through_curl == 1
    lines = heads[0].split(b"\r\n")
    assert [line.lower() for line in lines if line.lower().startswith(b"accept-encoding")] == [b"accept-encoding: identity"]
    assert b"x-user: Jos\xe9" in lines and any(line.lower().startswith(b"x-blank:") for line in lines)


@pytest.mark.skipif(curl._module() is None, reason="pycurl is not installed")
def test_a_read_timeout_shorter_than_the_speed_window_holds_through_libcurl(raw_server, tmp_path):
    base = raw_server(lambda conn, head: _forever(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123", b"",
                                                  pause=1))
    t0 = time.monotonic()
    result, _ = _through_libcurl(f"{base}/f.bin", dest=tmp_path / "f.bin", size=100, retries=0, timeout=(2, 2),
                                 speed_limit=1024, speed_time=30)
    assert isinstance(result, TransferError) and "timed out" in str(result), result
    assert time.monotonic() - t0 < 10


@pytest.mark.skipif(curl._module() is None, reason="pycurl is not installed")
def test_the_speed_rule_with_a_short_read_timeout_still_ends_a_trickle_through_libcurl(raw_server, tmp_path):
    # 50 B/s, never idle for the 5 s read timeout, under the 1000 B/s rule over 2 s.
    base = raw_server(lambda conn, head: _forever(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b"x" * 5,
                                                  pause=0.1))
    t0 = time.monotonic()
    result, _ = _through_libcurl(f"{base}/f.bin", dest=tmp_path / "f.bin", size=100_000, retries=0, timeout=(5, 5),
                                 speed_limit=1000, speed_time=2)
    assert isinstance(result, TransferError) and "slower than 1000 B/s" in str(result), result
    assert time.monotonic() - t0 < 10


@pytest.mark.skipif(curl._module() is None, reason="pycurl is not installed")
@pytest.mark.parametrize("options", [dict(speed_time=1e19), dict(speed_limit=1e20), dict(timeout=(1e19, 1e19))])
def test_huge_speeds_and_times_through_libcurl_mean_never(raw_server, tmp_path, options):
    base = raw_server(lambda conn, head: conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"))
    result, through_curl = _through_libcurl(f"{base}/f.bin", dest=tmp_path / "f.bin", retries=0, **options)
    assert not isinstance(result, Exception) or "slower than" in str(result), result
    assert through_curl == 1
