"""The completion record lists every member: a member deleted or changed anywhere in the target
(not only at its top level) is noticed by a stat and extracted again; an untouched target is not."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from resumable.errors import UsageError
from resumable.extract import extract, extraction_is_current
from resumable.extract.record import read_record, record_path

from extract_archives import build, file_member, link_member, tar_bytes, write

FILES = {"top.txt": b"top\n", "sub/deep/c.txt": b"c content\n", "sub/deep/d.bin": b"\x00" * 300,
         "sub/e.txt": b"e\n"}


def nested_archive(path: Path, files: dict[str, bytes] = FILES, extra=()) -> Path:
    return write(path, gzip.compress(tar_bytes([file_member(n, d) for n, d in files.items()] + list(extra)), 1))


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def next_ctime_tick() -> None:
    """The kernel stamps ctime from a clock that advances in ticks (up to 10 ms): a change made
    in the same tick as the extraction would carry the same ctime. Users never are that quick."""
    time.sleep(0.05)


def test_a_deleted_nested_file_is_extracted_again(sandbox):
    archive = nested_archive(sandbox / "v.tar.gz")
    target = sandbox / "target"
    assert extract(archive, target, progress=False).status == "extracted"
    (target / "sub" / "deep" / "c.txt").unlink()
    assert not extraction_is_current(archive, target)
    again = extract(archive, target, progress=False)
    assert again.status == "extracted"
    assert tree(target) == FILES
    assert extraction_is_current(archive, target)
    assert extract(archive, target, progress=False).status == "cached"


def test_a_file_rewritten_with_its_size_and_mtime_restored_is_extracted_again(sandbox):
    archive = nested_archive(sandbox / "v.tar.gz")
    target = sandbox / "target"
    extract(archive, target, progress=False)
    victim = target / "sub" / "deep" / "c.txt"
    st = victim.stat()
    next_ctime_tick()
    victim.write_bytes(b"C CONTENT\n")  # same size
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the mtime put back
    assert (victim.stat().st_size, victim.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert not extraction_is_current(archive, target)
    assert extract(archive, target, progress=False).status == "extracted"
    assert tree(target) == FILES


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_an_untouched_target_stays_cached_and_is_not_extracted_again(sandbox, fmt):
    archive = write(sandbox / f"v.{fmt}", build(fmt))  # files, folders, an empty file and a symlink
    target = sandbox / "target"
    assert extract(archive, target, progress=False).status == "extracted"
    before = {p: os.lstat(p) for p in [target, *target.rglob("*")]}
    for path in before:  # reading the data (what training does) is no change
        if path.is_file():
            path.read_bytes()
    next_ctime_tick()
    for _ in range(2):
        assert extraction_is_current(archive, target)
        assert extract(archive, target, progress=False).status == "cached"
    after = {p: os.lstat(p) for p in [target, *target.rglob("*")]}
    assert {p: (s.st_ino, s.st_ctime_ns) for p, s in after.items()} == \
           {p: (s.st_ino, s.st_ctime_ns) for p, s in before.items()}  # nothing was rewritten


def test_the_record_lists_every_member_with_its_stat(sandbox):
    archive = write(sandbox / "v.tar.gz", build("tar.gz"))
    target = sandbox / "target"
    extract(archive, target, progress=False)
    members = read_record(target).members
    listed = set(members.dirs[1:])
    start = 0
    for rel, count in zip(members.dirs, members.counts):
        for i in range(start, start + count):
            path = f"{rel}/{members.names[i]}" if rel else members.names[i]
            st = os.lstat(target / path)
            assert (members.modes[i], members.sizes[i], members.mtimes_ns[i], members.ctimes_ns[i]) == \
                   (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            listed.add(path)
        start += count
    assert listed == {p.relative_to(target).as_posix() for p in target.rglob("*")}
    data = json.loads(record_path(target).read_bytes())
    assert data["version"] == 2 and data["state"] == "complete"


@pytest.mark.parametrize("change", ["symlink deleted", "folder deleted", "folder made a symlink", "file made a folder",
                                    "file grew", "mode changed", "mtime changed"])
def test_any_change_to_a_member_is_noticed(sandbox, change):
    archive = write(sandbox / "v.tar.gz", build("tar.gz"))
    target = sandbox / "target"
    extract(archive, target, progress=False)
    next_ctime_tick()
    values = target / "data" / "nested" / "deep" / "values.csv"
    if change == "symlink deleted":
        (target / "data" / "latest.csv").unlink()
    elif change == "folder deleted":
        shutil.rmtree(target / "data" / "nested")
    elif change == "folder made a symlink":
        shutil.copytree(target / "bin", sandbox / "elsewhere")
        shutil.rmtree(target / "bin")
        (target / "bin").symlink_to(sandbox / "elsewhere")
    elif change == "file made a folder":
        values.unlink()
        values.mkdir()
    elif change == "file grew":
        with open(values, "ab") as f:
            f.write(b"3,4\n")
    elif change == "mode changed":
        values.chmod(0o600)
    elif change == "mtime changed":
        os.utime(values, (1, 1))
    assert not extraction_is_current(archive, target)
    assert extract(archive, target, progress=False).status == "extracted"
    assert extraction_is_current(archive, target)
    assert (target / "data" / "latest.csv").read_bytes() == b"a,b\n1,2\n" * 1000


def test_files_the_user_adds_are_not_a_change(sandbox):
    archive = nested_archive(sandbox / "v.tar.gz")
    target = sandbox / "target"
    extract(archive, target, progress=False)
    next_ctime_tick()
    write(target / "sub" / "deep" / "notes.txt", b"mine")
    (target / "sub" / "cache").mkdir()
    assert extraction_is_current(archive, target)
    assert extract(archive, target, progress=False).status == "cached"
    assert (target / "sub" / "deep" / "notes.txt").read_bytes() == b"mine"


def test_a_record_of_the_previous_release_means_extract_again_not_a_foreign_folder(sandbox):
    archive = nested_archive(sandbox / "v.tar.gz")
    target = sandbox / "target"
    extract(archive, target, progress=False)
    record = read_record(target)
    old = {"state": "complete", "archive": str(archive), "archive_digest": record.archive_digest,
           "archive_size": record.archive_size, "archive_mtime_ns": record.archive_mtime_ns,
           "archive_ino": record.archive_ino, "format": "tar.gz", "files": 4, "bytes": 1, "target_ino":
           os.lstat(target).st_ino, "top_level": ["sub", "top.txt"], "version": 1}
    record_path(target).write_text(json.dumps(old, indent=1))  # what version 1 wrote
    assert not extraction_is_current(archive, target)
    assert extract(archive, target, progress=False).status == "extracted"  # not refused as not ours
    assert extract(archive, target, progress=False).status == "cached"


def test_replacement_without_rename_exchange_is_cached_after(sandbox):
    """Publishing renames only the target folder, whichever way: its members keep their ctimes
    (here the kernel refuses the exchange: the old version is moved aside, see no_exchange.py)."""
    from no_exchange import extract_without_exchange

    archive = nested_archive(sandbox / "v.tar.gz")
    target = sandbox / "target"
    extract(archive, target, progress=False)
    write(archive, gzip.compress(tar_bytes([file_member("sub/deep/c.txt", b"v2")]), 1))
    assert extract_without_exchange(archive, target) == "extracted"
    assert extraction_is_current(archive, target)
    assert extract(archive, target, progress=False).status == "cached"


# -- unwrap: an archive holding only a folder of the given name fills the target with its content

def wrapped(path: Path, folder: str = "a", extra=()) -> Path:
    return nested_archive(path, {f"{folder}/{n}": d for n, d in FILES.items()}, extra)


def test_unwrap_puts_the_folder_content_in_the_target(sandbox):
    archive = wrapped(sandbox / "a.tar.gz")
    target = sandbox / "a"
    assert extract(archive, target, unwrap="a", progress=False).status == "extracted"
    assert tree(target) == FILES
    assert extraction_is_current(archive, target, unwrap="a")
    assert extract(archive, target, unwrap="a", progress=False).status == "cached"
    assert [p.name for p in sandbox.iterdir() if ".extracting-" in p.name] == []
    # Asked without unwrap, the same archive gives another layout: not current, extracted again.
    assert not extraction_is_current(archive, target)
    assert extract(archive, target, progress=False).status == "extracted"
    assert tree(target) == {f"a/{n}": d for n, d in FILES.items()}


@pytest.mark.parametrize("case", ["other name", "second top-level entry", "a file of that name"])
def test_unwrap_leaves_other_archives_as_they_are(sandbox, case):
    if case == "other name":
        archive, expected = wrapped(sandbox / "x.tar.gz", "b"), {f"b/{n}": d for n, d in FILES.items()}
    elif case == "second top-level entry":
        archive = wrapped(sandbox / "x.tar.gz", extra=[file_member("README", b"r")])
        expected = {f"a/{n}": d for n, d in FILES.items()} | {"README": b"r"}
    else:
        archive, expected = nested_archive(sandbox / "x.tar.gz", {"a": b"just a file"}), {"a": b"just a file"}
    target = sandbox / "t"
    assert extract(archive, target, unwrap="a", progress=False).status == "extracted"
    assert tree(target) == expected
    assert extract(archive, target, unwrap="a", progress=False).status == "cached"


def test_unwrap_keeps_the_folder_when_a_symlink_climbs_through_the_archive_root(sandbox):
    """``a/link -> ../a/top.txt`` resolves inside the archive; unwrapped into a target of another
    name it would point at a sibling folder outside the target."""
    archive = wrapped(sandbox / "x.tar.gz", extra=[link_member("a/link", "../a/top.txt")])
    target = sandbox / "x"
    extract(archive, target, unwrap="a", progress=False)
    assert os.readlink(target / "a" / "link") == "../a/top.txt"
    assert (target / "a" / "link").read_bytes() == b"top\n"


def test_unwrap_must_be_a_plain_name(sandbox):
    archive = wrapped(sandbox / "a.tar.gz")
    for bad in ("", ".", "..", "a/b", "a\0"):
        with pytest.raises(UsageError, match="plain folder name"):
            extract(archive, sandbox / "a", unwrap=bad, progress=False)
