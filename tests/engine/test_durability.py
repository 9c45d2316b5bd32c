"""What reaches the disk, and when (README "Durability"): every file's bytes are on the disk before
its rename (a lone fetch fsyncs the file, then its folder; a batch makes its small files durable in
groups, one syncfs each, and fsyncs each folder it published into once, before it returns).
Traced with strace on a real process, never assumed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from engine_helpers import make_file
from resumable.batch import HELPER_MIN_ITEMS

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (installed by .ci/run)")

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from resumable import FetchItem, commit, fetch, fetch_many
    commit.GROUP_WAIT = 0.5  # groups as large on a loaded test machine as on a quiet one
    base, out = sys.argv[1], Path(sys.argv[2])
    helpers, names = int(sys.argv[3]), sys.argv[4:]
    if names[0] == "--one":
        fetch(f"{base}/{names[1]}", out / "one" / names[1])
    else:
        items = [FetchItem(f"{base}/{n}", out / ("a" if i % 2 else "b") / n) for i, n in enumerate(names)]
        results = fetch_many(items, jobs=4, helpers=helpers)
        bad = [r for r in results if isinstance(r, Exception)]
        sys.exit(f"failed: {bad}" if bad else 0)
""")


def _trace(tmp_path, base: str, args: list[str], helpers: int = 0, calls: str = "fsync,fdatasync") -> str:
    """The strace log (``-f -y``: every thread and helper, descriptors with their paths) of SCRIPT."""
    log = tmp_path / "strace.log"
    out = tmp_path / "out"
    env = dict(os.environ, RESUMABLE_TRANSPORT="requests")  # one transport: the trace is about the disk
    proc = subprocess.run(["strace", "-f", "-y", "-qq", "-e", f"trace={calls}", "-o", str(log),
                           sys.executable, "-c", SCRIPT, base, str(out), str(helpers), *args],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return log.read_text()


def _fsyncs(tmp_path, base: str, args: list[str], helpers: int = 0) -> tuple[list[str], list[str]]:
    """The paths fsynced by a run of SCRIPT: (files, folders)."""
    # "fsync(5</path>) = 0", or split by another thread's call: "fsync(5</path> <unfinished ...>"
    paths = re.findall(r"\b(?:fsync|fdatasync)\(\d+<([^>]*)>", _trace(tmp_path, base, args, helpers))
    folders = [p for p in paths if os.path.isdir(p)]
    files = [p for p in paths if p not in folders]
    return files, folders


WRITES = ("write", "pwrite64", "pwritev", "pwritev2", "splice", "copy_file_range", "sendfile")
SYNCS = ("fsync", "fdatasync", "syncfs")
RENAMES = ("rename", "renameat", "renameat2")


def _events(log: str) -> list[tuple[int, str, str, str]]:
    """(position, phase 'start'/'end', call, its line) per traced call: a call another thread
    split in two lines ("<unfinished ...>", then "<... call resumed>") starts at the first, ends at
    the second; a whole line is both."""
    events, open_calls = [], {}
    for i, line in enumerate(log.splitlines()):
        pid, _, rest = line.partition(" ")
        rest = rest.strip()
        resumed = re.match(r"<\.\.\. (\w+) resumed>", rest)
        if resumed:
            call, first = open_calls.pop((pid, resumed.group(1)))
            events.append((i, "end", call, first + rest))
            continue
        m = re.match(r"(\w+)\(", rest)
        if not m:
            continue
        call = m.group(1)
        events.append((i, "start", call, rest))
        if rest.endswith("<unfinished ...>"):
            open_calls[(pid, call)] = (call, rest)
        else:
            events.append((i, "end", call, rest))
    return events


def _unsynced_renames(log: str) -> dict[str, str]:
    """Each renamed ``.part`` whose bytes were not made durable (its own fsync, or a syncfs)
    between the end of its last write and the start of its rename: {part: why}."""
    events = _events(log)
    last_write: dict[str, int] = {}
    problems, renamed = {}, set()
    for pos, phase, call, text in events:
        if call in WRITES and phase == "end":
            for part in re.findall(r"\d+<([^>]*\.part)>", text):
                last_write[part] = pos
        elif call in RENAMES and phase == "start":
            src = re.search(r'"([^"]*\.part)"', text)
            if not src:
                continue
            part = src.group(1)
            renamed.add(part)
            if part not in last_write:
                problems[part] = "renamed, but no write of it was traced"
                continue
            synced = any(c in SYNCS and ph == "start" and last_write[part] < p < pos and
                         (c == "syncfs" or f"<{part}>" in t) and _ends_before(events, p, c, t, pos)
                         for p, ph, c, t in events)
            if not synced:
                problems[part] = "renamed before its bytes were synced"
    assert renamed, "no rename of a part file was traced"
    return problems


def _ends_before(events, start: int, call: str, text: str, limit: int) -> bool:
    if not text.endswith("<unfinished ...>"):
        return start < limit
    return any(c == call and ph == "end" and start <= p < limit and t.startswith(text[:-len("<unfinished ...>")])
               for p, ph, c, t in events)


@pytest.mark.parametrize("helpers", [0, 1])
def test_a_batch_makes_every_file_durable_before_its_rename_and_each_folder_once(served, tmp_path, helpers):
    """With a helper process too: its files are made durable by its own group commit, and are in
    folders the batch fsyncs at its end. The groups are real: far fewer syncfs than files."""
    srv, root = served
    names = [f"f{i}.bin" for i in range(HELPER_MIN_ITEMS + 6 if helpers else 8)]
    for i, n in enumerate(names):
        make_file(root / n, 5000 + i, seed=i)
    log = _trace(tmp_path, srv.url("").rstrip("/"), names, helpers,
                 calls=",".join((*WRITES, *SYNCS, *RENAMES)))
    assert _unsynced_renames(log) == {}
    renamed = re.findall(r'\brename\w*\(.*?"([^"]*\.part)"', log)
    assert sorted(os.path.basename(p) for p in renamed) == sorted(f"{n}.part" for n in names)
    assert 0 < len(re.findall(r"\bsyncfs\(", log)) <= len(names) // 2
    folders = re.findall(r"\bfsync\(\d+<([^>]*)>", log)
    assert sorted(folders) == sorted({str(tmp_path / "out" / "a"), str(tmp_path / "out" / "b")})
    for n in names:  # and every file is in place
        assert (tmp_path / "out" / ("a" if names.index(n) % 2 else "b") / n).stat().st_size == 5000 + names.index(n)


def test_a_lone_fetch_fsyncs_the_file_then_its_folder(served, tmp_path):
    srv, root = served
    make_file(root / "solo.bin", 7000, seed=3)
    files, folders = _fsyncs(tmp_path, srv.url("").rstrip("/"), ["--one", "solo.bin"])
    assert [os.path.basename(f) for f in files] == ["solo.bin.part"]
    assert folders == [str(tmp_path / "out" / "one")]


KILLED_AFTER_PUBLISH = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from resumable import FetchItem
    from resumable.batch import fetch_one
    fetch_one(FetchItem(sys.argv[1], Path(sys.argv[2])), False, None, {})  # published, folder not fsynced
    os.kill(os.getpid(), 9)
""")

FIND_IT_CACHED = textwrap.dedent("""
    import sys
    from pathlib import Path
    from resumable import FetchItem, fetch, fetch_many
    url, dest, how = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    if how == "batch":
        [result] = fetch_many([FetchItem(url, dest)], helpers=0)
    else:
        result = fetch(url, dest)
    assert result.status == "cached", result
""")


@pytest.mark.parametrize("how", ["batch", "lone"])
def test_a_file_a_killed_batch_published_gets_its_folder_fsynced_when_found_cached(served, tmp_path, how):
    """A batch fsyncs folders at its end; killed before that, the file it published is found in
    place by the next run, which must then make its name durable."""
    srv, root = served
    make_file(root / "k.bin", 9000, seed=7)
    dest = tmp_path / "out" / "k.bin"
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_PUBLISH, srv.url("k.bin"), str(dest)],
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9 and dest.stat().st_size == 9000, killed.stderr[-2000:]
    log = tmp_path / "strace.log"
    proc = subprocess.run(["strace", "-f", "-y", "-qq", "-e", "trace=fsync", "-o", str(log), sys.executable, "-c",
                           FIND_IT_CACHED, srv.url("k.bin"), str(dest), how], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert str(dest.parent) in re.findall(r"\bfsync\(\d+<([^>]*)>", log.read_text())


LEFT_BY_A_KILLED_RUN = textwrap.dedent("""
    import sys
    from pathlib import Path
    from resumable import FetchItem, fetch_many
    [result] = fetch_many([FetchItem(sys.argv[1], Path(sys.argv[2]))], helpers=0, retries=0)
    assert isinstance(result, Exception), result
""")

FINISH_IT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from resumable import FetchItem, fetch, fetch_many
    url, dest, how = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    result = fetch_many([FetchItem(url, dest)], helpers=0)[0] if how == "batch" else fetch(url, dest)
    assert result.bytes_transferred == 0, result  # every byte was here: the server answered 416
""")


@pytest.mark.parametrize("how", ["batch", "lone"])
def test_a_complete_part_an_earlier_run_left_is_synced_before_its_rename(served, tmp_path, how):
    """An earlier run wrote every byte of a part and died before syncing and publishing it: the next
    run finds it complete (the server answers 416 to the rest) and must sync it before the rename."""
    srv, root = served
    make_file(root / "left.bin", 800_000, seed=9)
    dest = tmp_path / "out" / "left.bin"
    srv.fault("left.bin", cut_after=400_000)
    first = subprocess.run([sys.executable, "-c", LEFT_BY_A_KILLED_RUN, srv.url("left.bin"), str(dest)],
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    srv.clear_faults()
    part = dest.parent / ".resumable" / "left.bin.part"
    assert part.stat().st_size == 400_000
    with open(part, "ab") as f:  # the rest, as the killed run had written it (not synced)
        f.write((root / "left.bin").read_bytes()[400_000:])
    log = tmp_path / "strace.log"
    proc = subprocess.run(["strace", "-f", "-y", "-qq", "-e", "trace=" + ",".join((*WRITES, *SYNCS, *RENAMES)),
                           "-o", str(log), sys.executable, "-c", FINISH_IT, srv.url("left.bin"), str(dest), how],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert dest.read_bytes() == (root / "left.bin").read_bytes()
    assert any(r.headers.get("Range") == "bytes=800000-" for r in srv.requests_for("left.bin"))
    text = log.read_text()
    renamed = re.search(r'\brename\w*\(.*?"([^"]*left\.bin\.part)"', text)
    assert renamed, text[-2000:]
    rename_at = text.index(renamed.group(0))
    synced = [m.start() for m in re.finditer(r"\b(?:syncfs\(|fsync\(\d+<[^>]*left\.bin\.part>)", text)]
    assert any(at < rename_at for at in synced), "the part was renamed before it was synced"
