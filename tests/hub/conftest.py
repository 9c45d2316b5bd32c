"""Fixtures of the hub area: a folder of repositories and a HubServer serving it."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from offline.hub_server import HubServer

LARGE_SIZE = 3 * 1024 * 1024 + 12345  # LFS by pattern (*.safetensors); big enough to be cut/resumed


def make_repos(root: Path, large_size: int = LARGE_SIZE) -> Path:
    """org/tiny: small files, a nested one and an LFS weight; org/private and org/gated: markers."""
    tiny = root / "org" / "tiny"
    (tiny / "sub").mkdir(parents=True)
    (tiny / "config.json").write_text(json.dumps({"model_type": "tiny", "hidden": 8}))
    (tiny / "README.md").write_text("# tiny\n")
    (tiny / "sub" / "notes.txt").write_text("nested file\n")
    (tiny / "model.safetensors").write_bytes(os.urandom(large_size))
    (tiny / ".hub.json").write_text(json.dumps({"tags": ["v1.0"], "branches": ["dev"]}))
    for name, config in (("private", {"private": True}), ("gated", {"gated": True}), ("denied", {"gated": "denied"})):
        repo = root / "org" / name
        repo.mkdir(parents=True)
        (repo / "config.json").write_text("{}")
        (repo / ".hub.json").write_text(json.dumps(config))
    data = root / "datasets" / "org" / "tinyset"
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text('{"x": 1}\n')
    return root


@pytest.fixture(name="make_repos")
def make_repos_fixture():
    return make_repos


@pytest.fixture(scope="session")
def repos_root(tmp_path_factory) -> Path:
    return make_repos(tmp_path_factory.mktemp("hub-repos"))


@pytest.fixture
def hub(repos_root):
    with HubServer(repos_root, token="hf_good") as server:
        yield server


@pytest.fixture
def cdn_hub(repos_root):
    with HubServer(repos_root, cdn=True, token="hf_good") as server:
        yield server


BIG_SIZE = 32 * 1024 * 1024 + 4321  # the kill-and-resume file: big enough to kill mid-way while throttled


@pytest.fixture(scope="session")
def big_root(tmp_path_factory) -> Iterator[Path]:
    """org/big: one large LFS file and a config; org/multi: four 256 KiB LFS files (concurrency)."""
    root = tmp_path_factory.mktemp("hub-big")
    big = root / "org" / "big"
    big.mkdir(parents=True)
    (big / "config.json").write_text('{"model_type": "big"}')
    with open(big / "model.safetensors", "wb") as f:
        for _ in range(BIG_SIZE // (1 << 20) + 1):
            f.write(os.urandom(1 << 20))
        f.truncate(BIG_SIZE)
    multi = root / "org" / "multi"
    multi.mkdir(parents=True)
    for i in range(4):
        (multi / f"part-{i}.safetensors").write_bytes(os.urandom(256 * 1024))
    yield root
    shutil.rmtree(root, ignore_errors=True)  # 33 MiB: not kept with the basetemp of a session that failed
