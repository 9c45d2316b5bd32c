"""Property tests of every parser that reads what a server, a user or a file on disk hands us: any
input gives a result or a one-line error of ours (UsageError, SnapshotError, None), never another
exception, and what it gives keeps its promise (a name never leaves its folder, a redacted URL
never shows its query, a record that loads makes sense)."""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from resumable.errors import UsageError
from resumable.hashes import parse_hash
from resumable.http import (
    check_url,
    parse_content_range,
    parse_ratelimit_reset,
    parse_retry_after,
    parse_unsatisfied_range,
)
from resumable.hub.common import SnapshotError
from resumable.hub.manifest import safe_dest
from resumable.names import destination_in, name_from_disposition, name_from_url, safe_name
from resumable.redaction import redact, redact_text
from resumable.state import RECORD_DIR, PartState, VerifiedRecord, escaped_name, state_path, verified_path

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

url_chars = st.characters(codec="utf-8", exclude_characters="\n")
urlish = st.one_of(
    st.text(url_chars, max_size=80),
    st.builds(lambda scheme, host, port, path, query: f"{scheme}://{host}{port}/{path}{query}",
              st.sampled_from(["http", "https", "ftp", "HTTP", ""]),
              st.one_of(st.text(string.ascii_letters + ".-[]:@%", max_size=20), st.just("[::1]")),
              st.one_of(st.just(""), st.builds(lambda p: f":{p}", st.text(string.digits + "abc-", max_size=7))),
              st.text(url_chars, max_size=30),
              st.one_of(st.just(""), st.builds(lambda q: f"?{q}", st.text(url_chars, max_size=30)))),
)


@SETTINGS
@given(urlish)
def test_any_text_is_a_url_or_one_line_usage_error(text):
    try:
        assert check_url(text) == text
    except UsageError as exc:
        assert "\n" not in str(exc)


@SETTINGS
@given(urlish, st.text(string.ascii_letters + string.digits, min_size=6, max_size=20))
def test_a_redacted_url_never_shows_its_query_or_userinfo(url, secret):
    assume(secret not in url and " " not in url)
    signed = f"{url}?sig={secret}" if "?" not in url else f"{url}&sig={secret}"
    with_user = signed.replace("://", f"://user:{secret}@", 1)
    for text in (signed, with_user):
        assert secret not in redact(text)
        if "://" in text or text.startswith("/"):  # free text: only what reads as a URL or a path
            assert secret not in redact_text(f"error for {text} (Caused by X)")


@SETTINGS
@given(st.text(max_size=300))
def test_a_server_chosen_name_never_leaves_its_folder(candidate):
    for name in (safe_name(candidate), name_from_disposition(f'attachment; filename="{candidate}"'),
                 name_from_disposition(candidate), name_from_url(f"http://h/{candidate}")):
        if name is not None:
            assert "/" not in name and "\\" not in name and "\0" not in name and not name.startswith(".")
            assert 0 < len(name.encode("utf-8", "surrogateescape")) <= 255
            assert not any(ord(c) < 0x20 for c in name)


@SETTINGS
@given(st.text(max_size=300), st.text(max_size=60))
def test_a_destination_is_inside_the_folder_or_a_usage_error(tmp_path_factory, name, path):
    folder = Path("/tmp/never-created-folder")
    try:
        dest = destination_in(folder, name, f"http://h/{path}")
    except UsageError as exc:
        assert "\n" not in str(exc)
        return
    assert dest.parent == folder and dest.name != RECORD_DIR


@SETTINGS
@given(st.one_of(st.text(max_size=80), st.builds(lambda a, b, c: f"bytes {a}-{b}/{c}", st.integers(-5, 10**20),
                                                  st.integers(-5, 10**20), st.one_of(st.integers(0, 10**20),
                                                                                      st.just("*")))))
def test_range_and_retry_headers_parse_or_give_none(value):
    cr = parse_content_range(value)
    if cr is not None:
        assert cr.start >= 0 and cr.end >= 0 and (cr.total is None or cr.total >= 0)
    total = parse_unsatisfied_range(value)
    assert total is None or total >= 0
    for parse in (parse_retry_after, parse_ratelimit_reset):
        wait = parse(value)
        assert wait is None or wait >= 0


@SETTINGS
@given(st.text(max_size=200), st.sampled_from([None, "md5", "sha256", "nope"]))
def test_any_hash_text_is_a_hash_or_one_line_usage_error(text, algorithm):
    try:
        parsed = parse_hash(text, algorithm)
    except UsageError as exc:
        assert "\n" not in str(exc)
        return
    assert parsed is None or len(parsed.hexdigest) in (32, 40, 64, 128)


@SETTINGS
@given(st.text(max_size=300))
def test_a_hub_file_name_lands_inside_the_snapshot_or_is_refused(name):
    snap = Path("/tmp/never-created-snapshot")
    try:
        dest = safe_dest(snap, name)
    except SnapshotError as exc:
        assert "\n" not in str(exc)
        return
    rel = dest.relative_to(snap)
    assert ".." not in rel.parts and RECORD_DIR not in rel.parts and rel.parts
    assert not any(ord(c) < 0x20 for c in str(rel))


@SETTINGS
@given(st.lists(st.text(min_size=1, max_size=300).filter(lambda n: "/" not in n and "\0" not in n), min_size=2,
                max_size=2, unique=True))
def test_sidecar_names_are_distinct_and_fit_name_max(names):
    a, b = names
    assume(a not in (".", ".."))
    assert escaped_name(a) != escaped_name(b)
    for name in names:
        longest = f".{escaped_name(name)}.verified.json.12345678.tmp"
        assert len(os.fsencode(longest)) <= 255


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
                                     st.text(max_size=30)),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                       max_size=4),
                           max_leaves=12)
record_like = st.fixed_dictionaries({}, optional={
    "source": json_values, "url": json_values, "validator": json_values, "total": json_values,
    "expected_hash": json_values, "owner": json_values, "segments": json_values, "size": json_values,
    "mtime_ns": json_values, "ctime_ns": json_values, "inode": json_values, "digests": json_values,
})


@pytest.mark.slow
@SETTINGS
@given(st.one_of(record_like, json_values, st.binary(max_size=200)))
def test_any_record_on_disk_loads_as_a_sound_record_or_none(tmp_path_factory, content):
    dest = tmp_path_factory.mktemp("records") / "f.bin"
    raw = content if isinstance(content, bytes) else json.dumps(content, allow_nan=True).encode()
    for path in (state_path(dest), verified_path(dest)):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(raw)
    state = PartState.load(dest)
    if state is not None:
        assert isinstance(state.source, str) and (state.total is None or state.total >= 0)
        assert state.validator is None or ("\r" not in state.validator and "\n" not in state.validator)
        at = 0
        for start, end, done in state.segments:
            assert start == at and start <= done <= end
            at = end
        assert not state.segments or at == state.total
    record = VerifiedRecord.load(dest)
    if record is not None:
        assert record.size >= 0 and all(isinstance(v, str) for v in record.digests.values())


_REPO_PART = st.text(alphabet="aZ09_.-/é\n", min_size=0, max_size=100)


@settings(max_examples=1500, deadline=None)
@given(repo_id=st.one_of(_REPO_PART, st.builds("{}/{}".format, _REPO_PART, _REPO_PART), st.text(max_size=200)))
def test_repo_ids_are_accepted_exactly_as_huggingface_hub_accepts_them(repo_id):
    """check_repo_id accepts plain ORG/NAME ids without importing huggingface_hub: that shortcut
    must never accept an id the Hub's own rule refuses, nor change what is refused."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    from resumable.hub.snapshots import check_repo_id

    try:
        validate_repo_id(repo_id)
        hub_accepts = True
    except HFValidationError:
        hub_accepts = False
    try:
        assert check_repo_id(repo_id) == repo_id
        ours_accepts = True
    except UsageError:
        ours_accepts = False
    assert ours_accepts == hub_accepts, repo_id
