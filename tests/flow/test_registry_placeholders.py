"""The shipped registry holds real sources or entries the user fills in, never hosts that do not
exist (issue 14, point 4); an entry without a source is one line saying what to set and in which
file, at `--check` of a config that selects it, in `datasets list` and at `datasets download`."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import yaml

from train_pipeline.config import PROJECT_ROOT, ConfigError, load_config
from train_pipeline.config.registry import load_registry

REGISTRY = PROJECT_ROOT / "configs" / "datasets.yaml"
PROFILE = PROJECT_ROOT / "configs" / "qwen2-vl-2b.yaml"
FILL_IN = ("outdoor_advertising", "gantry_samples")


def test_shipped_sources_are_pinned_hub_repositories_or_entries_to_fill_in():
    entries = load_registry(REGISTRY)
    assert {"textcaps", *FILL_IN, "custom"} <= set(entries)
    for name, spec in entries.items():
        for f in spec.files:
            for url in (f.url, *f.mirrors):
                host = urlsplit(url).hostname or ""
                assert not re.search(r"(^|\.)example\.(com|org|net)$|\.(invalid|test|example)$", host), (name, url)
                if url.startswith("hf://"):  # pinned: the bytes never change under a run
                    assert re.search(r"@[0-9a-f]{40}(/|$)", url), (name, url)
    for name in FILL_IN:
        assert entries[name].files == ()
    assert "example.com" not in REGISTRY.read_text() and "example.org" not in REGISTRY.read_text()


def test_the_real_profile_trains_on_the_real_source():
    cfg = load_config(PROFILE)  # the --check path: validated, nothing contacted
    assert cfg.datasets == ("textcaps",)
    assert cfg.train.format == "parquet" and cfg.train.fields.messages == "conversations"
    text = PROFILE.read_text()
    assert "licence" in text and "TextCaps" in text  # the comment says what it is and why


def _config(tmp_path, name: str):
    path = tmp_path / "c.yaml"
    path.write_text(f"datasets: [{name}]\ntrain: null\n")
    return path


@pytest.mark.parametrize("name", FILL_IN)
def test_check_of_a_config_selecting_an_entry_to_fill_in_is_one_line(tmp_path, name):
    with pytest.raises(ConfigError) as err:
        load_config(_config(tmp_path, name))
    line = str(err.value)
    assert "\n" not in line
    assert f"datasets.0: dataset {name!r} has no source yet: set its files" in line
    assert line.endswith(f"in {REGISTRY}") and "--urls" not in line  # the config cannot take --urls


def test_check_command_exit_code_and_line(tmp_path, capsys):
    from flows.pipeline import main

    assert main(["--check", "--config", str(_config(tmp_path, "gantry_samples"))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'gantry_samples' has no source yet" in err and str(REGISTRY) in err


def test_datasets_list_flags_entries_to_fill_in(capsys):
    from train_pipeline.cli import main

    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    for name in FILL_IN:
        row = next(ln for ln in out if ln.strip().startswith(name + " "))
        assert f"dataset {name!r} has no source yet: set its files" in row and str(REGISTRY) in row
    assert "no source yet" not in next(ln for ln in out if ln.strip().startswith("custom "))


def test_datasets_download_of_an_entry_to_fill_in_says_what_to_set(tmp_path, capsys):
    from train_pipeline.cli import main

    assert main(["datasets", "download", "outdoor_advertising", "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"has no source yet: set its files (- url: hf://datasets/ORG/NAME@REVISION/PATH or https://HOST/FILE) in {REGISTRY}, or give them with --urls" in err
    assert not (tmp_path / "d").exists()  # nothing created, nothing contacted


def test_a_hostile_registry_keeps_errors_on_one_line(tmp_path):
    """Names are checked when the registry is read, so what the errors quote cannot break lines."""
    registry = tmp_path / "r.yaml"
    registry.write_text(yaml.safe_dump({"datasets": [{"name": "a\nb", "files": []}]}))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"datasets: ['a\\nb']\nregistry: {registry}\ntrain: null\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert "\n" not in str(err.value)
