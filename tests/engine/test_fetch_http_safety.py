"""Redirects and credentials, safe file names, disk space (points 3, 11, 12, 13)."""

from __future__ import annotations

import logging

import pytest

from resumable.state import part_path

from engine_helpers import make_file, sha256_of
from resumable import DiskSpaceError, HTTPStatusError, fetch
from resumable.names import destination_in, name_from_disposition, safe_name

TOKEN = "Bearer s3cr3t-token-value"


def test_same_origin_redirect_keeps_credentials(served, tmp_path):
    srv, root = served
    make_file(root / "real.bin", 1000)
    srv.redirect("alias.bin", "/real.bin")
    srv.require_auth("real.bin", TOKEN)
    fetch(srv.url("alias.bin"), tmp_path / "f.bin", headers={"Authorization": TOKEN}, progress=False)
    assert srv.log[-1].headers.get("Authorization") == TOKEN


def test_cross_host_redirect_drops_credentials(served, second_server, tmp_path):
    srv, _ = served
    cdn, cdn_root = second_server
    digest = make_file(cdn_root / "blob.bin", 50_000)
    srv.redirect("model.bin", cdn.url("blob.bin") + "?X-Signature=abc123")
    result = fetch(srv.url("model.bin"), tmp_path / "model.bin", hash=digest,
                   headers={"Authorization": TOKEN, "Cookie": "session=1"}, progress=False)
    assert sha256_of(result.path) == digest
    assert srv.log[0].headers.get("Authorization") == TOKEN
    assert all("Authorization" not in r.headers and "Cookie" not in r.headers for r in cdn.log)


def test_tokens_never_logged(served, tmp_path, caplog):
    srv, root = served
    make_file(root / "f.bin", 1000)
    srv.require_auth("f.bin", "Bearer right")
    srv.redirect("signed.bin", srv.url("f.bin") + "?token=SIGNEDSECRET")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(HTTPStatusError) as info:
        fetch(srv.url("signed.bin"), tmp_path / "f.bin", headers={"Authorization": TOKEN}, progress=False)
    assert info.value.status == 401 and "credentials" in str(info.value)
    text = caplog.text + str(info.value)
    assert "s3cr3t" not in text and "SIGNEDSECRET" not in text


@pytest.mark.parametrize("header,expected", [
    ('attachment; filename="../../etc/passwd"', "passwd"),
    ("attachment; filename*=UTF-8''%2E%2E%2Fx.zip", "x.zip"),
    ('attachment; filename="/abs/path.tar"', "path.tar"),
    ('attachment; filename=".."', None),
])
def test_names_from_content_disposition_cannot_escape(header, expected):
    assert name_from_disposition(header) == expected


def test_destination_from_url_stays_in_directory(tmp_path):
    assert destination_in(tmp_path, None, "http://h/a/..%2F..%2Fb.bin") == (tmp_path / "b.bin").resolve()
    assert destination_in(tmp_path, "../../x", "http://h/y").parent == tmp_path.resolve()
    assert safe_name("\\..\\..\\win.exe") == "win.exe"


def test_cli_dir_mode_uses_safe_content_disposition(served, tmp_path):
    from train_pipeline.cli import main

    srv, root = served
    make_file(root / "f.bin", 1000)
    srv.content_disposition("f.bin", 'attachment; filename="../../escaped.bin"')
    out = tmp_path / "out"
    assert main(["fetch", "-q", "-d", str(out), srv.url("f.bin")]) == 0
    assert (out / "escaped.bin").exists() and not (tmp_path / "escaped.bin").exists()


def test_not_enough_room_fails_before_transfer(served, tmp_path):
    srv, root = served
    make_file(root / "f.bin", 1000)
    srv.fault("f.bin", length_delta=1 << 50)  # announces a petabyte
    with pytest.raises(DiskSpaceError, match="needs .* more but .* free"):
        fetch(srv.url("f.bin"), tmp_path / "f.bin", progress=False)
    assert not part_path(tmp_path / "f.bin").exists()  # nothing written, nothing to clean up


def test_environment_is_honoured_without_rereading_it_per_request(monkeypatch, tmp_path):
    from resumable.http import new_session

    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    s = new_session()
    assert s.trust_env is False and s.verify == "/etc/ssl/certs/ca-certificates.crt"
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    assert new_session().trust_env is True  # proxies (and .netrc) keep requests' own handling
