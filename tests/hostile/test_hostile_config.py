"""Hostile pipeline configs: every value that is sure to fail (or do something absurd) at run time
is refused by validation, before any network, as one line that names the key and the fix.

Most cases run in-process through parse_config / load_config; a handful through the real
`python flows/pipeline.py --config F --check` (each start imports Prefect: ~2 s).
"""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resumable.errors import UsageError
from resumable.hub.snapshots import _check_args
from train_pipeline.config import PROJECT_ROOT, ConfigError, PipelineConfig, load_config, parse_config

SHA = "sha256:" + "ab" * 32
EMPTY_SHA = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
LONG = "n" * 256  # one byte over NAME_MAX


def _file(**over):
    return {"datasets": [{"name": "d", "extract_to": "d", "files": [{"url": "https://h.example/d.tar.gz", **over}]}],
            "train": None}


def _dataset(**over):
    return {"datasets": [{"name": "d", "extract_to": "d", "files": [{"url": "https://h.example/d.tar.gz"}], **over}],
            "train": None}


def _model(**over):
    return {"model": {"repo_id": "org/name", **over}, "train": None}


def _sample(**over):
    return {"sample": True, **over}


def _train(**over):
    return {"sample": True, "train": over}


def _runner(**over):
    return {"sample": True, "task_runner": {"type": "dask", **over}}


F = "datasets.0.files.0"
# (config, the key the message must name, a piece of the fix)
BAD = {
    # URLs (the engine's check_url): bad port, brackets, NUL, %00, no host
    "url bad port": (_file(url="http://h.example:99999/d.tar.gz"), f"{F}.url", "https://host[:port]/path"),
    "url bracket": (_file(url="http://[h.example/d.tar.gz"), f"{F}.url", "https://host[:port]/path"),
    "url NUL": (_file(url="https://h.example/d\x00.tar.gz"), f"{F}.url", "remove it"),
    "url %00": (_file(url="https://h.example/d%00.tar.gz"), f"{F}.url", "check the URL"),
    "mirror bad port": (_file(mirrors=["https://m.example:0x50/d.tar.gz"]), f"{F}.mirrors", "https://host[:port]/path"),
    # file names: from the URL or explicit
    "url names '..'": (_file(url="https://h.example/a/.."), f"{F}: url", "'name'"),
    "url names %2e%2e": (_file(url="https://h.example/a/%2e%2e"), f"{F}: url", "'name'"),
    "url name too long": (_file(url=f"https://h.example/{LONG}"), f"{F}: url", "'name'"),
    "url names the engine's record folder": (_file(url="https://h.example/.resumable"), f"{F}: url", "'name'"),
    "name with newline": (_file(name="d.tar.gz\n"), f"{F}.name", "letters, digits"),
    "name with NUL": (_file(name="d\x00.tar.gz"), f"{F}.name", "letters, digits"),
    "name over NAME_MAX": (_file(name=LONG), f"{F}.name", "shorten it"),
    # mirrors, size and hash that cannot work together
    "mirror is the url": (_file(mirrors=["https://h.example/d.tar.gz"]), f"{F}: mirrors.0", "remove it"),
    "mirror twice": (_file(mirrors=["https://m.example/d.tar.gz"] * 2), f"{F}: mirrors.1", "remove it"),
    "size 0, hash of bytes": (_file(size=0, hash=SHA), f"{F}: hash", "fix the size or the hash"),
    "size 5, hash of nothing": (_file(size=5, hash=EMPTY_SHA), f"{F}: hash", "fix the size or the hash"),
    "size over off_t": (_file(size=2**63), f"{F}.size", "less than or equal"),
    # datasets
    "dataset name with newline": (_dataset(name="d\n"), "datasets.0.name", "letters, digits"),
    "dataset name over NAME_MAX": (_dataset(name=LONG), "datasets.0.name", "shorten it"),
    "extract_to NUL": (_dataset(extract_to="x\x00"), "datasets.0.extract_to", "remove it"),
    "extract_to control char": (_dataset(extract_to="x\ty"), "datasets.0.extract_to", "remove it"),
    "extract_to over NAME_MAX": (_dataset(extract_to=f"a/{LONG}"), "datasets.0.extract_to", "shorten it"),
    "extract_to the downloads": (_dataset(extract_to="downloads/d"), "datasets.0.extract_to", "another folder"),
    # the model: the snapshot's own rules
    "revision ../../x": (_model(revision="../../x"), "model.revision", "branch, tag or 40-hex commit sha"),
    "revision leading /": (_model(revision="/main"), "model.revision", "branch, tag or 40-hex commit sha"),
    "revision .": (_model(revision="."), "model.revision", "branch, tag or 40-hex commit sha"),
    "revision space": (_model(revision="my branch"), "model.revision", "branch, tag or 40-hex commit sha"),
    "revision newline": (_model(revision="main\n"), "model.revision", "branch, tag or 40-hex commit sha"),
    "revision NUL": (_model(revision="ma\x00in"), "model.revision", "branch, tag or 40-hex commit sha"),
    "revision ~": (_model(revision="main~1"), "model.revision", "branch, tag or 40-hex commit sha"),
    "revision .lock": (_model(revision="v1.lock"), "model.revision", "branch, tag or 40-hex commit sha"),
    "revision @{": (_model(revision="main@{1}"), "model.revision", "branch, tag or 40-hex commit sha"),
    "revision over NAME_MAX": (_model(revision=LONG), "model.revision", "branch, tag or 40-hex commit sha"),
    "repo id with newline": (_model(repo_id="org/name\n"), "model.repo_id", "org/name"),
    "repo id with --": (_model(repo_id="org/na--me"), "model.repo_id", "Qwen/Qwen2-VL-2B-Instruct"),
    "repo id with ..": (_model(repo_id="org/na..me"), "model.repo_id", "Qwen/Qwen2-VL-2B-Instruct"),
    "repo id ending in -": (_model(repo_id="org/name-"), "model.repo_id", "Qwen/Qwen2-VL-2B-Instruct"),
    "repo id over 96": (_model(repo_id="org/" + "n" * 100), "model.repo_id", "Qwen/Qwen2-VL-2B-Instruct"),
    "endpoint bad port": (_model(endpoint="http://hub.example:99999"), "model.endpoint", "https://host[:port]/path"),
    "endpoint query": (_model(endpoint="https://hub.example/?x=1"), "model.endpoint", "https://host[:port][/path]"),
    "endpoint fragment": (_model(endpoint="https://hub.example/#x"), "model.endpoint", "https://host[:port][/path]"),
    "include not text": (_model(include=[1]), "model.include.0", "fix the value's type"),
    "include empty pattern": (_model(include=[""]), "model.include", "glob"),
    "exclude NUL": (_model(exclude=["a\x00"]), "model.exclude", "glob"),
    # paths the OS cannot create
    "models_cache NUL": (_sample(models_cache="cache\x00"), "models_cache", "remove it"),
    "data_dir NUL": (_sample(data_dir="da\x00ta"), "data_dir", "remove it"),
    "data_dir empty": (_sample(data_dir=""), "data_dir", "give a path"),
    "results_dir newline": (_sample(results_dir="res\nults"), "results_dir", "remove it"),
    "results_dir over NAME_MAX": (_sample(results_dir=f"./{LONG}"), "results_dir", "shorten it"),
    "data_dir over PATH_MAX": (_sample(data_dir="/".join(["d" * 200] * 21)), "data_dir", "shorter path"),
    "registry NUL": (_sample(registry="reg\x00.yaml"), "registry", "remove it"),
    "build_dir NUL": ({"sample": {"build_dir": "b\x00"}}, "sample.build_dir", "remove it"),
    "sample seed over torch's": ({"sample": {"seed": 2**64}}, "sample.seed", "less than or equal"),
    # result storage
    "result_storage block:": (_sample(result_storage="block:"), "result_storage", "block:TYPE/NAME"),
    "result_storage block without /": (_sample(result_storage="block:s3-bucket"), "result_storage", "block:TYPE/NAME"),
    "result_storage block a/b/c": (_sample(result_storage="block:s3/a/b"), "result_storage", "block:TYPE/NAME"),
    "result_storage block uppercase": (_sample(result_storage="block:S3_Bucket/x"), "result_storage", "block:TYPE/NAME"),
    "result_storage URL": (_sample(result_storage="s3://bucket/results"), "result_storage", "block:TYPE/NAME"),
    "result_storage NUL": (_sample(result_storage="res\x00"), "result_storage", "remove it"),
    # Dask scheduler addresses
    "address bad port": (_runner(address="tcp://sched.example:99999"), "task_runner.address", "tcp://host:8786"),
    "address no port": (_runner(address="tcp://sched.example"), "task_runner.address", "tcp://host:8786"),
    "address inproc": (_runner(address="inproc://1.2.3.4/1/1"), "task_runner.address", "tcp://host:8786"),
    "address path": (_runner(address="tcp://sched.example:8786/x"), "task_runner.address", "remove what follows"),
    "address bracket": (_runner(address="tcp://[::1:8786"), "task_runner.address", "tcp://host:8786"),
    # keys: an unknown one is named whatever it looks like, on one line
    "unknown key with capitals": (_sample(Data_Dir="x"), "Data_Dir", "unknown key"),
    "unknown key with a newline": (_sample(**{"data\ndir": "x"}), "'data\\ndir'", "unknown key"),
    # training numbers Trainer, numpy or peft refuse
    "epochs inf": (_train(num_train_epochs=float("inf")), "train.num_train_epochs", "write a number"),
    "weight decay inf": (_train(weight_decay=float("inf")), "train.weight_decay", "write a number"),
    "max_grad_norm nan": (_train(max_grad_norm=float("nan")), "train.max_grad_norm", "write a number"),
    "seed over numpy's": (_train(seed=2**32), "train.seed", "less than or equal to 4294967295"),
    "lora empty module": (_train(lora={"target_modules": [""]}), "train.lora.target_modules", "q_proj"),
    "lora dropout inf": (_train(lora={"dropout": float("inf")}), "train.lora.dropout", "write a number"),
}


@pytest.mark.parametrize("data, key, fix", BAD.values(), ids=BAD.keys())
def test_sure_to_fail_values_are_one_line_naming_the_key_and_the_fix(data, key, fix):
    with pytest.raises(ConfigError) as err:
        parse_config(copy.deepcopy(data), "my.yaml")
    msg = str(err.value)
    assert "\n" not in msg and "\r" not in msg and "\x00" not in msg, msg
    assert msg.startswith(f"my.yaml: {key}"), msg
    assert fix in msg, msg


GOOD = {
    "branch, tag, PR ref, sha": [_model(revision=r) for r in ("main", "v1.0", "refs/pr/1", "a" * 40, "feature/x-1")],
    "repo ids": [_model(repo_id=r) for r in ("Qwen/Qwen2-VL-2B-Instruct", "org/name.v2", "o/n_1")],
    "endpoint with a path prefix": [_model(endpoint="https://proxy.example/hf/")],
    "one include pattern as text": [_model(include="*.json", exclude=["*.bin"])],
    "paths": [_sample(data_dir="~/data", models_cache="/tmp/m c", results_dir=".", registry="r.yaml")],
    "block storage": [_sample(result_storage="block:s3-bucket/shared-results")],
    "folder storage": [_sample(result_storage="./results/.prefect-results")],
    "an empty file": [_file(size=0, hash=EMPTY_SHA)],
    "dask addresses": [_runner(address=a) for a in ("tcp://10.0.0.5:8786", "tls://[::1]:8786", "ws://s.example:80")],
    "finite training numbers": [_train(num_train_epochs=1e6, seed=2**32 - 1, weight_decay=0.1)],
}


@pytest.mark.parametrize("configs", GOOD.values(), ids=GOOD.keys())
def test_values_that_work_at_run_time_still_validate(configs):
    for data in configs:
        parse_config(copy.deepcopy(data), "ok.yaml")


def test_a_validated_config_survives_prefects_parameter_round_trip():
    # A deployment sends the config as JSON (every field, defaults included) and validates it again.
    cfg = parse_config({"model": {"repo_id": "org/name", "revision": "refs/pr/1", "endpoint": "https://hub.example/",
                                  "include": "*.json"},
                        "datasets": [{"name": "d", "extract_to": "d",
                                      "files": [{"url": "https://h.example/d.tar.gz", "size": 0, "hash": EMPTY_SHA,
                                                 "mirrors": ["https://m.example/d.tar.gz"]}]}],
                        "task_runner": {"type": "dask", "address": "tcp://s.example:8786"},
                        "result_storage": "block:s3-bucket/shared", "train": {"seed": 7}})
    assert PipelineConfig.model_validate(cfg.model_dump(mode="json")) == cfg


# -- what only the resolved datasets tell: load_config ----------------------------------------
def _write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


LAYOUT = {
    "two datasets extract to one folder": (
        "datasets:\n  - {name: d, extract_to: x, files: [{url: 'https://h.example/a.zip'}]}\n"
        "  - {name: e, extract_to: x, files: [{url: 'https://h.example/b.zip'}]}\ntrain: null\n",
        "datasets.1: e/b.zip", "its own extract_to"),
    "one dataset extracts inside another's folder": (
        "datasets:\n  - {name: d, extract_to: x, files: [{url: 'https://h.example/a.zip'}]}\n"
        "  - {name: e, extract_to: x/y, files: [{url: 'https://h.example/b.zip'}]}\ntrain: null\n",
        "datasets.1: e/b.zip", "its own extract_to"),
    "training without an archive": (
        "model: {repo_id: org/name}\ndatasets:\n  - {name: d, extract_to: d, files: [{url: 'https://h.example/a.txt'}]}\n",
        "datasets.0: training", "train: null"),
    "training without extract_to": (
        "model: {repo_id: org/name}\ndatasets:\n  - {name: d, files: [{url: 'https://h.example/a.tar.gz'}]}\n",
        "datasets.0: training", "set extract_to"),
}


@pytest.mark.parametrize("text, key, fix", LAYOUT.values(), ids=LAYOUT.keys())
def test_dataset_layouts_sure_to_fail_are_refused_by_load_config(tmp_path, text, key, fix):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: {key}") and fix in msg, msg


REGISTRY = {
    "url %00": ("url: 'https://h.example/a%00.zip'", "datasets.0: files.0.url", "check the URL"),
    "mirror is the url": ("url: 'https://h.example/a.zip', mirrors: ['https://h.example/a.zip']",
                          "datasets.0: files.0: mirrors.0", "remove it"),
    "name with newline": ("url: 'https://h.example/a.zip', name: \"a.zip\\n\"", "datasets.0: files.0.name", "letters"),
    "size and hash of nothing": (f"url: 'https://h.example/a.zip', size: 3, hash: '{EMPTY_SHA}'",
                                 "datasets.0: files.0: hash", "fix the size or the hash"),
}


@pytest.mark.parametrize("file, key, fix", REGISTRY.values(), ids=REGISTRY.keys())
def test_registry_entries_follow_the_same_rules(tmp_path, file, key, fix):
    registry = _write(tmp_path, f"datasets:\n  - name: reg\n    extract_to: reg\n    files:\n      - {{{file}}}\n", "reg.yaml")
    path = _write(tmp_path, f"datasets: [reg]\nregistry: {registry}\ntrain: null\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{registry}: {key}") and fix in msg, msg


# -- the real command: a handful -----------------------------------------------------------------
CHECK = {
    "bad port": ("datasets:\n  - {name: d, extract_to: d, files: [{url: 'http://h.example:99999/d.zip'}]}\ntrain: null\n",
                 "datasets.0.files.0.url"),
    "NUL in a URL": ("datasets:\n  - {name: d, extract_to: d, files: [{url: \"http://h.example/d\\0.zip\"}]}\ntrain: null\n",
                     "datasets.0.files.0.url"),
    "%00 in a URL": ("datasets:\n  - {name: d, extract_to: d, files: [{url: 'http://h.example/d%00.zip'}]}\ntrain: null\n",
                     "datasets.0.files.0.url"),
    "revision ../../x": ("model: {repo_id: org/name, revision: ../../x}\ntrain: null\n", "model.revision"),
    "endpoint with a bad port": ("model: {repo_id: org/name, endpoint: 'http://hub.example:99999'}\ntrain: null\n",
                                 "model.endpoint"),
    "result_storage block:": ("sample: true\nresult_storage: 'block:'\n", "result_storage"),
}


@pytest.mark.slow
@pytest.mark.parametrize("text, key", CHECK.values(), ids=CHECK.keys())
def test_check_refuses_with_one_line_and_exit_2(tmp_path, text, key):
    path = _write(tmp_path, text)
    r = subprocess.run([sys.executable, str(PROJECT_ROOT / "flows" / "pipeline.py"), "--config", str(path), "--check"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: {key}: "), r.stderr
    assert "Traceback" not in r.stderr and "OK" not in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]  # touched nothing


# -- properties -----------------------------------------------------------------------------------
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40),
                     st.sampled_from(["", ".", "..", "/", "block:", "main", "org/name", "https://h.example/a.zip",
                                      "tcp://h.example:8786", "-1", "1e400", "\x00", "%00", "a" * 300]))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=12), inner, max_size=3)),
                       max_leaves=8)
BASES = [
    {"sample": True},
    {"model": {"repo_id": "org/name"}, "datasets": [{"name": "d", "extract_to": "d",
                                                     "files": [{"url": "https://h.example/d.tar.gz"}]}]},
]
KEY_PATHS = [
    ("sample",), ("model",), ("datasets",), ("models_cache",), ("data_dir",), ("results_dir",), ("result_storage",),
    ("registry",), ("max_workers",), ("connections",), ("retries",), ("task_retries",), ("task_retry_delay",),
    ("train",), ("task_runner",), ("task_runner", "address"), ("task_runner", "type"), ("task_runner", "n_workers"),
    ("model", "repo_id"), ("model", "revision"), ("model", "include"), ("model", "exclude"), ("model", "endpoint"),
    ("datasets", 0, "name"), ("datasets", 0, "extract_to"), ("datasets", 0, "files"), ("datasets", 0, "description"),
    ("datasets", 0, "files", 0, "url"), ("datasets", 0, "files", 0, "mirrors"), ("datasets", 0, "files", 0, "size"),
    ("datasets", 0, "files", 0, "hash"), ("datasets", 0, "files", 0, "name"),
    ("train", "num_train_epochs"), ("train", "seed"), ("train", "lora"), ("train", "max_pixels"), ("train", "bf16"),
]


def _assign(base: dict, path: tuple, value) -> dict:
    data = copy.deepcopy(base)
    node = data
    for step in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(step, {} if not isinstance(step, int) else [])
            if node is None:
                return data
        elif isinstance(node, list) and isinstance(step, int) and step < len(node):
            node = node[step]
        else:
            return data
    if isinstance(node, dict):
        node[path[-1]] = value
    elif isinstance(node, list) and isinstance(path[-1], int) and path[-1] < len(node):
        node[path[-1]] = value
    return data


def _outcome(data) -> str:
    try:
        parse_config(data, "p.yaml")
    except ConfigError as exc:
        msg = str(exc)
        assert msg.startswith("p.yaml: ") and "\n" not in msg and "\r" not in msg, msg
        return "refused"
    return "valid"


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(BASES), path=st.sampled_from(KEY_PATHS), value=_values)
def test_any_value_anywhere_validates_or_is_one_config_error(base, path, value):
    _outcome(_assign(base, path, value))


@pytest.mark.slow
@settings(max_examples=200, deadline=None, database=None)
@given(data=st.dictionaries(st.sampled_from(sorted(PipelineConfig.model_fields)) | st.text(max_size=8), _values,
                            max_size=5))
def test_any_mapping_validates_or_is_one_config_error(data):
    _outcome(data)


_texts = st.text(st.characters(codec="utf-8"), max_size=60) | st.text(max_size=300)


@settings(max_examples=300, deadline=None, database=None)
@given(value=_texts, path=st.sampled_from([("datasets", 0, "files", 0, "url"), ("datasets", 0, "files", 0, "name"),
                                           ("datasets", 0, "name"), ("datasets", 0, "extract_to"),
                                           ("model", "revision"), ("model", "repo_id"), ("model", "endpoint"),
                                           ("data_dir",), ("result_storage",), ("task_runner", "address")]))
def test_any_text_in_a_url_revision_name_or_path_validates_or_is_one_config_error(value, path):
    base = BASES[1] if path[0] in ("datasets", "model") else {"sample": True, "task_runner": {"type": "dask"}}
    _outcome(_assign({**base, "train": None} if path[0] in ("datasets", "model") else base, path, value))


@settings(max_examples=300, deadline=None, database=None)
@given(revision=_texts)
def test_config_and_snapshot_share_one_revision_rule(revision):
    # `--check` accepts a revision exactly when snapshot() would: both use resumable.hub.snapshots.check_revision.
    config_ok = _outcome(_model(revision=revision)) == "valid"
    try:
        _check_args("org/name", revision, "model", 1)
        snapshot_ok = True
    except UsageError as exc:
        assert "\n" not in str(exc)
        snapshot_ok = False
    assert config_ok == snapshot_ok, revision


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from("/.a\\b%\0 é"), max_size=24) | st.text(max_size=24))
def test_a_urls_file_name_is_its_paths_last_segment_as_pathlib_reads_it(path):
    from pathlib import PurePosixPath

    from train_pipeline.config.schema import last_segment

    assert last_segment(path) == PurePosixPath(path).name


def test_many_files_with_one_name_are_refused_quickly_naming_the_name():
    """The duplicate check counts names once each (it was quadratic in the files), and its message is not hidden
    behind the union's other branch ("datasets.0: Input should be a valid string")."""
    files = [{"url": f"https://h.example/{i}/data.bin"} for i in range(20_000)]
    with pytest.raises(ConfigError) as err:
        parse_config({"datasets": [{"name": "d", "extract_to": "d", "files": files}], "train": None})
    assert str(err.value) == ("config: datasets.0: two files would both be saved as 'data.bin'; "
                              "give one of them a distinct 'name'")


def test_a_huge_value_of_the_wrong_type_is_shown_cut_short():
    with pytest.raises(ConfigError, match="files: expected a list") as err:
        parse_config({"datasets": [{"name": "d", "files": "x" * 100_000}], "train": None})
    assert len(str(err.value)) < 300 and "\n" not in str(err.value)


def test_a_dataset_that_is_neither_a_name_nor_a_mapping_is_told_as_a_name():
    with pytest.raises(ConfigError) as err:
        parse_config({"datasets": [123], "train": None})
    assert str(err.value) == "config: datasets.0: Input should be a valid string (got 123); fix the value's type"
