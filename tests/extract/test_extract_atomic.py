"""Atomic publication, idempotence, replacement, crash recovery and concurrency."""

from __future__ import annotations

import errno
import gzip
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resumable.errors import ExtractError, UsageError
from resumable.extract import extract, extraction_is_current

from extract_archives import file_member, leftovers, tar_bytes, write
from no_exchange import extract_without_exchange

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("extract_child.py")


def version(files: dict[str, bytes]) -> bytes:
    return gzip.compress(tar_bytes([file_member(name, data) for name, data in files.items()]), 1)


V1 = {"a.txt": b"one\n", "b.txt": b"only in v1\n", "sub/c.txt": b"c1\n"}
V2 = {"a.txt": b"two\n", "sub/c.txt": b"c2\n", "new.txt": b"only in v2\n"}


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def temp_folders(box: Path) -> list[Path]:
    return list(box.glob(".*.extracting-*"))


def test_rerun_is_cached_and_trusts_the_unchanged_archive(sandbox):
    archive = write(sandbox / "v.tar.gz", version(V1))
    target = sandbox / "target"
    first = extract(archive, target, progress=False)
    ino = target.stat().st_ino
    assert first.status == "extracted" and extraction_is_current(archive, target)
    second = extract(archive, target, progress=False)
    assert second.status == "cached" and second.archive_digest == first.archive_digest
    assert (second.files, second.bytes, second.format) == (first.files, first.bytes, first.format)
    assert target.stat().st_ino == ino  # nothing was redone
    # Proof that an unchanged archive (same size, mtime, inode) is not re-hashed: alter its bytes in
    # place, restore the mtime, and the run is still a skip (as documented: the cheap check).
    st = archive.stat()
    with open(archive, "r+b") as f:
        f.seek(st.st_size - 1)
        f.write(b"\xff")
    os.utime(archive, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert extract(archive, target, progress=False).status == "cached"


def test_extraction_is_current_is_false_when_anything_moved(sandbox):
    archive = write(sandbox / "v.tar.gz", version(V1))
    target = sandbox / "target"
    assert not extraction_is_current(archive, target)
    extract(archive, target, progress=False)
    assert extraction_is_current(archive, target)
    (target / "b.txt").unlink()  # a top-level entry gone
    assert not extraction_is_current(archive, target)
    extract(archive, target, progress=False)
    shutil.rmtree(target / "sub")
    assert not extraction_is_current(archive, target)
    shutil.rmtree(target)
    assert not extraction_is_current(archive, target)
    assert extract(archive, target, progress=False).status == "extracted"  # a deleted target is redone
    assert tree(target) == V1
    copy = write(sandbox / "copy.tar.gz", archive.read_bytes())
    os.replace(copy, archive)  # same bytes, new inode (a re-download)
    assert not extraction_is_current(archive, target)
    assert extract(archive, target, progress=False).status == "cached"  # hashed once: same digest
    assert extraction_is_current(archive, target)  # and the cheap check passes again


def test_new_version_replaces_old_contents(sandbox):
    archive = write(sandbox / "v.tar.gz", version(V1))
    target = sandbox / "target"
    d1 = extract(archive, target, progress=False).archive_digest
    write(archive, version(V2))
    result = extract(archive, target, progress=False)
    assert result.status == "extracted" and result.archive_digest != d1
    assert tree(target) == V2  # b.txt of v1 is gone
    assert temp_folders(sandbox) == []
    assert extraction_is_current(archive, target)


def test_given_digest_is_trusted_and_decides_the_skip(sandbox):
    archive = write(sandbox / "v.tar.gz", version(V1))
    target = sandbox / "target"
    given = "sha256:" + "ab" * 32  # not the real digest: proves the archive was not hashed
    assert extract(archive, target, archive_digest=given, progress=False).archive_digest == given
    assert extract(archive, target, archive_digest=given.upper().replace("SHA256", "sha256"),
                   progress=False).status == "cached"
    write(archive, version(V2))
    other = "sha256:" + "cd" * 32
    assert extract(archive, target, archive_digest=other, progress=False).status == "extracted"
    assert tree(target) == V2


def test_failed_new_version_keeps_the_old_one(sandbox):
    archive = write(sandbox / "v.tar.gz", version(V1))
    target = sandbox / "target"
    extract(archive, target, progress=False)
    broken = write(sandbox / "broken.tar.gz", version(V2)[:-40])
    with pytest.raises(ExtractError, match="broken.tar.gz"):
        extract(broken, target, progress=False)
    assert tree(target) == V1 and extraction_is_current(archive, target)
    assert temp_folders(sandbox) == []


def test_a_folder_we_did_not_make_is_never_replaced(sandbox):
    archive = write(sandbox / "v.tar.gz", version(V1))
    target = sandbox / "target"
    target.mkdir()
    write(target / "mine.txt", b"user data")
    with pytest.raises(ExtractError, match=r"target .*target exists, is not empty and was not made by extract"):
        extract(archive, target, progress=False)
    assert tree(target) == {"mine.txt": b"user data"}
    (target / "mine.txt").unlink()  # an empty folder is fine
    assert extract(archive, target, progress=False).status == "extracted"


def test_archive_inside_the_target_is_refused(sandbox):
    target = sandbox / "data"
    target.mkdir()
    archive = write(target / "v.tar.gz", version(V1))
    with pytest.raises(UsageError, match="lies inside the target"):
        extract(archive, target, progress=False)
    assert archive.exists()


def test_stale_temp_folders_are_removed(sandbox):
    archive = write(sandbox / "v.tar.gz", version(V1))
    stale = sandbox / ".target.extracting-99999-deadbeef"
    write_tree = stale / "half"
    write_tree.mkdir(parents=True)
    write(write_tree / "x", b"partial")
    extract(archive, sandbox / "target", progress=False)
    assert not stale.exists()
    assert leftovers(sandbox, "v.tar.gz", "target", ".target.extract.json") == set()


def big_archive(path: Path) -> Path:
    """~8 MiB of incompressible members: many progress steps, so the child parks mid-way."""
    return write(path, version({f"part{i:02d}.bin": os.urandom(512 << 10) for i in range(16)}))


def run_child_and_kill(archive: Path, target: Path) -> None:
    marker = target.parent / "parked"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, str(CHILD), str(archive), str(target), str(marker)], env=env,
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never reached the middle of the extraction"
            time.sleep(0.02)
        partial = temp_folders(target.parent)
        assert len(partial) == 1 and any(partial[0].iterdir())  # a half-filled temp folder exists
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        marker.unlink(missing_ok=True)
    assert child.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_sigkill_mid_extraction_leaves_no_target_and_the_next_run_succeeds(sandbox):
    archive = big_archive(sandbox / "big.tar.gz")
    target = sandbox / "target"
    run_child_and_kill(archive, target)
    assert not target.exists() and not extraction_is_current(archive, target)
    result = extract(archive, target, progress=False)
    assert result.status == "extracted" and result.files == 16
    assert all(p.stat().st_size == 512 << 10 for p in target.iterdir())
    assert temp_folders(sandbox) == []


@pytest.mark.slow
def test_sigkill_while_replacing_keeps_the_old_version(sandbox):
    old = write(sandbox / "old.tar.gz", version(V1))
    target = sandbox / "target"
    extract(old, target, progress=False)
    new = big_archive(sandbox / "new.tar.gz")
    run_child_and_kill(new, target)
    assert tree(target) == V1 and extraction_is_current(old, target)
    assert extract(new, target, progress=False).status == "extracted"
    assert sorted(p.name for p in target.iterdir()) == [f"part{i:02d}.bin" for i in range(16)]
    assert temp_folders(sandbox) == []


@pytest.mark.slow
def test_concurrent_extractions_of_one_target_serialise(sandbox):
    archive = big_archive(sandbox / "big.tar.gz")
    target = sandbox / "target"
    code = "import sys; from resumable.extract import extract; print(extract(sys.argv[1], sys.argv[2], progress=False).status)"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(archive), str(target)], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert sorted(out.strip() for out, _ in outputs) == ["cached", "cached", "extracted"]
    assert len(list(target.iterdir())) == 16 and temp_folders(sandbox) == []


@pytest.mark.parametrize("had_target", [False, True])
def test_crash_between_publish_and_record_is_recovered(sandbox, had_target):
    """The record says "replacing" from before the rename until the final record: a run killed in
    that window leaves a target that is still ours, so the next run redoes it instead of refusing."""
    archive = write(sandbox / "v.tar.gz", version(V1))
    target = sandbox / "target"
    extract(archive, target, progress=False)
    record = sandbox / ".target.extract.json"
    if not had_target:  # the first extraction's window: target published, final record not yet written
        record.write_text('{"state": "replacing", "version": 1}')
    else:
        record.write_text(record.read_text().replace('"complete"', '"replacing"'))
    assert not extraction_is_current(archive, target)
    assert extract(archive, target, progress=False).status == "extracted"
    assert extraction_is_current(archive, target) and tree(target) == V1


@pytest.mark.slow
@pytest.mark.parametrize("err", [errno.EINVAL, errno.EOPNOTSUPP], ids=["EINVAL", "EOPNOTSUPP"])
def test_replacement_without_rename_exchange(sandbox, err):
    """Where the kernel or file system cannot exchange two folders (renameat2 answers EINVAL or
    EOPNOTSUPP: no_exchange.py makes a child's kernel answer that) the old version is moved aside,
    the new one renamed in, the old one removed."""
    archive = write(sandbox / "v.tar.gz", version(V1))
    target = sandbox / "target"
    extract(archive, target, progress=False)
    write(archive, version(V2))
    assert extract_without_exchange(archive, target, err) == "extracted"
    assert tree(target) == V2 and temp_folders(sandbox) == []
    assert extraction_is_current(archive, target) and extract(archive, target, progress=False).status == "cached"


def test_the_engine_module_stays_light():
    code = ("import sys, resumable.extract; heavy = {'prefect', 'torch', 'transformers', 'huggingface_hub'}; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_file_standing_where_the_target_was_is_kept_and_named(tmp_path):
    import io
    import tarfile

    from resumable.extract import extract

    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        info = tarfile.TarInfo("x/hello.txt")
        info.size = 5
        t.addfile(info, io.BytesIO(b"hello"))
    target = tmp_path / "out"
    extract(archive, target)
    import shutil

    from resumable.errors import ExtractError

    shutil.rmtree(target)
    target.write_text("a file where the folder was")  # not ours, whatever the record beside it says
    with pytest.raises(ExtractError, match="exists and is not a folder"):
        extract(archive, target)
    assert target.read_text() == "a file where the folder was"
    assert not list(tmp_path.glob(".out.extracting-*"))
