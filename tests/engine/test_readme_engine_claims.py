"""README.md (Downloading files) claims reached through `train-pipeline fetch`, as a user types it,
that no other test covered:

- headers you add (API keys, tokens, cookies) never follow a redirect to another host (another port,
  or another host name of the same server), while the harmless ones (User-Agent, Range and its
  validator on a resume) do; within one origin they all follow;
- --speed-limit/--speed-time: a body slower than the limit for the window is a stall, reconnected
  and resumed; --speed-limit 0 turns the rule off;
- -o names a file: `-o DIR/` is refused in one line before any transfer."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine_helpers import make_file, sha256_of

SECRETS = {"X-Api-Key": "key-123", "X-Auth-Token": "tok-456", "Authorization": "Bearer s3cr3t",
           "Cookie": "session=1", "X-Custom": "mine"}


def _fetch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train_pipeline.cli", "fetch", "-q", *args], capture_output=True,
                          text=True, timeout=120)


def _header_args() -> list[str]:
    return [a for name, value in SECRETS.items() for a in ("--header", f"{name}: {value}")]


def _lower(headers: dict) -> dict:
    return {k.lower(): v for k, v in headers.items()}


@pytest.mark.slow
def test_added_headers_stay_behind_on_a_redirect_to_another_host(served, second_server, tmp_path):
    srv, root = served
    cdn, cdn_root = second_server
    digest = make_file(cdn_root / "blob.bin", 300_000)
    make_file(root / "blob.bin", 300_000)
    # Another port of 127.0.0.1, and another host name (localhost) of the very same server.
    srv.redirect("model.bin", cdn.url("blob.bin").replace("127.0.0.1", "localhost") + "?X-Signature=abc")
    srv.redirect("alias.bin", srv.url("blob.bin").replace("127.0.0.1", "localhost"))
    cdn.fault("blob.bin", cut_after=100_000)  # the first body drops: the resume asks the CDN for a Range

    r = _fetch(srv.url("model.bin"), "-o", str(tmp_path / "model.bin"), "--hash", f"sha256:{digest}", *_header_args())
    assert r.returncode == 0, r.stderr
    assert sha256_of(tmp_path / "model.bin") == digest
    first = _lower(srv.requests_for("model.bin")[0].headers)
    assert {k: first.get(k.lower()) for k in SECRETS} == SECRETS  # the host you named gets them all
    at_cdn = [_lower(x.headers) for x in cdn.requests_for("blob.bin") if x.method == "GET"]
    assert len(at_cdn) >= 2
    for headers in at_cdn:
        assert not {k.lower() for k in SECRETS} & set(headers), headers
        assert headers["user-agent"].startswith("train-pipeline")
    assert at_cdn[-1]["range"].startswith("bytes=") and at_cdn[-1]["range"] != "bytes=0-"
    assert "if-range" in at_cdn[-1]  # Range and its validator do cross

    before = len(srv.log)
    r = _fetch(srv.url("alias.bin"), "-o", str(tmp_path / "alias.bin"), *_header_args())
    assert r.returncode == 0, r.stderr
    followed = [_lower(x.headers) for x in srv.log[before:] if x.path == "/blob.bin"]
    assert followed and all(h["host"].startswith("localhost:") for h in followed)
    assert all(not {k.lower() for k in SECRETS} & set(h) for h in followed), followed


def test_added_headers_follow_a_redirect_within_the_same_origin(served, tmp_path):
    srv, root = served
    make_file(root / "real.bin", 10_000)
    srv.redirect("alias.bin", "/real.bin")
    r = _fetch(srv.url("alias.bin"), "-o", str(tmp_path / "real.bin"), *_header_args())
    assert r.returncode == 0, r.stderr
    headers = _lower(srv.requests_for("real.bin")[-1].headers)
    assert {k: headers.get(k.lower()) for k in SECRETS} == SECRETS


@pytest.mark.slow
def test_speed_limit_and_speed_time_from_the_command_line(served, tmp_path):
    """--speed-limit BYTES for --speed-time SECONDS is a stall: reconnect and resume; 0 turns it off."""
    srv, root = served
    digest = make_file(root / "slow.bin", 4000)
    srv.fault("slow.bin", rate=400)  # the first body trickles at 400 B/s, the next comes at full speed
    r = _fetch(srv.url("slow.bin"), "-o", str(tmp_path / "slow.bin"), "--speed-limit", "1000", "--speed-time", "1")
    assert r.returncode == 0, r.stderr
    assert sha256_of(tmp_path / "slow.bin") == digest
    gets = [x for x in srv.requests_for("slow.bin") if x.method == "GET"]
    assert len(gets) == 2 and gets[0].range is None and gets[0].bytes_sent < 4000, [(x.range, x.bytes_sent) for x in gets]
    kept = int(gets[1].range.removeprefix("bytes=").removesuffix("-"))  # what the first body left in the .part
    assert 0 < kept <= gets[0].bytes_sent
    assert r.stderr.strip().splitlines()[-1].strip().startswith(f"resumed {tmp_path / 'slow.bin'} sha256:")

    digest = make_file(root / "off.bin", 600)
    srv.fault("off.bin", rate=400)  # 1.5 s below the limit, with the rule off: one request, left to finish
    r = _fetch(srv.url("off.bin"), "-o", str(tmp_path / "off.bin"), "--speed-limit", "0", "--speed-time", "1")
    assert r.returncode == 0, r.stderr
    assert sha256_of(tmp_path / "off.bin") == digest
    assert [x.range for x in srv.requests_for("off.bin") if x.method == "GET"] == [None]


def test_o_names_a_file_and_a_folder_spelling_is_refused(served, tmp_path):
    srv, root = served
    make_file(root / "a.bin", 1000)
    r = _fetch(srv.url("a.bin"), "-o", f"{tmp_path / 'new'}/")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error:"), r.stderr
    assert "-o names a file" in r.stderr and "use -d" in r.stderr
    assert not (tmp_path / "new").exists() and not [x for x in srv.log if x.method == "GET"]
