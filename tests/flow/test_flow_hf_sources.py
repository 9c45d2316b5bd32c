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
