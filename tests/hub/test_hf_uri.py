"""The hf:// parser: huggingface_hub's spelling (HfFileSystem), a canonical form that parses back to
itself, and one line naming the input and the valid form for anything else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resumable.errors import UsageError
from resumable.hub.uri import FORM, HfUri, is_hf_uri, parse


@pytest.mark.parametrize("text, expected", [
    ("hf://datasets/org/name", HfUri("dataset", "org/name")),
    ("hf://datasets/org/name/", HfUri("dataset", "org/name")),
    ("hf://datasets/org/name@main/data/*.parquet", HfUri("dataset", "org/name", "main", "data/*.parquet")),
    ("hf://datasets/org/name@refs%2Fpr%2F1/data/train-00000-of-00002.parquet",
     HfUri("dataset", "org/name", "refs/pr/1", "data/train-00000-of-00002.parquet")),
    ("hf://datasets/org/name@refs%2Fconvert%2Fparquet/default/", HfUri("dataset", "org/name", "refs/convert/parquet", "default/")),
    ("hf://Qwen/Qwen2-VL-2B-Instruct@" + "a" * 40 + "/config.json",
     HfUri("model", "Qwen/Qwen2-VL-2B-Instruct", "a" * 40, "config.json")),
    ("hf://models/org/m@v1.0", HfUri("model", "org/m", "v1.0")),
    ("hf://org/m/sub/x@y.txt", HfUri("model", "org/m", None, "sub/x@y.txt")),
])
def test_the_huggingface_hub_spelling(text, expected):
    uri = parse(text)
    assert uri == expected
    assert parse(str(uri)) == uri


def test_canonical_spelling():
    assert str(parse("hf://models/org/m@refs%2Fpr%2F3/a/b")) == "hf://org/m@refs%2Fpr%2F3/a/b"
    assert str(parse("hf://datasets/org/name/")) == "hf://datasets/org/name"
    uri = parse("hf://datasets/org/name@main/data/")
    assert uri.path == "data/" and not uri.single_file and not uri.is_glob and uri.patterns == ["data/"]
    assert parse("hf://datasets/o/n/a.parquet").single_file and parse("hf://datasets/o/n/*.parquet").is_glob
    assert parse("hf://datasets/o/n").patterns is None


@pytest.mark.parametrize("text, why", [
    ("hf://datasets/org/na me", "contains a space"),
    ("hf://datasets/org/name/data\\x.parquet", "backslash"),
    ("hf://datasets/org/name@refs/pr/1", "%2F"),
    ("hf://datasets/org", "expected ORG/NAME"),
    ("hf://", "expected ORG/NAME"),
    ("hf://spaces/org/app", "Spaces"),
    ("HF://org/m", "lower case"),
    ("https://huggingface.co/org/m", "not an hf:// source"),
    ("hf://org/m@", "'@' without a revision"),
    ("hf://org/m@a..b", "'..'"),
    ("hf://org/m/a//b", "empty"),
    ("hf://org/m/../x", "'..'"),
    ("hf://org/m/.resumable/x", ".resumable"),
    ("hf://org--x/m", "not a Hub repository id"),
    ("hf://org/m\n", "control character"),
])
def test_anything_else_is_one_line_naming_the_input_and_the_form(text, why):
    with pytest.raises(UsageError) as info:
        parse(text)
    message = str(info.value)
    assert why in message and FORM in message and repr(text)[:30] in message
    assert "\n" not in message


@pytest.mark.parametrize("text, why", [
    ("hf://datasets/org/name@%ff/data/x.parquet", "not UTF-8 text"),  # was taken as the revision U+FFFD
    ("hf://datasets/org/name@ma%zzin", "'%' not followed by two hex digits"),
    ("hf://datasets/org/name@main%2", "'%' not followed by two hex digits"),
    ("hf://datasets/org/name@ma\udcffin/x", "not UTF-8 text"),  # a raw \xff byte from argv (surrogateescape)
    ("hf://datasets/org/na\udcffme", "not UTF-8 text"),
])
def test_a_revision_or_source_that_is_not_utf8_text_is_refused(text, why):
    with pytest.raises(UsageError) as info:
        parse(text)
    assert why in str(info.value) and FORM in str(info.value) and "\n" not in str(info.value)
    str(info.value).encode("utf-8")  # printable whatever the input held


def test_a_cli_argument_with_a_raw_non_utf8_byte_is_refused_as_the_source_not_the_endpoint(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # never asked
    proc = subprocess.run([sys.executable, "-m", "train_pipeline.cli", "fetch", b"hf://datasets/org/name@ma\xffin/x",
                           "-d", str(tmp_path)], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "not UTF-8 text" in proc.stderr and "127.0.0.1" not in proc.stderr


def test_a_model_whose_org_reads_like_a_type_keeps_models_prefix():
    for org in ("datasets", "models", "spaces"):
        uri = HfUri("model", f"{org}/name", None, "x")
        assert str(uri) == f"hf://models/{org}/name/x"
        assert parse(str(uri)) == uri
    assert str(HfUri("dataset", "datasets/name")) == "hf://datasets/datasets/name"
    assert str(parse("hf://models/org/m")) == "hf://org/m"


def test_a_revision_written_after_the_path_gets_a_hint():
    uri = parse("hf://datasets/org/name/data/*.parquet@main")  # HfFileSystem's rule: the path is literal
    assert uri.path == "data/*.parquet@main"
    assert "goes right after the repository name: hf://datasets/org/name@main/data/*.parquet" in uri.revision_hint()
    assert parse("hf://datasets/org/name@v1/data/x@y").revision_hint() == ""  # a revision is there already
    assert parse("hf://datasets/org/name/data/x.parquet").revision_hint() == ""


def test_credentials_written_into_the_source_are_never_echoed():
    with pytest.raises(UsageError) as info:
        parse("hf://user:hf_secret@org/name")
    assert "'@' belongs after the repository name" in str(info.value) and "hf_secret" not in str(info.value)


def test_is_hf_uri():
    assert is_hf_uri("hf://a/b") and is_hf_uri("HF://a/b") and not is_hf_uri("https://x/y") and not is_hf_uri(None)


_NAME = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9_-]{0,10}[A-Za-z0-9])?", fullmatch=True).filter(lambda n: "--" not in n)
# An org that reads like a type prefix ('datasets', 'models', 'spaces') must keep its repository type.
_ORG = st.one_of(_NAME, st.sampled_from(["datasets", "models", "spaces", "Datasets"]))
_COMPONENT = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.=@%*?+-]{0,12}", fullmatch=True)
_REVISION = st.one_of(st.none(), st.from_regex(r"[a-z0-9][a-z0-9_-]{0,8}(/[a-z0-9][a-z0-9_%é-]{0,8}){0,2}", fullmatch=True),
                      st.from_regex(r"[0-9a-f]{40}", fullmatch=True))
_PATH = st.one_of(st.none(), st.lists(_COMPONENT, min_size=1, max_size=4).map("/".join),
                  st.lists(_COMPONENT, min_size=1, max_size=3).map(lambda c: "/".join(c) + "/"))


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(repo_type=st.sampled_from(["model", "dataset"]), org=_ORG, name=_NAME, revision=_REVISION, path=_PATH)
def test_round_trip(repo_type, org, name, revision, path):
    uri = HfUri(repo_type, f"{org}/{name}", revision, path)
    text = str(uri)
    assert parse(text) == uri
    assert str(parse(text)) == text


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=80), st.text(max_size=60).map(lambda t: "hf://" + t),
                 st.text(alphabet="hf:/datsemol@%2F.-_*?[ \\\n", max_size=60)))
def test_never_anything_but_the_one_line_error(text):
    try:
        uri = parse(text)
    except UsageError as exc:
        assert "\n" not in str(exc) and "\r" not in str(exc) and FORM in str(exc)
        return
    assert parse(str(uri)) == uri  # what parses has a canonical spelling that parses back
