"""Progress: callbacks, the guide's text bar, and a tqdm bar per file (point 10)."""

from __future__ import annotations

import io

from engine_helpers import make_file
from resumable import fetch, human_size, progress_bar


def test_callback_sees_monotonic_progress_up_to_total(served, tmp_path):
    srv, root = served
    make_file(root / "f.bin", 5 << 20)
    srv.fault("f.bin", cut_after=2 << 20)
    seen = []
    fetch(srv.url("f.bin"), tmp_path / "f.bin", retry_delay=0.01, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (5 << 20, 5 << 20)
    downloaded = [d for d, _ in seen]
    assert downloaded == sorted(downloaded)  # a resume continues, it does not count twice


def test_guide_progress_bar_shows_percent_sizes_speed_eta():
    out = io.StringIO()
    progress_bar(0, 100 << 20, stream=out)
    progress_bar(50 << 20, 100 << 20, stream=out)
    line = out.getvalue().split("\r")[-1]
    assert "50.0%" in line and "50.0 MiB/100.0 MiB" in line and "/s" in line and "ETA" in line
    progress_bar(100 << 20, 100 << 20, stream=out)
    assert out.getvalue().endswith("\n")


def test_tqdm_bar_when_asked_and_silent_otherwise(served, tmp_path, capfd):
    srv, root = served
    make_file(root / "f.bin", 3 << 20)
    fetch(srv.url("f.bin"), tmp_path / "a.bin", progress=True)
    err = capfd.readouterr().err
    assert "a.bin" in err and "3.0 MiB/3.0 MiB" in err and "100%" in err and "MiB/s" in err  # binary units, as the logs
    fetch(srv.url("f.bin"), tmp_path / "b.bin")  # not a TTY: silent
    assert capfd.readouterr().err == ""


def test_human_sizes():
    assert human_size(512) == "512 B"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(3 << 30) == "3.0 GiB"
