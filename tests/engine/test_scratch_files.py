"""Write-then-rename updates leave nothing behind: a writer SIGKILLed between its scratch file's
create and its rename leaves one, and the next update of the same file removes it; a live
writer's scratch file is never taken. (Chaos campaign seed 106: a kill while training wrote
``data_report.json`` left ``.data_report.json.d55d753f.tmp`` in the results folder for good.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from resumable.scratch import sweep
from resumable.state import read_json, write_json

HOLDER = """
import os, sys, time
from pathlib import Path
from resumable.scratch import scratch_for
with scratch_for(Path(sys.argv[1])) as (fd, tmp):
    os.write(fd, b'{"half": ')
    print(tmp, flush=True)
    sys.stdin.readline()  # the test says when to go on (or kills us)
    os.write(fd, b'1}')
    os.replace(tmp, sys.argv[1])
"""


def _holder(path: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    return proc, Path(proc.stdout.readline().strip())


def _scratch(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(".tmp"))


def test_a_killed_writers_scratch_file_goes_with_the_next_write(tmp_path):
    target = tmp_path / "data_report.json"
    proc, scratch = _holder(target)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    proc.stdin.close()
    proc.stdout.close()
    assert _scratch(tmp_path) == [scratch.name]  # what a kill at that moment leaves
    write_json(target, {"rows": 3}, readable=True)
    assert _scratch(tmp_path) == [] and read_json(target) == {"rows": 3}


def test_a_live_writers_scratch_file_is_never_taken(tmp_path):
    target = tmp_path / "run.json"
    proc, scratch = _holder(target)
    try:
        write_json(target, {"first": True})
        assert sweep(tmp_path, target.name, again=True) == []
        assert _scratch(tmp_path) == [scratch.name]
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    assert json.loads(target.read_text()) == {"half": 1} and _scratch(tmp_path) == []


def test_only_this_files_scratch_names_are_swept(tmp_path):
    """Other files' scratch names, look-alikes, and a link, folder or FIFO under a scratch name are
    left alone."""
    for name in (".run.json.1234abcd.tmp", ".run.json.x.1234abcd.tmp", ".run.json.1234abcd.new.tmp",
                 ".other.json.1234abcd.tmp", "run.json.1234abcd.tmp", ".run.json.1234ABCD.tmp"):
        (tmp_path / name).write_text("x")
    os.symlink(tmp_path / "elsewhere", tmp_path / ".run.json.abcdef12.tmp")
    (tmp_path / ".run.json.abcdef34.tmp").mkdir()
    os.mkfifo(tmp_path / ".run.json.abcdef56.tmp")
    assert [p.name for p in sweep(tmp_path, "run.json")] == [".run.json.1234abcd.tmp"]
    assert len(os.listdir(tmp_path)) == 8
    write_json(tmp_path / "run.json", {"ok": 1})  # and a write among them works
    assert read_json(tmp_path / "run.json") == {"ok": 1}


def test_a_killed_links_temp_file_goes_with_the_next_link_under_the_lock(tmp_path):
    """The Hub's link-or-copy into place (``temp_path``, created by ``os.link``, so never locked)
    runs under the destination's lock: whatever temp file of that destination is there then was
    left by a killed writer."""
    from resumable import locks
    from resumable.state import ensure_record_dir, record_dir, remove_stale_temps, temp_path

    dest = tmp_path / "model.safetensors"
    ensure_record_dir(dest)
    stale, other = temp_path(dest), temp_path(tmp_path / "other.bin")
    stale.write_text("half")
    other.write_text("someone else's")
    with locks.exclusive(dest):
        remove_stale_temps(dest)
    assert sorted(p.name for p in record_dir(dest).iterdir() if p.name.endswith(".tmp")) == [other.name]
