"""Extraction under attack: any bytes in the completion record (``.<target>.extract.json``) load as a
sound record or None (not current), never another exception, and nothing a record lists makes the
check look outside the target; archive names chosen to collide give distinct targets that never
meet our bookkeeping; unwrapping never turns a symlink into one that leaves its target."""

from __future__ import annotations

import copy
import gzip
import json
import os
import string
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resumable.extract import extract, extraction_is_current
from resumable.extract.record import Record, members_intact, parse_record, read_record, record_path
from train_pipeline.config import ConfigError
from train_pipeline.config.registry import archive_folders, custom_dataset, extract_target, extract_unwrap

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _tar_gz(members: list[tuple[str, bytes | str]]) -> bytes:
    """(name, bytes) a file, (name, "->target") a symlink."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data[2:]
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), 1)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """(archive, target, the record's JSON) of a small tree: files, folders, a symlink."""
    box = tmp_path_factory.mktemp("hostile-extract")
    archive = box / "v.tar.gz"
    archive.write_bytes(_tar_gz([("top.txt", b"top"), ("sub/deep/c.txt", b"c"), ("sub/e.txt", b"e"),
                                 ("sub/link", "->deep/c.txt")]))
    target = box / "target"
    assert extract(archive, target, progress=False).status == "extracted"
    return archive, target, json.loads(record_path(target).read_bytes())


def _assert_sound(record: Record | None, target: Path) -> None:
    """A record that loads makes sense, and checking it never raises."""
    if record is None:
        return
    assert record.state in ("complete", "replacing", "outdated")
    m = record.members
    if record.state == "complete":
        assert m is not None
    if m is not None:
        assert m.dirs[0] == "" and len(m.counts) == len(m.dirs) and sum(m.counts) == len(m.names)
        assert len(m.modes) == len(m.sizes) == len(m.mtimes_ns) == len(m.ctimes_ns) == len(m.names)
        for d in m.dirs[1:]:
            assert not d.startswith("/") and all(p not in ("", ".", "..") for p in d.split("/"))
        assert all(n and "/" not in n and "\0" not in n and n not in (".", "..") for n in m.names)
        assert members_intact(record, target) in (True, False)


@SETTINGS
@given(st.binary(max_size=400))
def test_any_bytes_in_the_record_give_a_record_or_none(extracted, raw):
    archive, target, _ = extracted
    record = parse_record(raw)
    assert record is None or isinstance(record, Record)
    _assert_sound(record, target)


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
                                     st.text(max_size=20)),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                       max_size=4),
                           max_leaves=12)
RECORD_KEYS = ["version", "state", "archive", "archive_digest", "archive_size", "archive_mtime_ns", "archive_ino",
               "format", "files", "bytes", "target_ino", "unwrap", "members", "top_level"]
MEMBER_KEYS = ["dirs", "counts", "names", "modes", "sizes", "mtimes_ns", "ctimes_ns"]
edits = st.lists(st.tuples(st.booleans(), st.one_of(st.sampled_from(RECORD_KEYS + MEMBER_KEYS), st.text(max_size=8)),
                           st.one_of(st.just("delete"), json_values)), min_size=1, max_size=4)


@pytest.mark.slow
@SETTINGS
@given(edits)
def test_a_tampered_record_loads_soundly_or_not_at_all_and_the_check_never_raises(extracted, changes):
    """Starting from the real record (current), any field replaced by any JSON value, or removed:
    the loader gives a sound record or None, and extraction_is_current a bool."""
    archive, target, original = extracted
    data = copy.deepcopy(original)
    for in_members, key, value in changes:
        where = data["members"] if in_members and isinstance(data.get("members"), dict) else data
        if value == "delete":
            where.pop(key, None)
        else:
            where[key] = value
    raw = json.dumps(data, allow_nan=True).encode()
    record_file = record_path(target)
    try:
        record_file.write_bytes(raw)
        _assert_sound(read_record(target), target)
        assert extraction_is_current(archive, target) in (True, False)
    finally:
        record_file.write_text(json.dumps(original))
    assert extraction_is_current(archive, target)


@pytest.mark.parametrize("name, raw", [
    ("nested 100k deep", b"[" * 100_000),
    ("an int of 5000 digits", b'{"version": 2, "files": ' + b"9" * 5000 + b"}"),
    ("not UTF-8", b'{"version": 2, "state": "\xff\xfe"}'),
    ("a list", b"[2, 3]"),
    ("UTF-16", json.dumps({"version": 2}).encode("utf-16")),
    ("lone surrogate in a name", None),
    ("a folder climbing out", None),
    ("an absolute folder", None),
    ("names with a NUL", None),
    ("counts that lie", None),
    ("True for version", None),
])
def test_hostile_records_are_not_current(extracted, name, raw):
    archive, target, original = extracted
    if raw is None:
        data = copy.deepcopy(original)
        m = data["members"]
        if name == "lone surrogate in a name":
            m["names"] = m["names"].replace("top.txt", "\ud800.txt")
        elif name == "a folder climbing out":
            m["dirs"][1] = "../.."
        elif name == "an absolute folder":
            m["dirs"][1] = "/etc"
        elif name == "names with a NUL":
            m["names"] = m["names"].replace("top.txt", "top\0txt")
        elif name == "counts that lie":
            m["counts"][0] += 1
        elif name == "True for version":
            data["version"] = True
        raw = json.dumps(data).encode()
    assert parse_record(raw) is None
    record_file = record_path(target)
    try:
        record_file.write_bytes(raw)
        assert not extraction_is_current(archive, target)
    finally:
        record_file.write_text(json.dumps(original))


# -- targets: names chosen to collide

archive_names = st.builds(lambda stem, suffix: stem + suffix,
                          st.text(string.ascii_letters[:3] + "._-", min_size=0, max_size=8),
                          st.sampled_from([".zip", ".tar", ".tar.gz", ".tgz", ".ZIP", ".tar.zst", ".txt"]))


@SETTINGS
@given(st.lists(archive_names, min_size=1, max_size=8, unique=True))
def test_every_archive_of_a_dataset_gets_its_own_plain_folder(names):
    try:
        ds = custom_dataset([f"https://h.example/f/{quote(n)}" for n in names])
    except ConfigError:
        return  # a name the config refuses (e.g. only dots)
    try:
        targets = [extract_target(Path("/d"), ds, f) for f in ds.files]
    except ConfigError as exc:
        assert "one folder" in str(exc) and "\n" not in str(exc)
        return
    targets = [t for t in targets if t is not None]
    assert len(set(targets)) == len(targets)
    if len(targets) > 1:
        for t in targets:
            assert t.parent == Path("/d/custom") and not t.name.startswith(".") and t.name not in ("", ".", "..")
        assert sorted(archive_folders(ds).values()) == sorted(t.name for t in targets)


def test_names_like_our_bookkeeping_are_extracted_without_harm(tmp_path):
    """Archives named like another target's record, lock or temp folder would, as hidden folders,
    be taken for them (removed as a stale temp folder, overwritten by a record)."""
    names = ["a.zip.tar.gz", ".a.extract.json.tar.gz", ".a.extracting-1-ab.tar.gz", ".a.extract.lock.tar.gz", "a.tar.gz"]
    ds = custom_dataset([f"https://h.example/{quote(n)}" for n in names])
    data = tmp_path / "data"
    targets = {}
    for f in ds.files:
        archive = data / "downloads" / f.filename
        archive.parent.mkdir(parents=True, exist_ok=True)
        archive.write_bytes(_tar_gz([("which.txt", f.filename.encode())]))
        targets[f.filename] = extract_target(data, ds, f)
        assert extract(archive, targets[f.filename], unwrap=extract_unwrap(ds, f), progress=False).status == "extracted"
    assert len(set(targets.values())) == len(names)
    for f in ds.files:  # every target still holds its own archive, and is current
        assert (targets[f.filename] / "which.txt").read_bytes() == f.filename.encode()
        assert extraction_is_current(data / "downloads" / f.filename, targets[f.filename],
                                     unwrap=extract_unwrap(ds, f))


def test_unwrapping_never_lets_a_symlink_reach_a_sibling_target(tmp_path):
    """a.tar.gz holds a/link -> ../b/secret: inside the archive it names b/secret in the archive's
    own root. Unwrapped into custom/a/ it would name custom/b/secret, another archive's target."""
    ds = custom_dataset(["https://h.example/a.tar.gz", "https://h.example/b.tar.gz"])
    contents = {"a.tar.gz": [("a/x", b"x"), ("a/link", "->../b/secret")], "b.tar.gz": [("b/secret", b"secret")]}
    data = tmp_path / "data"
    for f in ds.files:
        archive = data / "downloads" / f.filename
        archive.parent.mkdir(parents=True, exist_ok=True)
        archive.write_bytes(_tar_gz(contents[f.filename]))
        extract(archive, extract_target(data, ds, f), unwrap=extract_unwrap(ds, f), progress=False)
    a = data / "custom" / "a"
    for path in a.rglob("*"):
        assert Path(os.path.realpath(path)).is_relative_to(a), path
    assert (a / "a" / "x").is_file()  # kept as the archive has it
    assert (data / "custom" / "b" / "secret").read_bytes() == b"secret"  # b unwrapped
