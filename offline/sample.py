"""The offline sample: a tiny Qwen2-VL and two synthetic billboard datasets, built once and served on
127.0.0.1 so the pipeline takes them through exactly the code paths real sources take: the model
through the Hub API, one dataset as an archive over plain HTTP (fetch, verify, extract), the other
as a Hub dataset repository of parquet shards, an ``hf://datasets/...`` source (the snapshot
machinery, like the model).

The build is deterministic and cached in ``build_dir`` (a manifest records what was built);
heavy imports (torch, transformers) happen only when it has to be built.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from train_pipeline.config import DatasetSpec, FileSpec, ModelSpec, SampleSpec

SAMPLE_REPO = "train-pipeline/tiny-qwen2-vl"
SAMPLE_DATASET = "outdoor_advertising_sample"
ARCHIVE_NAME = f"{SAMPLE_DATASET}.tar.gz"
SAMPLE_PARQUET_REPO = "train-pipeline/billboard-parquet"  # a dataset repository on the Hub look-alike
SAMPLE_PARQUET_DATASET = "billboard_parquet_sample"
SAMPLE_PARQUET_SOURCE = f"hf://datasets/{SAMPLE_PARQUET_REPO}@main/data/*.parquet"
PARQUET_SHARDS = 2
BUILD_VERSION = 2
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class SampleAssets:
    hub_root: Path  # <hub_root>/<org>/<name>/ is the model repository, <hub_root>/datasets/<org>/<name>/ the parquet one
    files_root: Path  # the dataset archive
    archive_size: int
    archive_hash: str  # sha256:HEX


@dataclass(frozen=True)
class SampleSources:
    """What the pipeline downloads for the sample run, pointing at the local servers."""

    model: ModelSpec
    datasets: tuple[DatasetSpec, ...]


def build_sample(spec: SampleSpec | None = None) -> SampleAssets:
    """Build (once) the tiny model repository and the dataset archive; returns where they are."""
    spec = spec or SampleSpec()
    root = Path(os.path.expanduser(spec.build_dir)).resolve()
    root.mkdir(parents=True, exist_ok=True)
    want = {"version": BUILD_VERSION, "n_images": spec.n_images, "seed": spec.seed}
    with FileLock(str(root / ".build.lock")):
        assets = _read_manifest(root, want)
        if assets is None:
            assets = _build(root, spec, want)
    return assets


def _read_manifest(root: Path, want: dict) -> SampleAssets | None:
    try:
        data = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if data.get("built") != want:
        return None
    assets = SampleAssets(root / "hub", root / "files", data["archive_size"], data["archive_hash"])
    archive = assets.files_root / ARCHIVE_NAME
    model = assets.hub_root / SAMPLE_REPO
    shards = list((assets.hub_root / "datasets" / SAMPLE_PARQUET_REPO / "data").glob("*.parquet"))
    if not archive.is_file() or archive.stat().st_size != assets.archive_size or not (model / "config.json").is_file() \
            or len(shards) != PARQUET_SHARDS:
        return None
    return assets


def _build(root: Path, spec: SampleSpec, want: dict) -> SampleAssets:
    from offline.sample_data import build_sample_dataset, build_sample_parquet
    from offline.tiny_model import build_tiny_qwen2vl

    for name in ("hub", "files", "staging", MANIFEST):
        p = root / name
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    build_tiny_qwen2vl(root / "hub" / SAMPLE_REPO, seed=spec.seed)
    # Other billboards (another seed), half as many, as parquet shards in a Hub dataset repository.
    build_sample_parquet(root / "hub" / "datasets" / SAMPLE_PARQUET_REPO, n_images=max(PARQUET_SHARDS, spec.n_images // 2),
                         seed=spec.seed + 1, shards=PARQUET_SHARDS)
    dataset = build_sample_dataset(root / "staging" / SAMPLE_DATASET, n_images=spec.n_images, seed=spec.seed)
    (root / "files").mkdir()
    archive = root / "files" / ARCHIVE_NAME
    _pack(Path(dataset), archive)
    shutil.rmtree(root / "staging")
    digest = "sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest()
    manifest = {"built": want, "archive_size": archive.stat().st_size, "archive_hash": digest}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return SampleAssets(root / "hub", root / "files", manifest["archive_size"], digest)


def _pack(folder: Path, archive: Path) -> None:
    """A reproducible tar.gz of ``folder`` (sorted names, fixed times and owners)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(folder.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=f"{folder.name}/{path.relative_to(folder).as_posix()}")
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_file():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    with open(archive, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(buf.getvalue())


@contextmanager
def serve_sample(spec: SampleSpec | None = None) -> Iterator[SampleSources]:
    """Build if needed, then serve the model and the parquet dataset (Hub API) and the archive (HTTP) on 127.0.0.1."""
    from offline.file_server import FileServer
    from offline.hub_server import HubServer

    assets = build_sample(spec)
    with HubServer(assets.hub_root) as hub, FileServer(assets.files_root) as files:
        yield SampleSources(
            model=ModelSpec(repo_id=SAMPLE_REPO, revision="main", endpoint=hub.endpoint),
            datasets=(sample_dataset(files.url(ARCHIVE_NAME), assets.archive_size, assets.archive_hash),
                      sample_parquet_dataset(hub.endpoint)),
        )


def sample_datasets() -> list[DatasetSpec]:
    """The sample's datasets, as laid out before serving (for the config checks)."""
    return [sample_dataset(), sample_parquet_dataset()]


def sample_parquet_dataset(endpoint: str | None = None) -> DatasetSpec:
    """The sample's Hub dataset: every parquet shard of ``SAMPLE_PARQUET_REPO`` at main, an hf:// source
    served by the Hub look-alike at ``endpoint``; its files land in <data_dir>/downloads/<name>/data/."""
    return DatasetSpec(
        name=SAMPLE_PARQUET_DATASET,
        description="synthetic billboards as Hub parquet shards (offline sample, hf:// source)",
        files=(FileSpec(url=SAMPLE_PARQUET_SOURCE, endpoint=endpoint),),
    )


def sample_dataset(url: str = f"http://127.0.0.1/{ARCHIVE_NAME}", size: int | None = None,
                   hash: str | None = None) -> DatasetSpec:
    """The sample's dataset as served at ``url`` (the default: its layout, for checks before serving)."""
    return DatasetSpec(
        name=SAMPLE_DATASET,
        description="synthetic billboard images with captions (offline sample)",
        files=(FileSpec(url=url, size=size, hash=hash),),
        extract_to=SAMPLE_DATASET,
    )
