"""The folder's verification journal (resumable/journal.py): one appended line per record, the last
line for a name wins, nothing lost between writers, any bytes in it read as sound records or none."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resumable import FetchItem, fetch_many, is_verified, journal
from resumable.state import RECORD_DIR, VerifiedRecord, escaped_name

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
names = st.text(st.characters(exclude_characters="/\0", exclude_categories=("Cs",)), min_size=1, max_size=40).filter(
    lambda n: n not in (".", "..", RECORD_DIR))


def _record(size: int) -> dict:
    return {"size": size, "mtime_ns": 1, "ctime_ns": 2, "inode": 3, "digests": {"sha256": "ab" * 32},
            "source": None, "validator": None}


@pytest.mark.slow
@SETTINGS
@given(st.lists(st.tuples(names, st.one_of(st.none(), st.integers(0, 1 << 40))), max_size=30))
def test_the_last_line_for_each_name_wins(tmp_path_factory, ops):
    folder = tmp_path_factory.mktemp("j") / RECORD_DIR
    folder.mkdir()
    expected: dict[str, dict | None] = {}
    for name, size in ops:
        record = None if size is None else _record(size)
        journal.append(folder, escaped_name(name), record)
        expected[name] = record
    for name, record in expected.items():
        assert journal.lookup(folder, escaped_name(name)) == record


@pytest.mark.slow
@SETTINGS
@given(st.lists(st.one_of(st.binary(max_size=120), st.text(max_size=80).map(str.encode),
                          st.builds(lambda n, r: json.dumps({"name": n, "record": r}).encode(), st.just("f.bin"),
                                    st.one_of(st.none(), st.integers(), st.text(max_size=5),
                                              st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8)
                                                              | st.none(), max_size=8)))),
                max_size=12))
def test_any_journal_on_disk_loads_as_a_sound_record_or_none(tmp_path_factory, lines):
    dest = tmp_path_factory.mktemp("j") / "f.bin"
    (dest.parent / RECORD_DIR).mkdir()
    (dest.parent / RECORD_DIR / journal.NAME).write_bytes(b"\n".join(lines) + b"\n")
    record = VerifiedRecord.load(dest)
    if record is not None:
        assert record.size >= 0 and all(isinstance(v, str) for v in record.digests.values())


def test_a_torn_line_loses_at_most_the_record_written_after_it(tmp_path):
    folder = tmp_path / RECORD_DIR
    folder.mkdir()
    journal.append(folder, "a", _record(1))
    with open(folder / journal.NAME, "ab") as f:
        f.write(b'{"name":"b","rec')  # a power cut mid-append
    journal.append(folder, "c", _record(3))
    journal.append(folder, "d", _record(4))
    assert journal.lookup(folder, "a") == _record(1) and journal.lookup(folder, "d") == _record(4)
    assert journal.lookup(folder, "b") is None


@pytest.mark.slow
def test_threads_and_processes_appending_at_once_lose_no_line_and_compaction_keeps_the_last(tmp_path):
    folder = tmp_path / RECORD_DIR
    folder.mkdir()
    child = ("import sys; from resumable import journal; from pathlib import Path\n"
             "for i in range(1500):\n"
             "    journal.append(Path(sys.argv[1]), f'p{sys.argv[2]}-{i % 40}', {'size': i, 'pad': 'x' * 200})\n")
    procs = [subprocess.Popen([sys.executable, "-c", child, str(folder), str(k)]) for k in range(2)]

    def writer(k: int) -> None:
        for i in range(1500):
            journal.append(folder, f"t{k}-{i % 40}", {"size": i, "pad": "x" * 200})

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(p.wait(timeout=120) == 0 for p in procs)
    # 7,500 lines of ~260 bytes went past the compaction size: superseded lines were dropped
    assert (folder / journal.NAME).stat().st_size < 2 * journal._COMPACT_AT
    for who in ("t0", "t1", "t2", "p0", "p1"):
        for j in range(40):
            assert journal.lookup(folder, f"{who}-{j}")["size"] == max(range(j, 1500, 40)), (who, j)
    assert sorted(os.listdir(folder)) == [journal.NAME]  # no compaction scratch file left


def test_a_symlink_or_fifo_at_the_journal_is_never_followed(tmp_path):
    folder = tmp_path / RECORD_DIR
    folder.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (folder / journal.NAME).symlink_to(victim)
    assert journal.lookup(folder, "a") is None
    journal.append(folder, "a", _record(1))
    assert victim.read_text() == "keep me" and not (folder / journal.NAME).is_symlink()
    assert journal.lookup(folder, "a") == _record(1)
    os.unlink(folder / journal.NAME)
    os.mkfifo(folder / journal.NAME)
    assert journal.lookup(folder, "a") is None  # does not block on the FIFO
    journal.append(folder, "a", _record(2))
    assert journal.lookup(folder, "a") == _record(2)


def test_a_batch_keeps_one_journal_and_a_rerun_trusts_it(served, tmp_path):
    srv, root = served
    digests = {}
    for i in range(30):
        data = os.urandom(5000 + i)
        (root / f"s{i}.bin").write_bytes(data)
        digests[f"s{i}.bin"] = hashlib.sha256(data).hexdigest()
    out = tmp_path / "out"
    items = [FetchItem(srv.url(n), out / n, hash=f"sha256:{d}") for n, d in digests.items()]
    assert all(r.status == "downloaded" for r in fetch_many(items, jobs=8))
    assert sorted(os.listdir(out / RECORD_DIR)) == [".locks", journal.NAME]  # no file per record
    assert all(is_verified(out / n, hash=f"sha256:{d}") for n, d in digests.items())
    again = fetch_many(items, jobs=8)
    assert all(r.status == "cached" and r.bytes_transferred == 0 for r in again)


def test_a_destinations_record_paths_keep_its_path_type():
    """The sidecar paths are remembered per destination; a PurePosixPath equals the Path of the
    same text, and neither may be handed the other's kind (a pure path cannot be opened)."""
    from pathlib import Path, PurePosixPath

    from resumable.state import part_path, record_dir, state_path

    for first, second in ((PurePosixPath("/x/y/f.bin"), Path("/x/y/f.bin")), (Path("/x/z/g.bin"), PurePosixPath("/x/z/g.bin"))):
        for fn in (record_dir, part_path, state_path):
            assert type(fn(first)) is type(first) and type(fn(second)) is type(second)
            assert str(fn(first)) == str(fn(second))
