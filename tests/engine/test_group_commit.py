"""The batch's group commit (resumable/commit.py): a small file waits, as a synced-later part and
with its destination's lock held, until one syncfs makes its group durable; only then is it
published, and only then is the lock released. Real downloads, a real disk, real locks."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import Future

import pytest

from engine_helpers import make_file
from resumable import FetchResult, LocalFileError, TransferError, fetch
from resumable import commit as commit_module
from resumable.commit import GroupCommit
from resumable.locks import _byte_of, _flock, lock_file
from resumable.state import part_path

pytestmark = pytest.mark.skipif(not commit_module.available(), reason="group commit needs Linux syncfs and OFD locks")


def _locked(dest) -> bool:
    """Whether another open of the lock file is refused ``dest``'s byte now."""
    fd = os.open(lock_file(dest), os.O_RDWR)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_WRLCK, _byte_of(dest)))
    except OSError as exc:
        assert exc.errno in (errno.EAGAIN, errno.EACCES)
        return True
    finally:
        os.close(fd)
    return False


@pytest.fixture()
def slow_groups(monkeypatch):
    """A commit that waits (for more parts) until it is closed."""
    monkeypatch.setattr(commit_module, "GROUP_WAIT", 60.0)


def test_a_waiting_file_is_not_published_and_keeps_its_lock_until_its_group_is_durable(served, tmp_path, slow_groups):
    srv, root = served
    digest = make_file(root / "w.bin", 40_000, seed=1)
    dest = tmp_path / "out" / "w.bin"
    commit = GroupCommit()
    try:
        pending = fetch(srv.url("w.bin"), dest, commit=commit)
        assert isinstance(pending, Future) and not pending.done()
        assert not dest.exists() and part_path(dest).stat().st_size == 40_000  # complete, not published
        assert _locked(dest)  # nobody else can take it over meanwhile
    finally:
        commit.close()
    result = pending.result(timeout=0)
    assert isinstance(result, FetchResult) and result.status == "downloaded" and result.digest == f"sha256:{digest}"
    assert dest.stat().st_size == 40_000 and not part_path(dest).exists()
    assert not _locked(dest)
    assert fetch(srv.url("w.bin"), dest, size=40_000).status == "cached"  # the record was written too


def test_a_part_removed_while_it_waits_fails_that_file_alone(served, tmp_path, slow_groups):
    srv, root = served
    make_file(root / "gone.bin", 30_000, seed=2)
    make_file(root / "kept.bin", 20_000, seed=3)
    commit = GroupCommit()
    try:
        gone = fetch(srv.url("gone.bin"), tmp_path / "out" / "gone.bin", commit=commit)
        kept = fetch(srv.url("kept.bin"), tmp_path / "out" / "kept.bin", commit=commit)
        part_path(tmp_path / "out" / "gone.bin").unlink()  # someone else's doing
    finally:
        commit.close()
    with pytest.raises(LocalFileError, match="gone.bin"):
        gone.result(timeout=0)
    assert kept.result(timeout=0).status == "downloaded" and (tmp_path / "out" / "kept.bin").stat().st_size == 20_000
    assert not _locked(tmp_path / "out" / "gone.bin") and not _locked(tmp_path / "out" / "kept.bin")


def test_a_large_file_is_fsynced_and_published_by_its_own_thread(served, tmp_path):
    """Over INLINE_HASH_MAX a file's own fsync is cheap next to its bytes: no wait for a group."""
    srv, root = served
    make_file(root / "big.bin", (1 << 20) + 1, seed=4)
    commit = GroupCommit()
    try:
        result = fetch(srv.url("big.bin"), tmp_path / "out" / "big.bin", commit=commit)
        assert isinstance(result, FetchResult) and (tmp_path / "out" / "big.bin").exists()
    finally:
        commit.close()


SLOW_SYNCFS = textwrap.dedent("""
    import sys
    from pathlib import Path
    from resumable import FetchItem, commit, fetch_many
    commit.SLOW_SYNCFS = 0  # every syncfs counts as slow: after the first, each part is fsynced alone
    commit.GROUP_WAIT = 0
    base, out, names = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    results = fetch_many([FetchItem(f"{base}/{n}", out / n) for n in names], jobs=1, helpers=0)
    bad = [r for r in results if isinstance(r, Exception)]
    sys.exit(f"failed: {bad}" if bad else 0)
""")


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (installed by .ci/run)")
def test_after_a_slow_syncfs_each_part_is_fsynced_before_its_rename(served, tmp_path):
    """Other writers' dirty data makes a syncfs slow: the rest of the batch goes back to per-file
    fsyncs, with the same guarantee."""
    from test_durability import RENAMES, SYNCS, WRITES, _unsynced_renames

    srv, root = served
    names = [f"s{i}.bin" for i in range(6)]
    for i, n in enumerate(names):
        make_file(root / n, 3000 + i, seed=i)
    log = tmp_path / "strace.log"
    proc = subprocess.run(["strace", "-f", "-y", "-qq", "-e", "trace=" + ",".join((*WRITES, *SYNCS, *RENAMES)),
                           "-o", str(log), sys.executable, "-c", SLOW_SYNCFS, srv.url("").rstrip("/"),
                           str(tmp_path / "out"), *names],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, RESUMABLE_TRANSPORT="requests"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = log.read_text()
    assert _unsynced_renames(text) == {}
    assert text.count("syncfs(") >= 1
    assert len(set(re.findall(r"\bfsync\(\d+<([^>]*\.part)>", text))) >= 1
    assert sorted(p.name for p in (tmp_path / "out").glob("*.bin")) == sorted(names)


def test_a_part_another_writer_replaced_while_it_waits_is_not_published(served, tmp_path, slow_groups):
    """Where locks do nothing, a second writer finds no record of a small part, starts it afresh and
    writes its own bytes: what is at the part's path is then not the file this download verified."""
    srv, root = served
    make_file(root / "r.bin", 50_000, seed=5)
    dest = tmp_path / "out" / "r.bin"
    commit = GroupCommit()
    try:
        pending = fetch(srv.url("r.bin"), dest, commit=commit)
        part = part_path(dest)
        part.unlink()
        part.write_bytes(b"x" * 1000)  # the other writer's first bytes
    finally:
        commit.close()
    with pytest.raises(TransferError, match="another process replaced the partial file"):
        pending.result(timeout=0)
    assert not dest.exists() and not _locked(dest)
