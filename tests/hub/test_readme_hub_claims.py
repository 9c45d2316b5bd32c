"""README.md claims about the Hub reached through the CLI in a real process, as a user types it:

- `train-pipeline model download` with no --dest puts the snapshot in ./models_cache/<org>--<name>/<commit>/
  of the working directory, HF_ENDPOINT names the Hub, and a second run costs one metadata request
  and 0 bytes (Models);
- an hf:// source keeps its snapshot in <folder>/.resumable/hf/ and hard-links its files into the
  folder (Datasets, Hub sources)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _model_download(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train_pipeline.cli", "model", "download", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


@pytest.mark.slow
def test_model_download_defaults_to_models_cache_in_the_working_directory(hub, tmp_path):
    commit = hub.repo("org/tiny").commit
    r = _model_download("org/tiny", "-q", cwd=tmp_path, HF_ENDPOINT=hub.endpoint, HF_TOKEN="hf_good")
    assert r.returncode == 0, r.stderr
    folder = tmp_path / "models_cache" / "org--tiny" / commit
    assert Path(r.stdout.strip()) == folder
    assert json.loads((folder / "config.json").read_text()) == {"model_type": "tiny", "hidden": 8}
    assert (folder / "model.safetensors").stat().st_size == (hub.repos_root / "org/tiny/model.safetensors").stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models_cache"]  # nothing else written there

    sent = sum(x.bytes_sent for x in hub.settle() if "/resolve/" in x.path)
    requests = len(hub.settle())
    r = _model_download("org/tiny", "-q", cwd=tmp_path, HF_ENDPOINT=hub.endpoint, HF_TOKEN="hf_good")
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == folder
    again = hub.settle()[requests:]
    assert len(again) == 1 and "/resolve/" not in again[0].path, [x.path for x in again]  # one metadata request
    assert sum(x.bytes_sent for x in hub.settle() if "/resolve/" in x.path) == sent  # 0 bytes of files


@pytest.mark.slow
def test_an_hf_source_publishes_hard_links_to_its_snapshot_under_resumable(hub, tmp_path):
    """README.md, Datasets: the snapshot is kept in <folder>/.resumable/hf/ and its files are
    hard-linked into the folder under their repository paths (nothing stored twice)."""
    r = subprocess.run([sys.executable, "-m", "train_pipeline.cli", "fetch", "-q", "hf://datasets/org/tinyset",
                        "-d", str(tmp_path / "d")], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": "hf_good"})
    assert r.returncode == 0, r.stderr
    published = tmp_path / "d" / "train.jsonl"
    assert published.read_text() == '{"x": 1}\n'
    kept = [p for p in (tmp_path / "d" / ".resumable" / "hf").rglob("train.jsonl") if p.samefile(published)]
    assert kept and published.stat().st_nlink >= 2, sorted((tmp_path / "d" / ".resumable" / "hf").rglob("*"))
