"""libcurl as the transport of small bodies on many-file sessions (resumable/curl.py): the same
answers, errors and guarantees as through requests, checked against real servers."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine_helpers import free_port, make_file, sha256_of
from offline.file_server import FileServer
from resumable import FetchItem, curl, fetch_many, http
from resumable.errors import IntegrityError, StalledError, TransferError, UsageError

needs_curl = pytest.mark.skipif(curl._module() is None or curl.mode() == "requests",
                                reason="pycurl is not installed, or RESUMABLE_TRANSPORT=requests")


def batch(items, jobs=2, **options):
    """fetch_many on a many-file session of our own (so its libcurl count can be read)."""
    session = http.new_session(pool_size=4, many=True)
    try:
        results = fetch_many(items, jobs=jobs, helpers=0, session=session, progress=False, **options)
    finally:
        session.close()
    return results, session.body_sizes.through_curl


@needs_curl
def test_a_batch_of_small_files_comes_through_libcurl_verified_with_one_request_each(served, tmp_path):
    srv, root = served
    digests = {f"f{i}.bin": make_file(root / f"f{i}.bin", 50_000 + i, seed=i) for i in range(12)}
    items = [FetchItem(srv.url(name), tmp_path / "out" / name) for name in digests]
    results, through_curl = batch(items)
    assert all(r.status == "downloaded" for r in results), results
    assert {r.path.name: sha256_of(r.path) for r in results} == digests
    # Sizes unknown: the first answers from the origin (one per worker, at most) came through
    # requests, the others through libcurl.
    assert len(items) - 2 <= through_curl <= len(items) - 1
    assert len([q for q in srv.log if q.method == "GET"]) == len(items)


@needs_curl
def test_libcurl_sends_exactly_the_headers_requests_sends(served, tmp_path):
    srv, root = served
    for name in ("a.bin", "b.bin"):
        make_file(root / name, 1000)
    items = [FetchItem(srv.url(name), tmp_path / name) for name in ("a.bin", "b.bin")]
    _, through_curl = batch(items, jobs=1, headers={"X-Token": "t0ken", "X-Empty": ""})
    assert through_curl == 1
    first, second = ({k.lower(): v for k, v in q.headers.items()} for q in srv.log)
    assert first == second and first["x-token"] == "t0ken" and first["x-empty"] == ""
    assert first["accept-encoding"] == "identity" and first["user-agent"].startswith("train-pipeline")


@needs_curl
def test_a_small_body_cut_short_keeps_its_bytes_and_resumes(served, tmp_path):
    srv, root = served
    digest = make_file(root / "f.bin", 300_000)
    srv.fault("f.bin", cut_after=100_000)
    (result,), through_curl = batch([FetchItem(srv.url("f.bin"), tmp_path / "f.bin", size=300_000, hash=digest)],
                                    retry_delay=0.01)
    assert result.status == "resumed" and sha256_of(result.path) == digest and through_curl == 2
    assert [q.range for q in srv.log] == [None, "bytes=100000-"]


@needs_curl
def test_a_corrupt_small_body_is_kept_aside_and_fetched_again(served, tmp_path):
    srv, root = served
    digest = make_file(root / "f.bin", 200_000)
    srv.fault("f.bin", corrupt_at=1234)
    (result,), through_curl = batch([FetchItem(srv.url("f.bin"), tmp_path / "f.bin", size=200_000, hash=digest)],
                                    retry_delay=0.01)
    assert result.status == "downloaded" and sha256_of(result.path) == digest and through_curl == 2
    assert (tmp_path / ".resumable" / "f.bin.corrupt").stat().st_size == 200_000


@needs_curl
def test_a_stalled_small_body_ends_by_the_speed_rule(served, tmp_path):
    srv, root = served
    make_file(root / "f.bin", 100_000)
    srv.fault("f.bin", cut_after=10_000, stall=30)
    t0 = time.monotonic()
    (result,), _ = batch([FetchItem(srv.url("f.bin"), tmp_path / "f.bin", size=100_000)], retries=0,
                         speed_limit=1000, speed_time=1)
    assert isinstance(result, StalledError) and "slower than 1000 B/s" in str(result), result
    assert time.monotonic() - t0 < 10
    assert (tmp_path / ".resumable" / "f.bin.part").stat().st_size == 10_000  # kept for the resume


@needs_curl
def test_a_slow_small_body_within_the_speed_rule_is_not_a_stall(served, tmp_path):
    # 60 kB at 20 kB/s takes 3 s, three windows of 1 s: the rule (1000 B/s) holds throughout.
    srv, root = served
    digest = make_file(root / "f.bin", 60_000)
    srv.fault("f.bin", rate=20_000)
    (result,), through_curl = batch([FetchItem(srv.url("f.bin"), tmp_path / "f.bin", size=60_000, hash=digest)],
                                    retries=0, speed_limit=1000, speed_time=1)
    assert result.status == "downloaded" and through_curl == 1


@needs_curl
def test_a_refused_connection_is_said_so_and_not_retried(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/f.bin"
    t0 = time.monotonic()
    (result,), _ = batch([FetchItem(url, tmp_path / "f.bin", size=10)], retry_delay=5)
    assert isinstance(result, TransferError) and "connection refused" in str(result)
    assert not result.transient and time.monotonic() - t0 < 4


@needs_curl
def test_a_body_larger_than_its_known_size_goes_through_requests_and_is_refused(served, tmp_path):
    srv, root = served
    make_file(root / "f.bin", 3 << 20)
    (result,), through_curl = batch([FetchItem(srv.url("f.bin"), tmp_path / "f.bin", size=100_000)])
    assert isinstance(result, IntegrityError) and "server reports 3145728 bytes, expected 100000" in str(result)
    assert through_curl == 0 and not (tmp_path / "f.bin").exists()


@needs_curl
def test_an_origin_of_large_files_costs_no_aborted_transfer(served, tmp_path):
    srv, root = served
    names = [f"f{i}.bin" for i in range(4)]
    for i, name in enumerate(names):
        make_file(root / name, (2 << 20) + i, seed=i)
    results, through_curl = batch([FetchItem(srv.url(name), tmp_path / name) for name in names])
    assert all(r.status == "downloaded" for r in results) and through_curl == 0
    assert len([q for q in srv.log if q.method == "GET"]) == len(names)


@needs_curl
def test_credentials_stay_behind_on_a_redirect_to_another_origin(served, second_server, tmp_path):
    srv, root = served
    other, other_root = second_server
    digest = make_file(other_root / "f.bin", 5000)
    srv.redirect("f.bin", other.url("f.bin"))
    (result,), through_curl = batch([FetchItem(srv.url("f.bin"), tmp_path / "f.bin", size=5000, hash=digest)],
                                    headers={"Authorization": "Bearer s3cret", "X-Api-Key": "k3y"})
    assert result.status == "downloaded" and through_curl == 2  # the redirect and the file
    assert srv.log[0].headers.get("Authorization") == "Bearer s3cret"
    sent = {k.lower() for k in other.log[0].headers}
    assert "authorization" not in sent and "x-api-key" not in sent


@pytest.fixture()
def tls(tmp_path, monkeypatch):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    root = tmp_path / "srv"
    root.mkdir()
    with FileServer(root, tls=(str(cert), str(key))) as server:
        yield server, root, str(cert)


@needs_curl
def test_https_through_libcurl_trusts_exactly_the_bundle_requests_trusts(tls, tmp_path, monkeypatch):
    server, root, cert = tls
    digest = make_file(root / "f.bin", 70_000)
    # Without the test's certificate in the bundle: refused, as requests refuses it.
    (result,), _ = batch([FetchItem(server.url("f.bin"), tmp_path / "a" / "f.bin", size=70_000)], retries=0)
    assert isinstance(result, TransferError) and "SSL" in str(result)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert)
    (result,), through_curl = batch([FetchItem(server.url("f.bin"), tmp_path / "b" / "f.bin", size=70_000,
                                               hash=digest)])
    assert result.status == "downloaded" and sha256_of(result.path) == digest and through_curl == 1


_token = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"), min_size=1,
                 max_size=20)
_value = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=40)


@settings(max_examples=200, deadline=None)
@given(st.integers(200, 599), st.lists(st.tuples(_token, _value), max_size=12), st.integers(0, 3),
       st.binary(max_size=200), st.lists(st.sampled_from([b"\r\n", b"\n"]), min_size=20, max_size=20))
def test_the_final_head_is_found_whatever_came_before_and_after(status, fields, interim, trailer, ends):
    # Lines end in CRLF or a bare LF, mixed as a sloppy server mixes them (http.client takes both).
    end = iter(ends * 2).__next__
    head = (b"HTTP/1.1 100 Continue" + end() + end()) * interim
    head += f"HTTP/1.1 {status} Some Reason".encode() + end()
    head += b"".join(f"{k}: {v}".encode() + end() for k, v in fields)
    head += end() + trailer  # trailers (or anything) after the head never replace it
    got_status, reason, got = curl._final_head(head)
    assert (got_status, reason) == (status, "Some Reason")
    expected: dict[str, list[str]] = {}
    for k, v in fields:
        expected.setdefault(k.lower(), []).append(v.strip())
    assert {k.lower(): v for k, v in got.items()} == {k: ", ".join(v) for k, v in expected.items()}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_give_a_final_head_or_none(data):
    status, reason, fields = curl._final_head(data)
    assert status is None or (status >= 200 and isinstance(reason, str) and fields is not None)


def test_the_transport_setting_lists_its_choices(monkeypatch, tmp_path):
    monkeypatch.setenv("RESUMABLE_TRANSPORT", "requests")
    assert curl.mode() == "requests" and not curl.BodySizes().use_curl("http://h/x", True)
    monkeypatch.setenv("RESUMABLE_TRANSPORT", "bogus")
    with pytest.raises(UsageError, match="RESUMABLE_TRANSPORT 'bogus': use auto, curl or requests"):
        curl.mode()
    proc = subprocess.run([sys.executable, "-m", "train_pipeline.cli", "fetch", "http://127.0.0.1:9/x", "-o",
                           str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and proc.stderr.strip().splitlines() == [
        "error: RESUMABLE_TRANSPORT 'bogus': use auto, curl or requests (or leave it unset)"], proc.stderr


def test_importing_the_engine_or_fetch_help_does_not_import_pycurl():
    code = ("import sys, resumable, resumable.batch, resumable.http\n"
            "from train_pipeline.cli import main\n"
            "try: main(['fetch', '--help'])\nexcept SystemExit: pass\n"
            "print('pycurl' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stderr.strip().endswith("False"), proc.stderr


def test_without_pycurl_a_batch_goes_through_requests(served, tmp_path):
    srv, root = served
    digests = [make_file(root / f"f{i}.bin", 20_000, seed=i) for i in range(3)]
    code = ("import sys; sys.modules['pycurl'] = None\n"
            "from resumable import FetchItem, fetch_many\n"
            "urls, out = sys.argv[1:4], sys.argv[4]\n"
            "rs = fetch_many([FetchItem(u, f'{out}/{i}.bin') for i, u in enumerate(urls)], helpers=0)\n"
            "print(' '.join(r.digest for r in rs))")
    proc = subprocess.run([sys.executable, "-c", code, *(srv.url(f"f{i}.bin") for i in range(3)), str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [f"sha256:{d}" for d in digests]
