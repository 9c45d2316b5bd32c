"""`train-pipeline model download`: prints the snapshot folder; errors are one line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from train_pipeline.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_download_prints_the_folder_and_reuses_it(hub, tmp_path, capsys):
    args = ["model", "download", "org/tiny", "--endpoint", hub.endpoint, "--dest", str(tmp_path),
            "--include", "*.json", "--include", "sub/*", "--exclude", "*.md"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    folder = Path(out.strip())
    assert folder == tmp_path / "org--tiny" / hub.repo("org/tiny").commit
    assert sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) == ["config.json"]
    assert (folder / "sub" / "notes.txt").is_file() and err.startswith("downloaded:")
    assert main([*args, "--offline", "-q"]) == 0
    out, err = capsys.readouterr()
    assert Path(out.strip()) == folder and err == ""


@pytest.mark.parametrize(
    "extra, words",
    [(["org/missing"], "not found"), (["org/tiny", "--revision", "nope"], "revision 'nope' not found"),
     (["org/gated"], "gated"), (["org/tiny", "--token", "hf_bad"], "rejected the token"),
     (["org/tiny", "--include", "nope.bin"], "'nope.bin' is not in")],
    ids=["repo", "revision", "gated", "bad-token", "file"],
)
def test_errors_are_one_line_with_nonzero_exit(hub, tmp_path, capsys, extra, words):
    code = main(["model", "download", *extra[:1], "--endpoint", hub.endpoint, "--dest", str(tmp_path), *extra[1:]])
    out, err = capsys.readouterr()
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and words in err


def test_offline_without_snapshot_in_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "train_pipeline.cli", "model", "download", "org/tiny", "--dest",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr and "offline" in proc.stderr
