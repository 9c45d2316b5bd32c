"""A registry dataset whose file is an hf://datasets/... source, through the flow: one task over the
snapshot machinery, its files in the dataset's downloads folder, Cached on a re-run, and run again
(relinking, not downloading) when a published file is deleted."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

SOURCE = "hf://datasets/org/shards@main/data/*.parquet"
SHARDS = ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]


def test_an_hf_source_in_the_registry_goes_through_the_flow(tmp_path, run_pipeline, task_states):
    from offline.hub_server import HubServer
    from offline.sample_data import build_sample_parquet
    from train_pipeline.config import load_config

    repos = tmp_path / "repos"
    build_sample_parquet(repos / "datasets" / "org" / "shards", n_images=4, seed=3, shards=2)
    with HubServer(repos) as hub:
        registry = tmp_path / "registry.yaml"
        registry.write_text(f"datasets:\n  - name: billboards\n    files:\n      - url: '{SOURCE}'\n"
                            f"        endpoint: {hub.endpoint}\n")
        config = tmp_path / "pipeline.yaml"
        config.write_text(f"datasets: [billboards]\nregistry: {registry}\ntrain: null\n"
                          f"data_dir: {tmp_path / 'data'}\nmodels_cache: {tmp_path / 'models'}\n"
                          f"results_dir: {tmp_path / 'results'}\ntask_retries: 0\n")
        cfg = load_config(config)
        folder = tmp_path / "data" / "downloads" / "billboards"

        state = run_pipeline(cfg)
        assert state.is_completed(), state.message
        assert task_states(state.state_details.flow_run_id) == {"hf": "Completed"}
        for path in SHARDS:
            assert (folder / path).read_bytes() == (repos / "datasets/org/shards" / path).read_bytes()
        assert state.result()["datasets"] == {"billboards": str(folder)}

        state = run_pipeline(cfg)
        assert task_states(state.state_details.flow_run_id) == {"hf": "Cached"}

        (folder / SHARDS[0]).unlink()
        mark = len(hub.settle())
        state = run_pipeline(cfg)
        assert task_states(state.state_details.flow_run_id) == {"hf": "Completed"}
        assert (folder / SHARDS[0]).is_file()
        assert not [r for r in hub.settle()[mark:] if "/resolve/" in r.path]  # linked again from the snapshot


def _config(tmp_path, registry_text: str):
    from train_pipeline.config import load_config

    registry = tmp_path / "registry.yaml"
    registry.write_text(registry_text)
    config = tmp_path / "pipeline.yaml"
    config.write_text(f"datasets: [billboards]\nregistry: {registry}\ntrain: null\n"
                      f"data_dir: {tmp_path / 'data'}\nmodels_cache: {tmp_path / 'models'}\n"
                      f"results_dir: {tmp_path / 'results'}\ntask_retries: 0\n")
    return load_config(config)


def test_two_hf_sources_of_one_path_fail_the_flow_instead_of_taking_turns(tmp_path, run_pipeline):
    from offline.hub_server import HubServer
    from offline.sample_data import build_sample_parquet

    repos = tmp_path / "repos"
    build_sample_parquet(repos / "datasets" / "org" / "shards", n_images=4, seed=3, shards=2)
    build_sample_parquet(repos / "datasets" / "org" / "other", n_images=4, seed=4, shards=2)
    other = "hf://datasets/org/other/data/*.parquet"
    with HubServer(repos) as hub:
        cfg = _config(tmp_path, f"datasets:\n  - name: billboards\n    files:\n"
                                f"      - url: '{SOURCE}'\n        endpoint: {hub.endpoint}\n"
                                f"      - url: '{other}'\n        endpoint: {hub.endpoint}\n")
        folder = tmp_path / "data" / "downloads" / "billboards"
        seen = []
        for _ in range(2):
            state = run_pipeline(cfg)
            assert state.is_failed()
            assert "belongs to one source" in state.message and "hf://datasets/org/shards" in state.message \
                and "hf://datasets/org/other" in state.message, state.message
            seen.append((folder / SHARDS[0]).read_bytes())
        assert seen[0] == seen[1]  # one source owns the path; the other never replaces it


def test_a_shard_you_replaced_stops_the_flow_and_is_kept(tmp_path, run_pipeline):
    from offline.hub_server import HubServer
    from offline.sample_data import build_sample_parquet

    repos = tmp_path / "repos"
    build_sample_parquet(repos / "datasets" / "org" / "shards", n_images=4, seed=3, shards=2)
    with HubServer(repos) as hub:
        cfg = _config(tmp_path, f"datasets:\n  - name: billboards\n    files:\n"
                                f"      - url: '{SOURCE}'\n        endpoint: {hub.endpoint}\n")
        folder = tmp_path / "data" / "downloads" / "billboards"
        assert run_pipeline(cfg).is_completed()
        (folder / SHARDS[0]).unlink()
        (folder / SHARDS[0]).write_bytes(b"my own shard")
        state = run_pipeline(cfg)
        assert state.is_failed() and f"{folder / SHARDS[0]} is in the way" in state.message, state.message
        assert (folder / SHARDS[0]).read_bytes() == b"my own shard"
