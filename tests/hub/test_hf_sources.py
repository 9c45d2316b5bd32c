"""hf:// sources against the Hub look-alike serving a dataset repository of parquet shards: the
fetch CLI, datasets download (registry and --urls), resume after SIGKILL, corruption, offline
re-runs, where the token goes, and the real huggingface_hub client's view of the same repository."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
@pytest.mark.slow
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
    from hub_faults import FaultyHub

    with FaultyHub(shards_root) as hub:
        commit = hub.repo("org/big", "dataset").commit
        out = tmp_path / "out"
        snap_file = hub_cache(out) / "datasets--org--big" / commit / BIG
        part = part_path(snap_file)
        hub.hold(Path(BIG).name, 6 << 20)  # the body stops half-way until the kill: certainly mid-file
        proc = subprocess.Popen([sys.executable, "-m", "train_pipeline.cli", "fetch", f"hf://datasets/org/big/{BIG}",
                                 "-d", str(out), "-q"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "HF_ENDPOINT": hub.endpoint})
        deadline = time.monotonic() + 60
        try:
            assert hub.held.wait(60), "the download never got half-way"
            while not (part.exists() and part.stat().st_size >= 6 << 20):  # what the server sent is on disk
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the bytes sent never reached the disk"
                time.sleep(0.02)
            had = part.stat().st_size
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            hub.release()
        assert proc.returncode == -signal.SIGKILL and not (out / BIG).exists()
        mark = len(hub.settle())
        r = fetch_hf(f"hf://datasets/org/big/{BIG}", out, endpoint=hub.endpoint, progress=False)
        log = hub.settle()[mark:]
    assert r.status == "resumed" and (out / BIG).read_bytes() == (shards_root / "datasets/org/big" / BIG).read_bytes()
    size = (out / BIG).stat().st_size
    assert r.bytes_transferred <= size - had + (1 << 20)
    ranged = [x for x in log if x.path.endswith(Path(BIG).name) and x.status == 206]
    assert len(ranged) == 1 and int(ranged[0].range.split("=")[1].rstrip("-")) >= had - (1 << 20)
    assert hub_files_current(r)


@pytest.mark.slow
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

    # A byte changed on disk (the published file is the snapshot's, linked): the next run notices.
    # Changed since it was published, the file is no longer the source's to replace: one line names
    # it, and nothing is fetched; once it is moved away, the file is fetched again.
    with open(out / SHARDS[0], "r+b") as fh:
        fh.seek(10)
        b = fh.read(1)
        fh.seek(10)
        fh.write(bytes([b[0] ^ 0xFF]))
    assert not hub_files_current(r)
    mark = len(shards_hub.settle())
    with pytest.raises(ResumableError, match=re.escape(f"{out / SHARDS[0]} is in the way of {SOURCE}") + ".*move it away"):
        fetch_hf(SOURCE, out, endpoint=shards_hub.endpoint, progress=False)
    assert not [x for x in shards_hub.settle()[mark:] if "/resolve/" in x.path]
    edited = (out / SHARDS[0]).read_bytes()
    (out / SHARDS[0]).unlink()
    r = fetch_hf(SOURCE, out, endpoint=shards_hub.endpoint, progress=False)
    assert edited != (out / SHARDS[0]).read_bytes()
    assert r.status == "downloaded" and r.bytes_transferred == (out / SHARDS[0]).stat().st_size
    assert (out / SHARDS[0]).read_bytes() == (shards_root / "datasets/org/shards" / SHARDS[0]).read_bytes()
    assert hub_files_current(r)


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# -- a path in the folder belongs to one source (the hostile tester's findings) ---------------------
OTHER = "hf://datasets/org/other/data/*.parquet"


@pytest.fixture
def two_repos(shards_root, tmp_path):
    """datasets/org/shards and datasets/org/other: both have data/train-00000-of-00002.parquet (other bytes)."""
    repos = tmp_path / "repos"
    shutil.copytree(shards_root / "datasets" / "org" / "shards", repos / "datasets" / "org" / "shards")
    make_shards(repos / "datasets" / "org" / "other", shards=2, rows=4)
    with HubServer(repos) as hub:
        yield hub, repos


def published_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if ".resumable" not in p.parts
                  and p.is_file())


@pytest.mark.slow
def test_two_hf_sources_of_one_path_are_refused_before_any_transfer(two_repos, tmp_path):
    hub, repos = two_repos
    env = {"HF_ENDPOINT": hub.endpoint}
    out = tmp_path / "out"
    mark = len(hub.settle())
    line = one_line_error(cli("fetch", SOURCE, OTHER, "-d", str(out), env=env))
    assert SOURCE in line and OTHER in line and str(out / SHARDS[0]) in line and "belongs to one source" in line
    assert not [r for r in hub.settle()[mark:] if "/resolve/" in r.path]  # refused before any transfer
    assert published_files(out) == []

    # One after the other: the second source stops at the first one's files, which stay.
    assert cli("fetch", SOURCE, "-d", str(out), env=env).returncode == 0
    mark = len(hub.settle())
    line = one_line_error(cli("fetch", OTHER, "-d", str(out), env=env))
    assert OTHER in line and SOURCE in line and str(out / SHARDS[0]) in line
    assert not [r for r in hub.settle()[mark:] if "/resolve/" in r.path]
    for path in SHARDS:
        assert (out / path).read_bytes() == (repos / "datasets/org/shards" / path).read_bytes()
    with pytest.raises(ResumableError, match="belongs to one source"):  # the API checks again under the lock
        fetch_hf(OTHER, out, endpoint=hub.endpoint, progress=False)

    # A deleted file's claim lapses: the other source may take the path then (and the first one stops).
    for path in SHARDS:
        (out / path).unlink()
    fetch_hf(OTHER, out, endpoint=hub.endpoint, progress=False)
    assert (out / SHARDS[0]).read_bytes() == (repos / "datasets/org/other" / SHARDS[0]).read_bytes()
    with pytest.raises(ResumableError, match="belongs to one source"):
        fetch_hf(SOURCE, out, endpoint=hub.endpoint, progress=False)


def test_a_registry_entry_with_two_hf_sources_of_one_path_is_refused(two_repos, tmp_path):
    hub, _ = two_repos
    registry = tmp_path / "registry.yaml"
    registry.write_text(f"datasets:\n  - name: both\n    files:\n      - url: '{SOURCE}'\n      - url: '{OTHER}'\n")
    mark = len(hub.settle())
    line = one_line_error(cli("datasets", "download", "both", "--registry", str(registry), "--data-dir",
                              str(tmp_path / "data"), env={"HF_ENDPOINT": hub.endpoint}))
    assert SOURCE in line and OTHER in line and SHARDS[0] in line and str(registry) in line
    assert not [r for r in hub.settle()[mark:] if "/resolve/" in r.path]


@pytest.mark.slow
def test_an_http_file_named_like_an_hf_path_is_refused(two_repos, tmp_path):
    hub, repos = two_repos
    env = {"HF_ENDPOINT": hub.endpoint}
    readme_url = f"{hub.endpoint}/datasets/org/shards/resolve/main/README.md"
    whole = "hf://datasets/org/shards"  # README.md and data/...
    out = tmp_path / "out"
    line = one_line_error(cli("fetch", readme_url, whole, "-d", str(out), env=env))
    assert whole in line and "README.md" in line and "belongs to one source" in line
    assert published_files(out) == []

    # The hf source first: a URL named like one of its files may not replace it.
    assert cli("fetch", whole, "-d", str(out), env=env).returncode == 0
    line = one_line_error(cli("fetch", readme_url, "-d", str(out), env=env))
    assert whole in line and str(out / "README.md") in line
    # The URL first: its file is in the hf source's way.
    other = tmp_path / "other"
    assert cli("fetch", readme_url, "-d", str(other), env=env).returncode == 0
    line = one_line_error(cli("fetch", whole, "-d", str(other), env=env))
    assert f"{other / 'README.md'} is in the way of {whole}" in line


@pytest.mark.slow
def test_a_symlink_between_the_folder_and_a_file_is_never_written_through(shards_hub, tmp_path):
    env = {"HF_ENDPOINT": shards_hub.endpoint}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    d3 = tmp_path / "d3"
    d3.mkdir()
    (d3 / "data").symlink_to(elsewhere)
    line = one_line_error(cli("fetch", SOURCE, "-d", str(d3), env=env))
    assert f"{d3 / 'data'} is a symlink" in line and SOURCE in line
    assert list(elsewhere.iterdir()) == []

    for link in (".resumable/hf", ".resumable/hf/datasets--org--shards", ".resumable"):
        d = tmp_path / link.replace("/", "_")
        (d / link).parent.mkdir(parents=True, exist_ok=True)
        (d / link).symlink_to(elsewhere)
        line = one_line_error(cli("fetch", SOURCE, "-d", str(d), env=env))
        assert str(d / link) in line and "symlink" in line, line
        assert list(elsewhere.iterdir()) == []  # no snapshot, published.json or lock written there

    # A symlinked folder inside an existing snapshot is refused too.
    d4 = tmp_path / "d4"
    r = fetch_hf(SOURCE, d4, endpoint=shards_hub.endpoint, progress=False)
    shutil.rmtree(r.snapshot / "data")
    (r.snapshot / "data").symlink_to(elsewhere)
    with pytest.raises(ResumableError, match=re.escape(f"{r.snapshot / 'data'} is a symlink")):
        fetch_hf(SOURCE, d4, endpoint=shards_hub.endpoint, progress=False)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.slow
def test_a_file_of_yours_at_a_published_path_is_never_replaced(shards_hub, tmp_path):
    env = {"HF_ENDPOINT": shards_hub.endpoint}
    d2 = tmp_path / "d2"
    (d2 / "data").mkdir(parents=True)
    (d2 / SHARDS[0]).write_text("notes\n")
    mark = len(shards_hub.settle())
    line = one_line_error(cli("fetch", SOURCE, "-d", str(d2), env=env))
    assert f"{d2 / SHARDS[0]} is in the way of {SOURCE}" in line and "move it away" in line
    assert (d2 / SHARDS[0]).read_text() == "notes\n" and not (d2 / SHARDS[1]).exists()  # nothing published
    assert not [r for r in shards_hub.settle()[mark:] if "/resolve/" in r.path]

    data = tmp_path / "data"
    (data / "downloads" / "custom" / "data").mkdir(parents=True)
    (data / "downloads" / "custom" / SHARDS[1]).write_text("mine\n")
    line = one_line_error(cli("datasets", "download", "custom", "--data-dir", str(data), "--urls", SOURCE, env=env))
    assert f"{data / 'downloads/custom' / SHARDS[1]} is in the way of {SOURCE}" in line
    assert "move it away" in line and (data / "downloads" / "custom" / SHARDS[1]).read_text() == "mine\n"

    # A file this source published and you then replaced (another inode) is yours too.
    d5 = tmp_path / "d5"
    fetch_hf(SOURCE, d5, endpoint=shards_hub.endpoint, progress=False)
    (d5 / SHARDS[0]).unlink()
    (d5 / SHARDS[0]).write_text("replaced\n")
    with pytest.raises(ResumableError, match="is in the way"):
        fetch_hf(SOURCE, d5, endpoint=shards_hub.endpoint, progress=False)
    assert (d5 / SHARDS[0]).read_text() == "replaced\n"


def test_a_path_that_changes_between_file_and_folder(tmp_path):
    repos = tmp_path / "repos"
    repo = repos / "datasets" / "org" / "flip"
    repo.mkdir(parents=True)
    (repo / "x").write_text("x is a file\n")
    out = tmp_path / "out"
    source = "hf://datasets/org/flip"
    with HubServer(repos) as hub:
        fetch_hf(source, out, endpoint=hub.endpoint, progress=False)
        assert (out / "x").read_text() == "x is a file\n"
        (repo / "x").unlink()
        (repo / "x").mkdir()
        (repo / "x" / "y").write_text("now a folder\n")
        fetch_hf(source, out, endpoint=hub.endpoint, progress=False)  # commit 2: x/y
        assert (out / "x" / "y").read_text() == "now a folder\n"
        shutil.rmtree(repo / "x")
        (repo / "x").write_text("a file again\n")
        fetch_hf(source, out, endpoint=hub.endpoint, progress=False)  # commit 3: x
        assert (out / "x").read_text() == "a file again\n"

        # Your file where the source's folder stood: named, kept.
        (repo / "x").unlink()
        (repo / "x").mkdir()
        (repo / "x" / "y").write_text("folder again\n")
        fetch_hf(source, out, endpoint=hub.endpoint, progress=False)
        (out / "x" / "notes.txt").write_text("mine\n")
        shutil.rmtree(repo / "x")
        (repo / "x").write_text("file\n")
        with pytest.raises(ResumableError, match=re.escape(f"{out / 'x' / 'notes.txt'} is in the way")):
            fetch_hf(source, out, endpoint=hub.endpoint, progress=False)
        assert (out / "x" / "notes.txt").read_text() == "mine\n" and (out / "x" / "y").is_file()
        # ... and your file where the source needs a folder.
        (out / "x" / "notes.txt").unlink()
        fetch_hf(source, out, endpoint=hub.endpoint, progress=False)
        (out / "x").unlink()
        (out / "x").write_text("my own x\n")
        (repo / "x").unlink()
        (repo / "x").mkdir()
        (repo / "x" / "y").write_text("folder\n")
        with pytest.raises(ResumableError, match=re.escape(f"{out / 'x'} is in the way")):
            fetch_hf(source, out, endpoint=hub.endpoint, progress=False)
        assert (out / "x").read_text() == "my own x\n"


def test_an_edited_published_file_is_kept_when_the_repository_drops_it(shards_root, tmp_path):
    repos = tmp_path / "repos"
    shutil.copytree(shards_root / "datasets" / "org" / "shards", repos / "datasets" / "org" / "shards")
    out = tmp_path / "out"
    with HubServer(repos) as hub:
        fetch_hf(SOURCE, out, endpoint=hub.endpoint, progress=False)
        # Edited in place, same size, mtime put back: only the ctime (and the bytes) tell.
        st = os.stat(out / SHARDS[1])
        with open(out / SHARDS[1], "r+b") as fh:
            fh.write(b"EDIT")
        os.utime(out / SHARDS[1], ns=(st.st_atime_ns, st.st_mtime_ns))
        edited = (out / SHARDS[1]).read_bytes()
        # Unchanged, but its ctime moved (a link made and removed): still the source's to remove.
        os.link(out / SHARDS[0], tmp_path / "extra-link")
        os.unlink(tmp_path / "extra-link")
        (repos / "datasets/org/shards" / SHARDS[1]).unlink()
        (repos / "datasets/org/shards" / SHARDS[0]).unlink()
        (repos / "datasets/org/shards/data/train-new.parquet").write_bytes(b"PAR1 new shard PAR1")
        r = fetch_hf(SOURCE, out, endpoint=hub.endpoint, progress=False)
    assert list(r.paths) == ["data/train-new.parquet"]
    assert (out / SHARDS[1]).read_bytes() == edited  # yours now: kept
    assert not (out / SHARDS[0]).exists()  # the source's, unchanged: removed


@pytest.mark.slow
def test_a_file_failing_the_given_size_or_hash_is_never_published(shards_hub, shards_root, tmp_path):
    from resumable.hub.sources import published_record

    env = {"HF_ENDPOINT": shards_hub.endpoint}
    one = f"hf://datasets/org/shards/{SHARDS[0]}"
    size = (shards_root / "datasets/org/shards" / SHARDS[0]).stat().st_size
    o3 = tmp_path / "o3"
    mark = len(shards_hub.settle())
    line = one_line_error(cli("fetch", one, "-d", str(o3), "--size", str(size - 1), env=env))
    assert one in line and f"size {size - 1}" in line and "fix or remove size/hash" in line
    assert not [r for r in shards_hub.settle()[mark:] if "/resolve/" in r.path]  # the listing says it already
    assert published_files(o3) == [] and published_record(o3) == {}

    md5 = "md5:" + "0" * 32  # not in the Hub's listing: checked on the fetched file, before publishing
    line = one_line_error(cli("fetch", one, "-d", str(o3), "--hash", md5, env=env))
    assert one in line and f"hash {md5}" in line
    assert published_files(o3) == [] and published_record(o3) == {}
    assert cli("fetch", one, "-d", str(o3), "--size", str(size), env=env).returncode == 0
    assert published_files(o3) == [SHARDS[0]]


def test_redaction_never_mangles_an_hf_source(shards_hub, tmp_path):
    from resumable.redaction import redact, redact_text

    source = "hf://datasets/org/shards/what?.txt"
    assert redact(source) == source and redact_text(f"x {source}: y") == f"x {source}: y"
    assert redact("hf://user:secret@org/name") == "hf://org/name"
    line = one_line_error(cli("fetch", source, "-d", str(tmp_path), env={"HF_ENDPOINT": shards_hub.endpoint}))
    assert source in line


@pytest.mark.slow
def test_a_revision_after_the_path_gets_a_hint(shards_hub, tmp_path):
    line = one_line_error(cli("fetch", "hf://datasets/org/shards/data/*.parquet@main", "-d", str(tmp_path),
                              env={"HF_ENDPOINT": shards_hub.endpoint}))
    assert "goes right after the repository name: hf://datasets/org/shards@main/data/*.parquet" in line


@pytest.mark.slow
def test_hints_name_what_each_command_has(shards_hub, tmp_path):
    dead = "http://127.0.0.1:9"
    line = one_line_error(cli("fetch", SOURCE, "-d", str(tmp_path / "a"), env={"HF_ENDPOINT": dead,
                                                                              "HF_HUB_OFFLINE": "1"}))
    assert "HF_HUB_OFFLINE" in line and "--offline" not in line
    for token in ("hf_go od", "hf_good\x01", "hf_go\nod"):  # huggingface_hub would drop the inner newline
        env = {"HF_ENDPOINT": shards_hub.endpoint, "HF_TOKEN": token}
        for args in (("fetch", SOURCE, "-d", str(tmp_path / "b")),
                     ("datasets", "download", "custom", "--data-dir", str(tmp_path / "data"), "--urls", SOURCE)):
            line = one_line_error(cli(*args, env=env))
            assert "HF_TOKEN: the token contains spaces, control or non-ASCII characters" in line, line
            assert "--urls" not in line and token not in line and "rejected" not in line
    # A file's last newline is harmless (huggingface_hub drops it): the token works.
    proc = cli("fetch", "hf://datasets/org/secret/data/*.parquet", "-d", str(tmp_path / "c"),
               env={"HF_ENDPOINT": shards_hub.endpoint, "HF_TOKEN": "hf_good\n"})
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_output_ending_in_a_slash_is_refused(shards_hub, tmp_path):
    env = {"HF_ENDPOINT": shards_hub.endpoint}
    for url in (f"hf://datasets/org/shards/{SHARDS[0]}", f"{shards_hub.endpoint}/datasets/org/shards/resolve/main/README.md"):
        for suffix in ("/", "/.", "/.."):
            target = str(tmp_path / "some" / "new") + suffix
            line = one_line_error(cli("fetch", url, "-o", target, env=env))
            assert f"-o {target}: ends with" in line and "-d" in line
            assert not (tmp_path / "some").exists()
    with pytest.raises(ResumableError, match="ends with '/'"):
        fetch_hf(f"hf://datasets/org/shards/{SHARDS[0]}", output=str(tmp_path / "x") + "/",
                 endpoint=shards_hub.endpoint, progress=False)


def _tree(paths: list[str]) -> list[str]:
    """A repository's file paths: none is a folder on another's way (git has no such tree)."""
    kept: list[str] = []
    for p in sorted(set(paths), key=len):
        if not any(p.startswith(k + "/") or k.startswith(p + "/") for k in kept):
            kept.append(p)
    return kept


_REL = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map("/".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(_REL, max_size=6), st.lists(_REL, max_size=6), st.lists(st.sampled_from(["a", "b", "d"]), max_size=2))
def test_find_clash_finds_exactly_the_paths_two_sources_share(mine, theirs, http_names):
    from resumable.hub.common import RemoteFile
    from resumable.hub.sources import HubPlan, find_clash
    from resumable.hub.uri import parse

    folder = Path("/never/created")
    mine, theirs = _tree(mine), _tree(theirs)

    def plan(source: str, rels: list[str]) -> HubPlan:
        uri = parse(source)
        return HubPlan(uri, folder, None, str(uri), None, [(RemoteFile(r, 1, None, "0" * 40), folder / r) for r in rels], {})

    def collide(x: str, y: str) -> bool:
        return x == y or x.startswith(y + "/") or y.startswith(x + "/")

    others = {n: f"http://h/{n}" for n in http_names}
    expected = any(collide(x, y) for x in mine for y in [*theirs, *others]) or \
        any(collide(x, y) for x in theirs for y in others)
    message = find_clash([plan("hf://datasets/o/mine", mine), plan("hf://datasets/o/theirs", theirs)], others)
    assert (message is not None) == expected
    if message is not None:
        assert "belongs to one source" in message and "\n" not in message
    assert find_clash([plan("hf://datasets/o/mine", mine), plan("hf://datasets/o/mine", mine)]) is None  # one source


def test_two_selections_of_one_repository_at_one_commit_share_its_files(shards_hub, tmp_path):
    out = tmp_path / "out"
    env = {"HF_ENDPOINT": shards_hub.endpoint}
    one = f"hf://datasets/org/shards/{SHARDS[0]}"
    proc = cli("fetch", SOURCE, one, "-d", str(out), env=env)  # the very same file of one snapshot: no clash
    assert proc.returncode == 0, proc.stderr
    # A glob edited in a config: the new one takes over the old one's files, nothing is rewritten.
    inode = (out / SHARDS[0]).stat().st_ino
    r = fetch_hf("hf://datasets/org/shards/data/train-*.parquet", out, endpoint=shards_hub.endpoint, progress=False)
    assert list(r.paths) == SHARDS and (out / SHARDS[0]).stat().st_ino == inode and hub_files_current(r)
