"""disk.DirectWriter: a large body written around the page cache (O_DIRECT) on a thread of its own.
Whatever the chunk sizes and the starting offset, the file ends with exactly the bytes given, and
the counts it returns never include a byte the file lacks, also when the disk refuses a write."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resumable.disk import ALIGN, DIRECT_MIN, DirectWriter


def direct_writer(path, pos: int):
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    writer = DirectWriter.start(fd, pos, None)
    if writer is None:
        os.close(fd)
        pytest.skip(f"the file system under {path} refuses O_DIRECT")
    return fd, writer


def test_a_short_body_is_left_to_the_page_cache(tmp_path):
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        assert DirectWriter.start(fd, 0, DIRECT_MIN - 1) is None
    finally:
        os.close(fd)


@settings(max_examples=40, deadline=None)
@given(pos=st.one_of(st.just(0), st.integers(1, 3 * ALIGN)),
       sizes=st.lists(st.one_of(st.integers(1, 5000), st.integers(ALIGN - 3, ALIGN + 3),
                                st.integers(1 << 19, 3 << 20)), min_size=1, max_size=12))
def test_the_file_holds_exactly_the_bytes_given_and_counts_follow_the_file(tmp_path_factory, pos, sizes):
    path = tmp_path_factory.mktemp("direct") / "f.bin"
    data = os.urandom(sum(sizes))
    gc.collect()  # sockets of earlier tests' sessions (in reference cycles) close now, not during the count
    open_before = len(os.listdir("/proc/self/fd"))
    fd, writer = direct_writer(path, pos)
    reader = os.open(path, os.O_RDONLY)  # its own descriptor: the writer's has O_DIRECT on
    try:
        counted, at = 0, 0
        for size in sizes:
            counted += writer.write(data[at:at + size])
            at += size
            # never a byte counted that the file lacks
            assert os.pread(reader, counted, pos) == data[:counted]
        counted += writer.finish()
        assert counted == len(data)
        import fcntl

        assert not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT  # back to ordinary writes for the caller
    finally:
        os.close(fd)
        os.close(reader)
    assert len(os.listdir("/proc/self/fd")) == open_before  # the writer's own descriptor is closed
    with open(path, "rb") as f:
        f.seek(pos)
        assert f.read() == data


def test_abort_keeps_every_byte_received(tmp_path):
    """A cut connection: what was received (aligned or not) is in the file for the resume."""
    path = tmp_path / "f.bin"
    data = os.urandom((3 << 20) + 12345)
    fd, writer = direct_writer(path, 0)
    try:
        writer.write(data[:1 << 20])
        writer.write(data[1 << 20:])
        writer.abort()
    finally:
        os.close(fd)
    assert path.read_bytes() == data


REFUSED = """
import os, resource, signal, sys
from resumable.disk import DirectWriter
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (5 << 20, 5 << 20))
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
writer = DirectWriter.start(fd, 0, None)
if writer is None:
    print("refused"); sys.exit(0)
counted = 0
try:
    for _ in range(20):
        counted += writer.write(b"x" * (1 << 20))
    counted += writer.finish()
except OSError as exc:
    writer.abort()
    print("error", exc.errno, counted, os.fstat(fd).st_size)
    sys.exit(0)
print("no error", counted)
"""


def test_a_write_the_disk_refuses_is_raised_and_never_counted(tmp_path):
    """EFBIG past RLIMIT_FSIZE stands for a full disk: the error reaches the caller, and the bytes
    counted before it are all in the file."""
    out = subprocess.run([sys.executable, "-c", REFUSED, str(tmp_path / "f.bin")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    words = out.stdout.split()
    if words == ["refused"]:
        pytest.skip("the file system refuses O_DIRECT")
    assert words[0] == "error" and int(words[1]) == 27, out.stdout  # EFBIG
    counted, size = int(words[2]), int(words[3])
    assert 0 < counted <= size <= 5 << 20
