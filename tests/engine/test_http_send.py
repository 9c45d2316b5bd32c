"""The engine's requests: straight to the connection pool when nothing needs preparing, through
requests' Session otherwise; either way the server sees the same request."""

from __future__ import annotations

import base64

import pytest
import requests
from hypothesis import event, given, settings
from hypothesis import strategies as st

import resumable
from resumable import http

# Mostly the characters a URL may hold, and the ones that need quoting or cannot stand there.
_URL_CHARS = st.one_of(st.sampled_from(list("aZ09-._~!$&'()*+,;=:@/%?#[] \"<>^`{|}\\\x7fé") + ["%41", "%zz", "%2F", "%2f", "/..", "/.", "%"]),
                       st.characters(codec="utf-8", exclude_categories=("Cs",)))


@pytest.mark.slow
@settings(max_examples=600, deadline=None)
@given(host=st.sampled_from(["127.0.0.1", "example.com", "a-b.example", "EXAMPLE.org", "xn--bcher-kva.de", "bücher.de", "[::1]"]),
       port=st.one_of(st.none(), st.integers(1, 65535)),
       path=st.lists(_URL_CHARS, max_size=12).map("".join),
       query=st.one_of(st.none(), st.lists(_URL_CHARS, max_size=8).map("".join)),
       userinfo=st.sampled_from(["", "", "", "user:pw@", "u@"]), fragment=st.sampled_from(["", "", "", "#frag"]))
def test_a_url_sent_as_it_is_is_exactly_what_requests_would_send(host, port, path, query, userinfo, fragment):
    url = f"http://{userinfo}{host}{f':{port}' if port else ''}/{path}{'?' + query if query is not None else ''}{fragment}"
    try:
        prepared = requests.Request("GET", url).prepare()
    except (requests.exceptions.RequestException, ValueError, UnicodeError):
        assert not http._plain_url(url)
        return
    if http._plain_url(url):
        event("sent as it is")
        assert prepared.url == url
        assert "Authorization" not in prepared.headers


def _fetch_and_headers(served, url, **kwargs):
    srv, root = served
    resumable.fetch(url, root.parent / "out" / "f.bin", progress=False, **kwargs)
    (got,) = [r for r in srv.requests_for("f.bin") if r.method == "GET"]
    return {k.lower(): v for k, v in got.headers.items()}


def test_the_pool_path_sends_what_a_session_request_sends(served):
    srv, root = served
    (root / "f.bin").write_bytes(b"x" * 1000)
    headers = _fetch_and_headers(served, srv.url("f.bin"), headers={"X-Api-Key": "k"})
    assert headers["user-agent"] == http.USER_AGENT
    assert headers["accept-encoding"] == "identity"
    assert headers["x-api-key"] == "k"
    assert "cookie" not in headers and "authorization" not in headers


def test_userinfo_in_the_url_still_becomes_basic_auth(served):
    srv, root = served
    (root / "f.bin").write_bytes(b"y" * 1000)
    url = srv.url("f.bin").replace("http://", "http://alice:s3cret@")
    assert not http._plain_url(url)
    headers = _fetch_and_headers(served, url)
    assert headers["authorization"] == "Basic " + base64.b64encode(b"alice:s3cret").decode()


def test_a_callers_session_with_its_own_proxies_or_hooks_is_used_as_configured(served):
    srv, root = served
    (root / "f.bin").write_bytes(b"z" * 1000)
    seen = []
    session = http.new_session()
    session.hooks["response"].append(lambda resp, **kwargs: seen.append(resp.status_code))
    resumable.fetch(srv.url("f.bin"), root.parent / "out" / "f.bin", progress=False, session=session)
    assert seen == [200]  # the hook ran: the request went through the Session
