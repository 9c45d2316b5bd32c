"""hf:// sources against the Hub look-alike serving a dataset repository of parquet shards: the
fetch CLI, datasets download (registry and --urls), resume after SIGKILL, corruption, offline
re-runs, where the token goes, and the real huggingface_hub client's view of the same repository."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from offline.hub_server import HubServer
from resumable.errors import ResumableError
from resumable.hub import SnapshotError
from resumable.hub.sources import fetch_hf, hub_cache, hub_files_current
from resumable.state import part_path

ROOT = Path(__file__).resolve().parents[2]
SHARDS = ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
SOURCE = "hf://datasets/org/shards/data/*.parquet"
BIG = "data/train-00000-of-00001.parquet"
BIG_ROWS, BIG_ROW_BYTES = 12, 2 * 1024 * 1024  # ~24 MiB of incompressible bytes: time to kill it mid-way


def _png(seed: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (24, 16), (seed * 40 % 256, 90, 200)).save(buf, format="PNG")
    return buf.getvalue()


def make_shards(repo: Path, shards: int = 2, rows: int = 3) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (repo / "data").mkdir(parents=True, exist_ok=True)
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("image", image), ("text", pa.string())])
    for k in range(shards):
        table = pa.Table.from_pylist([{"image": {"bytes": _png(k * rows + i), "path": None},
                                       "text": f"A red billboard number {k * rows + i}."} for i in range(rows)],
                                     schema=schema)
        pq.write_table(table, repo / "data" / f"train-{k:05d}-of-{shards:05d}.parquet")
    (repo / "README.md").write_text("---\nlicense: cc0-1.0\n---\n# shards\n")


@pytest.fixture(scope="session")
def shards_root(tmp_path_factory) -> Path:
    """datasets/org/shards: two parquet shards and a README; datasets/org/big: one ~24 MiB shard;
    datasets/org/secret: private."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("hub-shards")
    make_shards(root / "datasets" / "org" / "shards")
    big = root / "datasets" / "org" / "big" / "data"
    big.mkdir(parents=True)
    table = pa.Table.from_pylist([{"image": os.urandom(BIG_ROW_BYTES), "text": f"row {i}"} for i in range(BIG_ROWS)])
    pq.write_table(table, big / Path(BIG).name, compression="none")
    secret = root / "datasets" / "org" / "secret"
    make_shards(secret, shards=1)
    (secret / ".hub.json").write_text(json.dumps({"private": True}))
    return root


@pytest.fixture
def shards_hub(shards_root):
    with HubServer(shards_root, token="hf_good") as server:
        yield server


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "train_pipeline.cli", *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def read_rows(folder: Path) -> list[str]:
    import pyarrow.parquet as pq

    return [t for p in sorted(folder.glob("data/*.parquet")) for t in pq.read_table(p).column("text").to_pylist()]


# -- fetch ---------------------------------------------------------------------------------------
def test_fetch_glob_into_dir_matches_what_huggingface_hub_sees(shards_hub, shards_root, tmp_path):
    from huggingface_hub import HfApi, HfFileSystem, hf_hub_download

    out = tmp_path / "out"
    proc = cli("fetch", SOURCE, "-d", str(out), env={"HF_ENDPOINT": shards_hub.endpoint})
    assert proc.returncode == 0, proc.stderr
    commit = shards_hub.repo("org/shards", "dataset").commit
    assert f"commit {commit[:12]}" in proc.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if ".resumable" not in p.parts
                  and p.is_file()) == SHARDS  # only what the glob selects, under the repository's paths

    # The real client's view of the same repository: the same files, bytes and commit.
    fs = HfFileSystem(endpoint=shards_hub.endpoint, token=False, skip_instance_cache=True)
    listed = sorted(fs.glob("datasets/org/shards/data/*.parquet"))
    assert listed == [f"datasets/org/shards/{p}" for p in SHARDS]
    for path in SHARDS:
        assert fs.cat_file(f"datasets/org/shards/{path}") == (out / path).read_bytes()
        theirs = hf_hub_download("org/shards", path, repo_type="dataset", endpoint=shards_hub.endpoint, token=False,
                                 cache_dir=tmp_path / "hf-cache")
        assert Path(theirs).read_bytes() == (out / path).read_bytes()
        lfs = fs.info(f"datasets/org/shards/{path}")["lfs"]
        assert lfs["sha256"] == hashlib.sha256((out / path).read_bytes()).hexdigest()
    assert HfApi(endpoint=shards_hub.endpoint, token=False).dataset_info("org/shards").sha == commit
    assert read_rows(out) == [f"A red billboard number {i}." for i in range(6)]

    # Again: cached, no file body requested.
    mark = len(shards_hub.settle())
    proc = cli("fetch", SOURCE, "-d", str(out), env={"HF_ENDPOINT": shards_hub.endpoint})
    assert proc.returncode == 0 and proc.stderr.count("cached") == 2, proc.stderr
    assert not [r for r in shards_hub.settle()[mark:] if "/resolve/" in r.path]


def test_fetch_one_file_to_output_with_size_and_hash_checked(shards_hub, shards_root, tmp_path):
    want = (shards_root / "datasets/org/shards" / SHARDS[1]).read_bytes()
    sha = hashlib.sha256(want).hexdigest()
    out = tmp_path / "shard.parquet"
    env = {"HF_ENDPOINT": shards_hub.endpoint}
    source = f"hf://datasets/org/shards@main/{SHARDS[1]}"
    proc = cli("fetch", source, "-o", str(out), "--size", str(len(want)), "--hash", f"sha256:{sha}", env=env)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == want

    line = one_line_error(cli("fetch", source, "-o", str(tmp_path / "b.parquet"), "--size", str(len(want) + 1), env=env))
    assert source in line and f"size {len(want) + 1}" in line and "fix or remove size/hash" in line
    line = one_line_error(cli("fetch", SOURCE, "-o", str(tmp_path / "c.parquet"), "--hash", f"sha256:{sha}", env=env))
    assert "size/hash describe one file" in line
    line = one_line_error(cli("fetch", SOURCE, "-o", str(tmp_path / "d.parquet"), env=env))
    assert "selects 2 files" in line and "-d DIR" in line
    line = one_line_error(cli("fetch", SOURCE, "-d", str(tmp_path), "--mirror", "http://127.0.0.1:1/x", env=env))
    assert "--mirror" in line and "HF_ENDPOINT" in line


def test_a_glob_or_name_that_matches_nothing_lists_what_the_repository_has(shards_hub, tmp_path):
    env = {"HF_ENDPOINT": shards_hub.endpoint}
    line = one_line_error(cli("fetch", "hf://datasets/org/shards/test-*.parquet", "-d", str(tmp_path), env=env))
    assert "hf://datasets/org/shards/test-*.parquet" in line and "check the patterns" in line
    assert "README.md" in line and SHARDS[0] in line
    line = one_line_error(cli("fetch", "hf://datasets/org/shards/data/nope.parquet", "-o", str(tmp_path / "x"), env=env))
    assert "'data/nope.parquet' is not in 'org/shards'" in line and SHARDS[1] in line
    line = one_line_error(cli("fetch", "hf://datasets/org/sh ards", "-d", str(tmp_path), env=env))
    assert "contains a space" in line and "hf://datasets/ORG/NAME[@REVISION][/PATH-OR-GLOB]" in line


def test_a_folder_path_selects_its_files_and_a_model_source_works_too(shards_hub, hub, tmp_path):
    r = fetch_hf("hf://datasets/org/shards/data", tmp_path / "a", endpoint=shards_hub.endpoint, progress=False)
    assert list(r.paths) == SHARDS and all(p.is_file() for p in r.files)
    r = fetch_hf("hf://org/tiny@v1.0/config.json", output=tmp_path / "b" / "cfg.json", endpoint=hub.endpoint,
                 token="hf_good", progress=False)
    assert json.loads((tmp_path / "b" / "cfg.json").read_text())["model_type"] == "tiny"
    assert r.repo_type == "model" and r.revision == "v1.0"


# -- datasets download ---------------------------------------------------------------------------
def test_datasets_download_registry_entry_and_urls(shards_hub, shards_root, tmp_path):
    registry = tmp_path / "registry.yaml"
    registry.write_text(f"datasets:\n  - name: billboards\n    files:\n      - url: {SOURCE}\n"
                        f"  - name: readme_only\n    files:\n      - url: hf://datasets/org/shards/README.md\n"
                        f"        size: 3\n")
    env = {"HF_ENDPOINT": shards_hub.endpoint}
    data = tmp_path / "data"
    proc = cli("datasets", "download", "billboards", "--registry", str(registry), "--data-dir", str(data), env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"{SOURCE} (2 files)" in proc.stdout and "downloaded" in proc.stdout
    folder = data / "downloads" / "billboards"
    for path in SHARDS:
        assert (folder / path).read_bytes() == (shards_root / "datasets/org/shards" / path).read_bytes()
    from train_pipeline.training.data_settings import DataConfig
    from train_pipeline.training.formats import read_dataset

    examples, report = read_dataset([folder], DataConfig().dataset_settings("billboards"), "Describe the image.")
    assert report.format == "parquet" and len(examples) == 6  # the snapshot in .resumable/ is not read twice

    proc = cli("datasets", "download", "billboards", "--registry", str(registry), "--data-dir", str(data), env=env)
    assert proc.returncode == 0 and "cached" in proc.stdout and "0 B transferred" in proc.stdout, proc.stdout

    # A given size is checked against what the Hub lists.
    line = one_line_error(cli("datasets", "download", "readme_only", "--registry", str(registry), "--data-dir", str(data),
                              env=env))
    assert "hf://datasets/org/shards/README.md" in line and "size 3" in line

    # --urls: a new dataset named on the command line, two sources of one repository.
    proc = cli("datasets", "download", "mine", "--registry", str(registry), "--data-dir", str(data), "--urls",
               f"hf://datasets/org/shards@main/{SHARDS[0]}", "hf://datasets/org/shards/README.md", env=env)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.relative_to(data / "downloads/mine").as_posix() for p in (data / "downloads/mine").rglob("*")
                  if p.is_file() and ".resumable" not in p.parts) == ["README.md", SHARDS[0]]


def test_registry_rules_for_hf_sources(tmp_path):
    from train_pipeline.config import ConfigError
    from train_pipeline.config.registry import load_registry

    cases = {
        "        mirrors: [https://mirror.example/x.parquet]\n": "mirrors: an hf:// source is fetched through the Hub API",
        "        name: x.parquet\n": "keep their paths in the repository",
        "        size: 10\n": "size/hash describe one file",
    }
    for extra, why in cases.items():
        registry = tmp_path / "r.yaml"
        registry.write_text(f"datasets:\n  - name: d\n    files:\n      - url: {SOURCE}\n{extra}")
        with pytest.raises(ConfigError) as info:
            load_registry(registry)
        assert why in str(info.value) and "\n" not in str(info.value)
    registry.write_text("datasets:\n  - name: d\n    files:\n      - url: https://host/a.parquet\n"
                        "        endpoint: https://hub.example\n")
    with pytest.raises(ConfigError, match="endpoint: only for hf:// sources"):
        load_registry(registry)
    registry.write_text("datasets:\n  - name: d\n    extract_to: d\n    files:\n      - url: hf://datasets/org/x/a.zip\n")
    from train_pipeline.config.registry import extract_target

    spec = load_registry(registry)["d"]
    assert extract_target(tmp_path, spec, spec.files[0]) is None  # hf:// sources are never extracted


# -- resume, corruption, offline, token ------------------------------------------------------------
@pytest.mark.slow
def test_killed_fetch_resumes_mid_file(shards_root, tmp_path):
    with HubServer(shards_root) as hub:
        commit = hub.repo("org/big", "dataset").commit
        out = tmp_path / "out"
        snap_file = hub_cache(out) / "datasets--org--big" / commit / BIG
        part = part_path(snap_file)
        hub.slow = 6_000_000.0
        proc = subprocess.Popen([sys.executable, "-m", "train_pipeline.cli", "fetch", f"hf://datasets/org/big/{BIG}",
                                 "-d", str(out), "-q"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "HF_ENDPOINT": hub.endpoint})
        deadline = time.monotonic() + 60
        try:
            while not (part.exists() and part.stat().st_size >= 6 << 20):
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the download never got half-way"
                time.sleep(0.02)
            had = part.stat().st_size
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL and not (out / BIG).exists()
        hub.slow = None
        mark = len(hub.settle())
        r = fetch_hf(f"hf://datasets/org/big/{BIG}", out, endpoint=hub.endpoint, progress=False)
        log = hub.settle()[mark:]
    assert r.status == "resumed" and (out / BIG).read_bytes() == (shards_root / "datasets/org/big" / BIG).read_bytes()
    size = (out / BIG).stat().st_size
    assert r.bytes_transferred <= size - had + (1 << 20)
    ranged = [x for x in log if x.path.endswith(Path(BIG).name) and x.status == 206]
    assert len(ranged) == 1 and int(ranged[0].range.split("=")[1].rstrip("-")) >= had - (1 << 20)
    assert hub_files_current(r)


def test_a_corrupted_byte_is_detected_in_transit_and_on_disk(shards_hub, shards_root, tmp_path):
    out = tmp_path / "out"
    shards_hub.corrupt_at = 100
    with pytest.raises(ResumableError) as info:
        fetch_hf(SOURCE, out, endpoint=shards_hub.endpoint, progress=False)
    assert "sha256" in str(info.value) or "hash" in str(info.value)
    assert not any((out / p).exists() for p in SHARDS)  # nothing unverified is ever published
    shards_hub.corrupt_at = None
    r = fetch_hf(SOURCE, out, endpoint=shards_hub.endpoint, progress=False)
    assert all((out / p).read_bytes() == (shards_root / "datasets/org/shards" / p).read_bytes() for p in SHARDS)

    # A byte flipped on disk (the published file is the snapshot's, linked): the next run notices
    # and fetches that file again.
    with open(out / SHARDS[0], "r+b") as fh:
        fh.seek(10)
        b = fh.read(1)
        fh.seek(10)
        fh.write(bytes([b[0] ^ 0xFF]))
    assert not hub_files_current(r)
    r = fetch_hf(SOURCE, out, endpoint=shards_hub.endpoint, progress=False)
    assert r.status == "downloaded" and r.bytes_transferred == (out / SHARDS[0]).stat().st_size
    assert (out / SHARDS[0]).read_bytes() == (shards_root / "datasets/org/shards" / SHARDS[0]).read_bytes()
    assert hub_files_current(r)


def test_offline_rerun_works_from_the_manifest(shards_hub, tmp_path):
    out = tmp_path / "out"
    first = cli("fetch", SOURCE, "-d", str(out), env={"HF_ENDPOINT": shards_hub.endpoint})
    assert first.returncode == 0, first.stderr
    for p in SHARDS:
        (out / p).unlink()  # the published files; the snapshot (and its manifest) stays
    dead = "http://127.0.0.1:9"  # nothing listens: offline must not ask
    proc = cli("fetch", SOURCE, "-d", str(out), env={"HF_ENDPOINT": dead, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert all((out / p).is_file() for p in SHARDS) and proc.stderr.count("cached") == 2
    line = one_line_error(cli("fetch", SOURCE, "-d", str(tmp_path / "never"), env={"HF_ENDPOINT": dead,
                                                                                   "HF_HUB_OFFLINE": "1"}))
    assert "offline" in line and "run once online" in line


def test_token_goes_to_the_hub_origin_only_and_is_never_printed(shards_root, tmp_path):
    with HubServer(shards_root, cdn=True, token="hf_good") as hub:
        source = "hf://datasets/org/secret/data/*.parquet"
        line = one_line_error(cli("fetch", source, "-d", str(tmp_path / "a"), env={"HF_ENDPOINT": hub.endpoint}))
        assert "not found" in line and "HF_TOKEN" in line
        mark = len(hub.settle())
        proc = cli("fetch", source, "-d", str(tmp_path / "b"), env={"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": "hf_good"})
        assert proc.returncode == 0, proc.stderr
        log = hub.settle()[mark:]
    assert "hf_good" not in proc.stderr + proc.stdout
    assert [r for r in log if r.server == "cdn"] and not [r for r in log if r.server == "cdn" and r.authorization]
    assert all(r.authorization for r in log if r.server == "hub")


def test_files_the_repository_dropped_are_removed_and_others_kept(shards_root, tmp_path):
    repos = tmp_path / "repos"
    shutil.copytree(shards_root / "datasets" / "org" / "shards", repos / "datasets" / "org" / "shards")
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "data" / "mine.parquet").write_bytes(b"user's own file")
    with HubServer(repos) as hub:
        r1 = fetch_hf(SOURCE, out, endpoint=hub.endpoint, progress=False)
        (repos / "datasets/org/shards" / SHARDS[1]).unlink()  # a new commit without the second shard
        r2 = fetch_hf(SOURCE, out, endpoint=hub.endpoint, progress=False)
    assert r2.commit != r1.commit and list(r2.paths) == [SHARDS[0]]
    assert (out / SHARDS[0]).is_file() and not (out / SHARDS[1]).exists()
    assert (out / "data" / "mine.parquet").read_bytes() == b"user's own file"


def test_snapshot_errors_name_the_source(shards_hub, tmp_path):
    with pytest.raises(SnapshotError, match=r"^hf://datasets/org/nothere: dataset 'org/nothere' not found"):
        fetch_hf("hf://datasets/org/nothere", tmp_path, endpoint=shards_hub.endpoint, progress=False)
    with pytest.raises(SnapshotError, match="revision 'v9' not found"):
        fetch_hf("hf://datasets/org/shards@v9", tmp_path, endpoint=shards_hub.endpoint, progress=False)


@pytest.mark.parametrize("where", ["no such host", "refused"])
def test_an_endpoint_that_is_not_there_fails_at_the_first_try(tmp_path, where):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    endpoint = "http://nonexistent.invalid" if where == "no such host" else f"http://127.0.0.1:{port}"
    proc = cli("-v", "fetch", "hf://datasets/org/shards/data", "-d", str(tmp_path / "out"),
               env={"HF_ENDPOINT": endpoint})
    assert proc.returncode != 0
    assert "retrying" not in proc.stderr  # one try: a wrong endpoint is not worth a second
    line = one_line_error(proc)
    assert endpoint in line and "HF_ENDPOINT" in line and "--endpoint" not in line
