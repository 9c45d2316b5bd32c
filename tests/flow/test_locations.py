"""Every step's folders are checked as a whole before anything runs: a location inside (or equal
to) a folder another step replaces or deletes in is refused with one line naming both settings,
symlinks included; legal layouts pass. The flow keeps what it did not create across a new archive
version."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ARCHIVE = "billboards.tar.gz"


def write_config(folder: Path, **overrides) -> Path:
    """A download-and-train config in ``folder`` (relative paths, resolved from ``folder``)."""
    data = {
        "model": {"repo_id": "Org/Model-2B", "endpoint": "http://127.0.0.1:9"},
        "datasets": [{"name": "ads", "files": [{"url": "http://127.0.0.1:9/ads.tar.gz"}], "extract_to": "ads"},
                     {"name": "signs", "files": [{"url": "http://127.0.0.1:9/signs.zip"}], "extract_to": "signs"}],
        "models_cache": "models_cache", "data_dir": "data", "results_dir": "results",
    }
    data.update(overrides)
    data = {k: v for k, v in data.items() if v is not None or k == "train"}
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def check(folder: Path, env: dict | None = None, **overrides) -> tuple[int, str]:
    """``flows/pipeline.py --check`` in ``folder``, as a user runs it: (exit code, stderr)."""
    from flows.pipeline import main

    path = write_config(folder, **overrides)
    old_cwd, old_env = os.getcwd(), dict(os.environ)
    os.environ.pop("TRAIN_PIPELINE_RESULT_STORAGE", None)
    os.environ.update(env or {})
    os.chdir(folder)
    try:
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["--check", "--config", str(path)])
        return code, err.getvalue()
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)


# (overrides, the two settings the one-line error must name)
REFUSED = {
    "results_dir inside an extraction target": (dict(results_dir="data/ads/results"),
                                                 ("results_dir", "datasets.0 (ads) extract_to")),
    "models_cache inside an extraction target": (dict(models_cache="data/signs/models"),
                                                  ("models_cache", "datasets.1 (signs) extract_to")),
    "result storage inside an extraction target": (dict(result_storage="data/ads/.prefect"),
                                                    ("result_storage", "datasets.0 (ads) extract_to")),
    "result storage is the extraction target": (dict(result_storage="data/ads"),
                                                ("result_storage", "datasets.0 (ads) extract_to")),
    "results_dir is an extraction target": (dict(results_dir="data/signs"),
                                            ("results_dir", "datasets.1 (signs) extract_to")),
    "data_dir inside the training output": (dict(data_dir="results/Model-2B-ads+signs/data"),  # trained on both
                                            ("data_dir", "training output")),
    "results_dir inside the model snapshot": (dict(results_dir="models_cache/Org--Model-2B/out"),
                                              ("results_dir", "snapshot of Org/Model-2B")),
    "training output is the extraction target": (dict(results_dir="data", datasets=[
        {"name": "ads", "files": [{"url": "http://127.0.0.1:9/ads.tar.gz"}], "extract_to": "Model-2B-ads"}]),
        ("training output", "datasets.0 (ads) extract_to")),
    "two datasets share a target": (dict(datasets=[
        {"name": "ads", "files": [{"url": "http://127.0.0.1:9/ads.tar.gz"}], "extract_to": "images"},
        {"name": "signs", "files": [{"url": "http://127.0.0.1:9/signs.zip"}], "extract_to": "images"}]),
        ("ads/ads.tar.gz", "signs/signs.zip")),
    "the sample's build folder holds the others": (dict(model=None, datasets=None, sample={"build_dir": "."}),
                                                    ("models_cache", "sample.build_dir")),
    "the sample's build folder inside results_dir's training output": (
        dict(model=None, datasets=None, sample={"build_dir": "results/tiny-qwen2-vl-outdoor_advertising_sample+billboard_parquet_sample/b"}),
        ("sample.build_dir", "training output")),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_overlapping_locations_are_refused_by_check(tmp_path, case):
    overrides, names = REFUSED[case]
    code, err = check(tmp_path, **overrides)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    for name in names:
        assert name in err, err
    assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()  # nothing was made


def test_the_result_storage_from_the_environment_is_checked_too(tmp_path):
    code, err = check(tmp_path, env={"TRAIN_PIPELINE_RESULT_STORAGE": str(tmp_path / "data" / "ads" / "r")})
    assert code == 2 and "$TRAIN_PIPELINE_RESULT_STORAGE" in err and "datasets.0 (ads) extract_to" in err


@pytest.mark.parametrize("link", ["extraction target into another's downloads", "results_dir onto a target",
                                  "models_cache inside a target"])
def test_symlinks_cannot_hide_an_overlap(tmp_path, link):
    (tmp_path / "data" / "downloads" / "signs").mkdir(parents=True)
    (tmp_path / "data" / "ads").mkdir()
    if link == "extraction target into another's downloads":
        (tmp_path / "data" / "lnk").symlink_to(tmp_path / "data" / "downloads" / "signs")  # a folder on the way
        overrides = dict(datasets=[
            {"name": "ads", "files": [{"url": "http://127.0.0.1:9/ads.tar.gz"}], "extract_to": "lnk/images"},
            {"name": "signs", "files": [{"url": "http://127.0.0.1:9/signs.zip"}], "extract_to": "signs"}])
        names = ("datasets.0 (ads) extract_to", "datasets.1 (signs) downloads folder")
    elif link == "results_dir onto a target":
        (tmp_path / "out").symlink_to(tmp_path / "data" / "ads")
        overrides, names = dict(results_dir="out"), ("results_dir", "datasets.0 (ads) extract_to")
    else:
        (tmp_path / "cache").symlink_to(tmp_path / "data" / "ads" / "cache")
        overrides, names = dict(models_cache="cache"), ("models_cache", "datasets.0 (ads) extract_to")
    code, err = check(tmp_path, **overrides)
    assert code == 2 and all(n in err for n in names), err


@pytest.mark.parametrize("overrides", [
    {},
    dict(results_dir="data", models_cache="data"),  # holders may share a folder: their contents do not overlap
    dict(data_dir="work", results_dir="work/results", models_cache="work/models"),  # holders inside holders
    dict(result_storage="block:s3-bucket/results"),  # not a folder here
    dict(model=None, datasets=None, sample={"build_dir": "build/sample"}),
], ids=["defaults", "one folder for all", "nested holders", "storage block", "sample"])
def test_legal_layouts_pass(tmp_path, overrides):
    code, err = check(tmp_path, **overrides)
    assert code == 0, err


def test_the_datasets_cli_checks_its_folders_with_symlinks_resolved(tmp_path):
    """`datasets download --data-dir` sees the same rule: here the target's folder links into the downloads."""
    (tmp_path / "data" / "downloads" / "ads").mkdir(parents=True)
    (tmp_path / "data" / "lnk").symlink_to(tmp_path / "data" / "downloads" / "ads")
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump({"datasets": [
        {"name": "ads", "files": [{"url": "http://127.0.0.1:9/ads.tar.gz"}], "extract_to": "lnk/ads"}]}))
    r = subprocess.run([sys.executable, "-m", "train_pipeline.cli", "datasets", "download", "ads", "--registry",
                        str(registry), "--data-dir", str(tmp_path / "data")], cwd=PROJECT_ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "ads extract_to" in r.stderr and "ads downloads folder" in r.stderr


def test_a_flow_run_with_an_overlapping_config_object_submits_nothing(tmp_path, dataset_config, served, run_pipeline):
    """The deployment path: a config passed as a parameter is checked in the flow before anything runs."""
    cfg = dataset_config(results_dir=str(tmp_path / "data" / "billboards" / "results"))
    state = run_pipeline(cfg)
    assert state.is_failed() and "lies inside" in state.message
    assert served.log == [] and not (tmp_path / "data").exists()


def _new_version(dataset_archive, folder: Path) -> tuple[bytes, str]:
    """The dataset archive with one more image: a new version of the same file."""
    from offline.sample import _pack
    from offline.sample_data import build_sample_dataset

    built = build_sample_dataset(folder / "billboards", n_images=7, seed=2)
    archive = folder / ARCHIVE
    _pack(Path(built), archive)
    data = archive.read_bytes()
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def test_foreign_files_survive_a_new_archive_version_in_the_flow(tmp_path, dataset_config, served, run_pipeline,
                                                                  dataset_archive):
    """A legal but crowded layout (data, results and models in one folder; a second dataset); the
    user's files in every folder a step writes in; a new version of the archive is extracted."""
    root = tmp_path / "shared"
    shutil.copy(dataset_archive.path, Path(served.root) / "other.tar.gz")
    other = {"name": "other", "files": [{"url": served.url("other.tar.gz")}], "extract_to": "other"}

    def config(size, digest):
        return dataset_config(data_dir=str(root), results_dir=str(root), models_cache=str(root), datasets=[
            {"name": "billboards", "files": [{"url": served.url(ARCHIVE), "size": size, "hash": digest}],
             "extract_to": "billboards"}, other])

    assert run_pipeline(config(dataset_archive.size, dataset_archive.hash)).is_completed()
    foreign = {
        root / "billboards" / "notes.txt": b"the user's notes\n",
        root / "billboards" / "billboards" / "my-extra.jsonl": b'{"x": 1}\n',
        root / "billboards" / "checkpoints" / "step-1" / "w.bin": os.urandom(4096),
        root / "downloads" / "billboards" / "README.md": b"where these came from\n",
        root / "other" / "mine.txt": b"other's neighbour\n",
        root / "keep.txt": b"top level\n",
    }
    for path, data in foreign.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    inodes = {p: p.stat().st_ino for p in foreign}

    data, digest = _new_version(dataset_archive, tmp_path / "v2")
    (Path(served.root) / ARCHIVE).write_bytes(data)
    state = run_pipeline(config(len(data), digest))
    assert state.is_completed(), state.message
    for path, content in foreign.items():
        assert path.read_bytes() == content and path.stat().st_ino == inodes[path], path
    lines = (root / "billboards" / "billboards" / "metadata.jsonl").read_text().splitlines()
    assert len(lines) == 7  # the new version's content


def test_a_registry_file_inside_an_extraction_target_is_refused(tmp_path):
    registry = tmp_path / "data" / "ads" / "registry.yaml"
    registry.parent.mkdir(parents=True)
    registry.write_text(yaml.safe_dump({"datasets": [
        {"name": "ads", "files": [{"url": "http://127.0.0.1:9/ads.tar.gz"}], "extract_to": "ads"}]}))
    code, err = check(tmp_path, registry=str(registry), datasets=["ads"])
    assert code == 2 and "registry" in err and "datasets.0 (ads) extract_to" in err, err


def test_an_extraction_target_that_is_a_symlink_is_refused_by_check(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ads").symlink_to(tmp_path / "elsewhere")
    code, err = check(tmp_path)
    assert code == 2 and "datasets.0 (ads) extract_to" in err and "is a symlink" in err, err


def test_a_hidden_extract_to_name_is_refused(tmp_path):
    code, err = check(tmp_path, datasets=[
        {"name": "ads", "files": [{"url": "http://127.0.0.1:9/ads.tar.gz"}], "extract_to": ".ads.extracting-backup"}])
    assert code == 2 and "datasets.0.extract_to" in err and "leading '.'" in err, err


def test_dotdot_after_a_symlink_means_what_the_system_makes_of_it(tmp_path):
    """data_dir 'link/../data' with link -> real/sub is real/data for every step (the check and
    the extraction alike), not the 'data' beside 'link' that a textual normalisation gives."""
    from resumable.extract import extract
    from train_pipeline.config import parse_config

    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real" / "sub")
    cfg = parse_config({"datasets": [{"name": "ads", "files": [{"url": "http://127.0.0.1:9/a.tar.gz"}]}],
                        "train": None, "data_dir": str(tmp_path / "link" / ".." / "data")})
    assert cfg.path(cfg.data_dir) == tmp_path / "real" / "data"
    import io
    import tarfile

    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as t:
        info = tarfile.TarInfo("x.txt")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    result = extract(archive, str(tmp_path / "link" / ".." / "out"), progress=False)
    assert result.target == tmp_path / "real" / "out" and (tmp_path / "real" / "out" / "x.txt").is_file()
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_datasets_cli_respects_the_other_datasets_folders(tmp_path):
    """`datasets download B` may not write into dataset A's extraction target (here through a
    symlinked downloads folder), A's files being unknown to the registry (custom) or not."""
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump({"datasets": [
        {"name": "ads", "files": [{"url": "http://127.0.0.1:9/ads.tar.gz"}], "extract_to": "ads"},
        {"name": "custom", "files": [], "extract_to": "custom"}]}))
    (tmp_path / "data" / "downloads").mkdir(parents=True)
    (tmp_path / "data" / "custom").mkdir()
    for link, into, other in (("lnk", "custom", "custom extract_to"), ("lnk2", "ads", "ads extract_to")):
        (tmp_path / "data" / into).mkdir(exist_ok=True)
        (tmp_path / "data" / "downloads" / link).symlink_to(tmp_path / "data" / into)
        r = subprocess.run([sys.executable, "-m", "train_pipeline.cli", "datasets", "download", link, "--urls",
                            "http://127.0.0.1:9/x.tar.gz", "--registry", str(registry), "--data-dir",
                            str(tmp_path / "data")], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert f"{link} downloads folder" in r.stderr and other in r.stderr, r.stderr
