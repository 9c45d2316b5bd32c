"""What a user reads on the default output is true (issue 16): retry lines count what will really
happen, a final error says why no re-run of the same command helps and what to change, a server
without Range support is named once (resume and extra connections are impossible with it), and
quoted errors are never cut mid-word."""

from __future__ import annotations

import logging

import pytest

from engine_helpers import make_file
from offline.file_server import FileServer
from resumable import IntegrityError, fetch
from resumable.attempt import servers_without_ranges
from resumable.http import clip

WRONG = "sha256:" + "0" * 64


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "resumable" and r.levelno >= logging.WARNING]


def test_a_wrong_hash_counts_downloads_not_retries_and_names_the_fix(served, tmp_path, caplog):
    srv, root = served
    make_file(root / "f.bin", 200_000)
    with caplog.at_level(logging.WARNING, logger="resumable"), \
            pytest.raises(IntegrityError) as err:
        fetch(srv.url("f.bin"), tmp_path / "f.bin", hash=WRONG, retries=5, retry_delay=0.01, progress=False)
    lines = _warnings(caplog)
    # 3 downloads in all: two lines announce the 2nd and 3rd, none claims a retry budget of 5
    assert len(lines) == 2 and not any("retry" in line for line in lines), lines
    assert "downloading it again from byte 0" in lines[0] and "(download 2 of at most 3 in this run)" in lines[0]
    assert "(download 3 of at most 3 in this run)" in lines[1]
    text = str(err.value)
    assert "\n" not in text and "gave up after 3 downloads from byte 0" in text
    assert "each download brought the same bytes" in text and "correct it (--hash" in text
    assert "run again" not in text  # the same command would fail the same way
    assert err.value.transient is False


def test_bytes_corrupted_differently_each_time_blame_the_transfer(served, tmp_path):
    srv, root = served
    digest = make_file(root / "f.bin", 200_000)
    for offset in (10, 20, 30):
        srv.fault("f.bin", corrupt_at=offset)
    with pytest.raises(IntegrityError, match="the downloads differ from each other: the server or the network "
                                             "corrupts the bytes; try a mirror"):
        fetch(srv.url("f.bin"), tmp_path / "f.bin", hash=digest, retries=5, retry_delay=0.01, progress=False)


def test_a_server_without_ranges_is_named_once_on_the_default_output(tmp_path, caplog):
    root = tmp_path / "www"
    root.mkdir()
    make_file(root / "a.bin", 3 << 20, seed=1)
    make_file(root / "b.bin", 3 << 20, seed=2)
    with FileServer(root, ranges=False) as srv, caplog.at_level(logging.INFO, logger="resumable"):
        for name in ("a.bin", "b.bin"):  # each cut half-way: the retry gets the whole file again
            srv.fault(name, cut_after=1 << 20)
            assert fetch(srv.url(name), tmp_path / name, retries=3, retry_delay=0.01,
                         progress=False).status == "downloaded"
        origin = srv.base_url.rstrip("/")
        said = [r for r in caplog.records if "does not serve byte ranges" in r.getMessage()]
        assert [r.levelno for r in said] == [logging.WARNING, logging.INFO]  # once on the default output
        first = said[0].getMessage()
        assert first.startswith("a.bin: the server at " + origin) and "1.0 MiB already here are downloaded again" in first
        assert "an interrupted download starts over from byte 0" in first
        assert origin in servers_without_ranges()


def test_forced_connections_on_a_server_without_ranges_say_why_there_is_one(stdlib_server, tmp_path, caplog):
    base, root = stdlib_server  # python -m http.server
    make_file(root / "c.bin", 1 << 20)
    with caplog.at_level(logging.WARNING, logger="resumable"):
        fetch(f"{base}/c.bin", tmp_path / "c.bin", connections=4, progress=False)
    lines = [m for m in _warnings(caplog) if "does not serve byte ranges" in m]
    assert len(lines) == 1 and "one connection instead of 4" in lines[0]


def test_quoted_errors_are_cut_at_a_word_boundary():
    text = "Max retries exceeded (Caused by NameResolutionError('Failed to resolve host name')) " * 5
    short = clip(text)
    assert short.endswith(" …") and len(short) <= 202
    words = set(text.replace("(", " ").replace(")", " ").split())
    assert short[:-2].split()[-1].strip("(),'") in {w.strip("(),'") for w in words}
    assert clip("short") == "short"
