"""Size and hash verification while downloading, atomic publish, cheap re-checks (points 6, 7, 14)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

import resumable.hashes
from engine_helpers import make_file, sha256_of
from resumable import IntegrityError, UsageError, fetch, parse_hash, verify_file
from resumable.state import corrupt_path, part_path


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "sha256", "sha512"])
def test_each_algorithm_with_prefix_and_bare_hex(served, tmp_path, algorithm):
    srv, root = served
    make_file(root / "f.bin", 300_000)
    hexdigest = hashlib.new(algorithm, (root / "f.bin").read_bytes()).hexdigest()
    for i, expected in enumerate([f"{algorithm}:{hexdigest}", hexdigest.upper()]):
        result = fetch(srv.url("f.bin"), tmp_path / f"{i}.bin", hash=expected, progress=False)
        assert result.digest == f"{algorithm}:{hexdigest}"


@pytest.mark.parametrize("bad", ["sha256:xyz", "abc", "crc32:12345678", "md5:" + "0" * 31])
def test_malformed_hash_is_a_usage_error_naming_it(bad):
    with pytest.raises(UsageError) as info:
        parse_hash(bad)
    assert repr(bad) in str(info.value) or bad in str(info.value)


def test_corrupt_download_is_kept_aside_and_fetched_again(served, tmp_path):
    srv, root = served
    digest = make_file(root / "f.bin", 2 << 20)
    srv.fault("f.bin", corrupt_at=123_456)
    dest = tmp_path / "f.bin"
    result = fetch(srv.url("f.bin"), dest, hash=digest, retry_delay=0.01, progress=False)
    assert sha256_of(dest) == digest and result.status == "downloaded"
    bad = corrupt_path(dest).read_bytes()
    assert len(bad) == 2 << 20 and hashlib.sha256(bad).hexdigest() != digest


def test_persistent_corruption_fails_clearly_within_the_budget(served, tmp_path):
    srv, root = served
    digest = make_file(root / "f.bin", 200_000)
    srv.fault("f.bin", corrupt_at=10, times=None)
    dest = tmp_path / "f.bin"
    with pytest.raises(IntegrityError, match="sha256 is .* expected " + digest):
        fetch(srv.url("f.bin"), dest, hash=digest, retries=2, retry_delay=0.01, progress=False)
    assert not dest.exists()
    assert len(srv.log) == 3  # bad bytes are no progress: each costs an attempt


def test_a_source_that_keeps_sending_bad_bytes_gets_two_more_chances(served, tmp_path):
    srv, root = served
    digest = make_file(root / "f.bin", 200_000)
    srv.fault("f.bin", corrupt_at=10, times=None)
    with pytest.raises(IntegrityError):
        fetch(srv.url("f.bin"), tmp_path / "f.bin", hash=digest, retries=10, retry_delay=0.01, progress=False)
    assert len(srv.log) == 3  # however generous the network retry budget


def test_wrong_expected_size_fails_before_transfer(served, tmp_path):
    srv, root = served
    make_file(root / "f.bin", 5000)
    with pytest.raises(IntegrityError, match="server reports 5000 bytes, expected 4000"):
        fetch(srv.url("f.bin"), tmp_path / "f.bin", size=4000, progress=False)


def test_resume_hashes_the_prefix_once_and_no_whole_file_pass_follows(served, tmp_path, monkeypatch):
    srv, root = served
    size = 6 << 20
    digest = make_file(root / "f.bin", size)
    reads = []
    real = resumable.hashes.update_from_fd

    def spy(h, fd, start=0, end=None, buf=None):
        reads.append((start, end))
        return real(h, fd, start, end, buf)

    monkeypatch.setattr(resumable.hashes, "update_from_fd", spy)
    srv.fault("f.bin", cut_after=2 << 20)
    fetch(srv.url("f.bin"), tmp_path / "f.bin", hash=digest, retry_delay=0.01, progress=False)
    # The prefix of the resumed attempt is read back once; the new bytes are hashed as they arrive
    # (spliced ones from the page cache right behind the transfer, each region once:
    # test_fetch_zerocopy), so no byte is read back twice and no whole-file pass follows.
    resumed = reads[reads.index((0, 2 << 20)):]
    assert sum(end - start for start, end in resumed) <= size
    assert all(start >= 2 << 20 for start, _ in resumed[1:])


def test_existing_verified_file_is_skipped_without_rehash(served, tmp_path, monkeypatch):
    srv, root = served
    digest = make_file(root / "f.bin", 1 << 20)
    dest = tmp_path / "f.bin"
    fetch(srv.url("f.bin"), dest, hash=digest, progress=False)
    srv.log.clear()
    calls = []
    real = resumable.hashes.update_from_file
    monkeypatch.setattr(resumable.hashes, "update_from_file", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = fetch(srv.url("f.bin"), dest, hash=digest, progress=False)
    assert again.status == "cached" and again.bytes_transferred == 0 and srv.log == [] and calls == []
    os.utime(dest)  # touched: the record no longer vouches for it, so it is re-hashed once
    assert fetch(srv.url("f.bin"), dest, hash=digest, progress=False).status == "cached"
    assert len(calls) == 1 and srv.log == []


def test_modified_destination_is_refetched(served, tmp_path):
    srv, root = served
    digest = make_file(root / "f.bin", 1 << 20)
    dest = tmp_path / "f.bin"
    fetch(srv.url("f.bin"), dest, hash=digest, progress=False)
    with open(dest, "r+b") as f:
        f.seek(1000)
        f.write(b"\0\0\0")
    result = fetch(srv.url("f.bin"), dest, hash=digest, progress=False)
    assert result.status == "downloaded" and sha256_of(dest) == digest


def test_good_file_is_never_replaced_by_a_worse_one(served, tmp_path):
    srv, root = served
    digest = make_file(root / "f.bin", 100_000)
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"an older file the user still has")
    srv.fault("f.bin", corrupt_at=5, times=None)
    with pytest.raises(IntegrityError):
        fetch(srv.url("f.bin"), dest, hash=digest, retries=1, retry_delay=0.01, progress=False)
    assert dest.read_bytes() == b"an older file the user still has"


def test_destination_appears_only_complete(served, tmp_path):
    srv, root = served
    make_file(root / "f.bin", 1 << 20)
    dest = tmp_path / "f.bin"
    srv.fault("f.bin", cut_after=500_000)
    with pytest.raises(Exception):
        fetch(srv.url("f.bin"), dest, retries=0, progress=False)
    assert not dest.exists() and part_path(dest).stat().st_size == 500_000


def test_verify_file_guide_semantics(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"hello")
    sha = hashlib.sha256(b"hello").hexdigest()
    md5 = hashlib.md5(b"hello").hexdigest()
    assert verify_file(path, 5, sha)
    assert verify_file(path, 5, md5, hash_algorithm="md5")
    assert verify_file(path, 5, md5)  # 32 hex characters: md5
    assert not verify_file(path, 6, sha)
    assert not verify_file(path, None, "sha256:" + "0" * 64)
    assert not verify_file(tmp_path / "missing", 5)


@pytest.mark.slow
def test_memory_stays_flat_with_small_chunk_size(served, tmp_path):
    srv, root = served
    size = 200 << 20
    digest = make_file(root / "big.bin", size)
    code = f"""
import resource, sys
from resumable import ResumableDownloader
d = ResumableDownloader(chunk_size=4096)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ok = d.download_file({srv.url('big.bin')!r}, {str(tmp_path / 'big.bin')!r}, expected_hash={digest!r})
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(ok, (after - before) // 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "True"
    assert int(out[1]) < 64, f"peak memory grew by {out[1]} MiB for a {size >> 20} MiB file"
    reads = [r for r in srv.log if r.method == "GET"]
    # one GET of the whole file; more only as ranges of it, when auto mode added connections
    assert reads[0].range is None and all(r.range for r in reads[1:]), [r.range for r in reads]
