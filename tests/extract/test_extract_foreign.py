"""A new version of an archive replaces only what the previous extraction made: files the user
(or another step) put into the target survive byte for byte, also across a SIGKILL at any point
of the replacement; where the new version needs a foreign file's place nothing is replaced."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resumable.errors import ExtractError
from resumable.extract import extract, extraction_is_current
from resumable.foreign import ForeignFileError

from extract_archives import file_member, tar_bytes, write

REPO = Path(__file__).resolve().parents[2]

V1 = {"a.txt": b"one\n", "old-only.txt": b"only in v1\n", "sub/c.txt": b"c1\n", "gone/d.txt": b"d1\n"}
V2 = {"a.txt": b"two\n", "sub/c.txt": b"c2\n", "new.txt": b"only in v2\n"}


def version(files: dict[str, bytes]) -> bytes:
    return gzip.compress(tar_bytes([file_member(name, data) for name, data in files.items()]), 1)


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
            and not p.is_symlink()}


def temp_folders(box: Path) -> list[Path]:
    return list(box.glob(".*.extracting-*"))


def add_foreign(target: Path, outside: Path) -> dict[str, tuple[bytes | str, int]]:
    """Files of the user's in every kind of place; returns {path: (content or link, inode)}."""
    (target / "notes.txt").write_bytes(b"mine\n")  # top level
    (target / "sub" / "mine.csv").write_bytes(b"1,2\n")  # inside a folder of the archive's
    (target / "gone" / "keep.bin").write_bytes(os.urandom(1000))  # inside a folder the new version drops
    (target / "results" / "ckpt").mkdir(parents=True)  # a whole tree of someone else's
    (target / "results" / "ckpt" / "w.bin").write_bytes(os.urandom(5000))
    (target / "results" / "ckpt" / "w.bin").chmod(0o600)
    (target / "results" / "latest").symlink_to("ckpt/w.bin")
    outside.write_bytes(b"outside\n")
    (target / "elsewhere").symlink_to(outside)  # a link out of the target: kept, never followed
    return snapshot(target, ["notes.txt", "sub/mine.csv", "gone/keep.bin", "results/ckpt/w.bin",
                             "results/latest", "elsewhere"])


def snapshot(target: Path, paths: list[str]) -> dict[str, tuple[bytes | str, int, int]]:
    out = {}
    for rel in paths:
        p = target / rel
        st = os.lstat(p)
        out[rel] = (os.readlink(p) if p.is_symlink() else p.read_bytes(), st.st_ino, st.st_mode)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("exchange", [True, False])
def test_foreign_files_survive_new_versions_byte_for_byte(sandbox, exchange):
    from no_exchange import extract_without_exchange

    def replace() -> str:
        if exchange:
            return extract(archive, target, progress=False).status
        # where the kernel cannot exchange: the old version is moved aside, then removed
        return extract_without_exchange(archive, target)

    archive = write(sandbox / "data.tar.gz", version(V1))
    target = sandbox / "target"
    extract(archive, target, progress=False)
    kept = add_foreign(target, sandbox / "outside.txt")
    for files in (V2, V1, V2):
        write(archive, version(files))
        assert replace() == "extracted"
        assert snapshot(target, list(kept)) == kept  # same bytes, same inode, same mode
        ours = {k: v for k, v in files_in(target).items() if k not in kept}
        assert ours == files  # every member of the new version, nothing left of the old one
        assert extraction_is_current(archive, target)
        assert extract(archive, target, progress=False).status == "cached"
        assert temp_folders(sandbox) == []
    assert (sandbox / "outside.txt").read_bytes() == b"outside\n"
    members = json.loads((sandbox / ".target.extract.json").read_bytes())["members"]
    assert "notes.txt" not in members["names"].split("/") and "results" not in members["dirs"]


def test_a_foreign_file_where_the_new_version_has_one_stops_the_replacement(sandbox):
    archive = write(sandbox / "data.tar.gz", version(V1))
    target = sandbox / "target"
    extract(archive, target, progress=False)
    (target / "new.txt").write_bytes(b"the user's new.txt\n")
    write(archive, version(V2))
    with pytest.raises(ForeignFileError) as err:
        extract(archive, target, progress=False)
    message = str(err.value)
    assert "\n" not in message and str(target / "new.txt") in message and "move it out" in message
    assert isinstance(err.value, ExtractError) is False  # a local-file problem, not a bad archive
    assert (target / "new.txt").read_bytes() == b"the user's new.txt\n"
    assert files_in(target) == {**V1, "new.txt": b"the user's new.txt\n"}  # the old version, untouched
    assert temp_folders(sandbox) == []
    (target / "new.txt").rename(sandbox / "moved.txt")  # the fix the message names
    assert extract(archive, target, progress=False).status == "extracted"
    assert files_in(target) == V2


def test_a_foreign_file_under_a_folder_the_new_version_makes_a_file_stops_it(sandbox):
    archive = write(sandbox / "data.tar.gz", version({"sub/c.txt": b"c\n"}))
    target = sandbox / "target"
    extract(archive, target, progress=False)
    (target / "sub" / "mine.txt").write_bytes(b"mine\n")
    write(archive, version({"sub": b"now a file\n"}))
    with pytest.raises(ForeignFileError, match="sub/mine.txt.*has a file at sub"):
        extract(archive, target, progress=False)
    assert (target / "sub" / "mine.txt").read_bytes() == b"mine\n"


def test_a_users_folder_in_place_of_a_member_file_is_looked_into(sandbox):
    """A path is ours whatever stands there now, but what the user put under it is not."""
    archive = write(sandbox / "data.tar.gz", version(V1))
    target = sandbox / "target"
    extract(archive, target, progress=False)
    (target / "a.txt").unlink()
    (target / "a.txt").mkdir()
    (target / "a.txt" / "mine").write_bytes(b"mine\n")
    with pytest.raises(ForeignFileError, match="a.txt/mine"):
        extract(archive, target, progress=False)
    (target / "a.txt" / "mine").unlink()  # an empty folder in a member's place: just replaced
    assert extract(archive, target, progress=False).status == "extracted"
    assert files_in(target) == V1


_CHILD = """
import sys, time
from pathlib import Path
from resumable.extract import atomic, core

archive, target, marker, point = sys.argv[1:5]

def park(real):
    def parked(*args, **kwargs):
        if point == "after-swap":
            real(*args, **kwargs)
        Path(marker).write_text(point)
        time.sleep(600)
    return parked

if point == "before-swap":
    core.publish = park(core.publish)      # the "replacing" record is written, nothing swapped yet
else:
    atomic.fsync_dir = park(atomic.fsync_dir)  # swapped, the old version not yet removed
core.extract(archive, target, progress=False)
"""


def kill_when_parked(archive: Path, target: Path, point: str) -> None:
    """Extract ``archive`` into ``target`` in a child that parks at ``point``; SIGKILL it there."""
    marker = target.parent.parent / "parked"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(archive), str(target), str(marker), point],
                             env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never reached the parking point"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        marker.unlink(missing_ok=True)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["before-swap", "after-swap"])
def test_sigkill_during_the_replacement_loses_no_foreign_file(sandbox, point):
    archive = write(sandbox / "data.tar.gz", version(V1))
    target = sandbox / "target"
    extract(archive, target, progress=False)
    kept = add_foreign(target, sandbox / "outside.txt")
    write(archive, version(V2))
    kill_when_parked(archive, target, point)
    assert {k: v[0] for k, v in snapshot(target, list(kept)).items()} == {k: v[0] for k, v in kept.items()}
    assert not extraction_is_current(archive, target)
    assert extract(archive, target, progress=False).status == "extracted"
    assert snapshot(target, list(kept)) == kept
    assert {k: v for k, v in files_in(target).items() if k not in kept} == V2
    assert temp_folders(sandbox) == []
    write(archive, version(V1))  # and once more, from the recovered record
    assert extract(archive, target, progress=False).status == "extracted"
    assert snapshot(target, list(kept)) == kept


def test_a_version_1_record_owns_only_its_top_level_names(sandbox):
    """A target extracted by an older release (record version 1, top-level names): those names are
    replaced, anything else in the target is the user's and is kept."""
    archive = write(sandbox / "data.tar.gz", version(V1))
    target = sandbox / "target"
    extract(archive, target, progress=False)
    (target / "notes.txt").write_bytes(b"mine\n")
    (sandbox / ".target.extract.json").write_text(json.dumps(
        {"version": 1, "state": "complete", "archive": str(archive), "top_level": ["a.txt", "gone", "old-only.txt", "sub"]}))
    write(archive, version(V2))
    assert extract(archive, target, progress=False).status == "extracted"
    assert files_in(target) == {**V2, "notes.txt": b"mine\n"}


_KILL_BETWEEN_RENAMES = """
import os, signal, sys
from resumable.extract import atomic, core

archive, target = sys.argv[1:3]
atomic._exchange = lambda a, b: False  # a file system without renameat2's exchange
real_rename = os.rename

def rename(src, dst, *args, **kwargs):
    real_rename(src, dst, *args, **kwargs)
    if str(dst).endswith("-old"):  # the old version is aside, the new one not yet in place
        os.kill(os.getpid(), signal.SIGKILL)

os.rename = rename
core.extract(archive, target, progress=False)
"""


def test_a_kill_between_the_two_renames_without_exchange_puts_the_old_version_back(sandbox):
    archive = write(sandbox / "data.tar.gz", version(V1))
    target = sandbox / "target"
    extract(archive, target, progress=False)
    kept = add_foreign(target, sandbox / "outside.txt")
    write(archive, version(V2))
    child = subprocess.run([sys.executable, "-c", _KILL_BETWEEN_RENAMES, str(archive), str(target)],
                           env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO, capture_output=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert not target.exists()  # the moment the fallback cannot avoid: no target at all
    assert extract(archive, target, progress=False).status == "extracted"
    assert snapshot(target, list(kept)) == kept
    assert {k: v for k, v in files_in(target).items() if k not in kept} == V2
    assert temp_folders(sandbox) == []


def test_only_the_targets_own_temp_folders_are_cleaned_up(sandbox):
    """A target named like a glob, or a folder named like another target's temp folder: never removed."""
    archive = write(sandbox / "data.tar.gz", version(V1))
    live = sandbox / ".d1.extracting-4242-abcdabcd"  # another extraction's (of target 'd1') live temp folder
    live.mkdir()
    (live / "x").write_bytes(b"x")
    extract(archive, sandbox / "d[1]", progress=False)
    assert (live / "x").read_bytes() == b"x"
    with pytest.raises(ExtractError.__mro__[1], match="temporary folders"):  # a UsageError
        extract(archive, sandbox / ".ads.extracting-1-deadbeef", progress=False)


@pytest.mark.parametrize("when", ["while flushing", "right before the swap"])
def test_a_file_written_into_the_target_during_the_replacement_is_kept(sandbox, monkeypatch, when):
    from resumable.extract import core

    archive = write(sandbox / "data.tar.gz", version(V1))
    target = sandbox / "target"
    extract(archive, target, progress=False)
    late = target / "sub" / "written-meanwhile.txt"
    name = "sync_filesystem" if when == "while flushing" else "publish"
    real = getattr(core, name)

    def write_then(*args, **kwargs):
        late.write_bytes(b"meanwhile\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(core, name, write_then)
    write(archive, version(V2))
    assert extract(archive, target, progress=False).status == "extracted"
    assert late.read_bytes() == b"meanwhile\n"
    assert {k: v for k, v in files_in(target).items() if k != "sub/written-meanwhile.txt"} == V2
    assert temp_folders(sandbox) == []


def test_a_kill_before_the_swap_does_not_claim_the_new_versions_paths(sandbox):
    """The record of a replacement killed before its swap lists the new version's members too; a
    file the user later puts at one of those paths is still the user's."""
    archive = write(sandbox / "data.tar.gz", version(V1))
    target = sandbox / "target"
    extract(archive, target, progress=False)
    write(archive, version(V2))
    kill_when_parked(archive, target, "before-swap")
    (target / "new.txt").write_bytes(b"the user's\n")  # a path only the killed new version has
    write(archive, version(V1))
    assert extract(archive, target, progress=False).status == "extracted"
    assert (target / "new.txt").read_bytes() == b"the user's\n"


@pytest.mark.slow
def test_a_foreign_tree_of_any_depth_is_kept(sandbox):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # two descriptors per level while linking
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard}: too few descriptors for a 1,200-level tree")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))
    try:
        _deep_tree_is_kept(sandbox)
    finally:
        from resumable.extract.atomic import remove

        remove(sandbox / "target" / "deep")  # pytest's clean-up (shutil.rmtree) would recurse past the limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _deep_tree_is_kept(sandbox: Path) -> None:
    archive = write(sandbox / "data.tar.gz", version(V1))
    target = sandbox / "target"
    extract(archive, target, progress=False)
    deep = target / "deep" / "/".join(["d"] * 1200)
    (target / "deep").mkdir()
    fd = os.open(target / "deep", os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1200):  # os.makedirs recurses once per level
        os.mkdir("d", dir_fd=fd)
        fd, parent = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
        os.close(parent)
    os.close(fd)
    (deep / "leaf.txt").write_bytes(b"leaf\n")
    write(archive, version(V2))
    assert extract(archive, target, progress=False).status == "extracted"
    assert (deep / "leaf.txt").read_bytes() == b"leaf\n"


def test_a_name_with_a_newline_stays_on_one_line_in_the_error(sandbox):
    archive = write(sandbox / "data.tar.gz", version(V1))
    target = sandbox / "target"
    extract(archive, target, progress=False)
    (target / "notes\nerror: fake").write_bytes(b"mine\n")
    write(archive, version({**V2, "notes\nerror: fake": b"theirs\n"}))
    with pytest.raises(ForeignFileError) as err:
        extract(archive, target, progress=False)
    assert "\n" not in str(err.value) and "notes\\x0aerror: fake" in str(err.value)


def test_a_file_written_after_the_swap_is_not_taken_for_a_member(sandbox, monkeypatch):
    """The record lists what the archive put there, not what anyone writes into the published
    target before the record is written: the next version keeps such a file."""
    from resumable.extract import core

    archive = write(sandbox / "data.tar.gz", version(V1))
    target = sandbox / "target"
    extract(archive, target, progress=False)
    real = core._carry_late

    def write_then(old, published, owned, made_by):
        (published / "user-late.txt").write_bytes(b"mine\n")
        return real(old, published, owned, made_by)

    monkeypatch.setattr(core, "_carry_late", write_then)
    write(archive, version(V2))
    extract(archive, target, progress=False)
    monkeypatch.setattr(core, "_carry_late", real)
    write(archive, version({"z.txt": b"z\n"}))
    assert extract(archive, target, progress=False).status == "extracted"
    assert files_in(target) == {"z.txt": b"z\n", "user-late.txt": b"mine\n"}
