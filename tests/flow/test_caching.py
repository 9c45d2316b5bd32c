"""Caching that skips finished work, and redoes exactly the work whose output went missing or changed."""

from __future__ import annotations

ARCHIVE = "billboards.tar.gz"  # the dataset archive on the test file server (tests/flow/conftest.py)

import shutil

import pytest


def test_rerun_transfers_nothing_and_every_step_is_cached(dataset_config, served, run_pipeline, task_states,
                                                          dataset_archive):
    cfg = dataset_config()
    first = run_pipeline(cfg)
    assert first.is_completed(), first.message
    assert task_states(first.state_details.flow_run_id) == {"fetch": "Completed", "verify": "Completed",
                                                            "extract": "Completed"}
    assert served.bytes_sent_total(ARCHIVE) == dataset_archive.size
    requests_before = len(served.log)

    second = run_pipeline(cfg)
    assert second.is_completed(), second.message
    assert task_states(second.state_details.flow_run_id) == {"fetch": "Cached", "verify": "Cached", "extract": "Cached"}
    assert len(served.log) == requests_before  # not even a HEAD: 0 bytes
    assert served.bytes_sent_total(ARCHIVE) == dataset_archive.size


def test_summary_artifact_reports_each_file(dataset_config, run_pipeline):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    state = run_pipeline(dataset_config())
    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    summary = [a for a in arts if a.key == "download-summary"]
    assert len(summary) == 1 and summary[0].type == "table"
    assert ARCHIVE in str(summary[0].data) and "downloaded" in str(summary[0].data)


def test_deleted_or_modified_outputs_are_redone_exactly(tmp_path, dataset_config, served, run_pipeline, task_states,
                                                        dataset_archive):
    cfg = dataset_config()
    download = tmp_path / "data" / "downloads" / "billboards" / ARCHIVE
    extracted = tmp_path / "data" / "billboards"
    assert run_pipeline(cfg).is_completed()
    sent = served.bytes_sent_total(ARCHIVE)

    # The extracted folder is gone: only extract runs again; nothing is downloaded.
    shutil.rmtree(extracted)
    state = run_pipeline(cfg)
    assert state.is_completed(), state.message
    assert task_states(state.state_details.flow_run_id) == {"fetch": "Cached", "verify": "Cached", "extract": "Completed"}
    assert served.bytes_sent_total(ARCHIVE) == sent
    assert (extracted / "billboards" / "metadata.jsonl").is_file()

    # The download is gone: it is fetched again (and what depends on it redone).
    download.unlink()
    state = run_pipeline(cfg)
    assert state.is_completed(), state.message
    assert task_states(state.state_details.flow_run_id)["fetch"] == "Completed"
    assert served.bytes_sent_total(ARCHIVE) == sent + dataset_archive.size
    sent = served.bytes_sent_total(ARCHIVE)

    # The download was modified in place (same size): the cheap check notices, the file is replaced.
    data = bytearray(download.read_bytes())
    data[100] ^= 0xFF
    download.write_bytes(bytes(data))
    state = run_pipeline(cfg)
    assert state.is_completed(), state.message
    assert task_states(state.state_details.flow_run_id)["fetch"] == "Completed"
    assert download.read_bytes() == dataset_archive.path.read_bytes()

    # And then everything is Cached again.
    state = run_pipeline(cfg)
    assert task_states(state.state_details.flow_run_id) == {"fetch": "Cached", "verify": "Cached", "extract": "Cached"}


def test_cache_lives_in_the_configured_result_storage(tmp_path, dataset_config, run_pipeline, task_states):
    store = tmp_path / "shared-results"
    cfg = dataset_config(result_storage=str(store))
    assert run_pipeline(cfg).is_completed()
    assert store.is_dir() and any(store.iterdir())  # cache records live where the config says

    # Another storage location has no records: the same work runs again (nothing Cached)...
    other = dataset_config(result_storage=str(tmp_path / "elsewhere"))
    state = run_pipeline(other)
    assert "Cached" not in task_states(state.state_details.flow_run_id).values()
    # ...and the first one still hits.
    state = run_pipeline(cfg)
    assert set(task_states(state.state_details.flow_run_id).values()) == {"Cached"}


def test_many_small_files_go_through_one_batch_task(tmp_path, dataset_config, served, run_pipeline, task_states,
                                                    dataset_archive):
    files = [{"url": served.url(ARCHIVE), "size": dataset_archive.size, "hash": dataset_archive.hash}]
    for i in range(8):
        body = f"label {i}\n".encode() * 10
        (served.root / f"label_{i}.txt").write_bytes(body)
        files.append({"url": served.url(f"label_{i}.txt"), "size": len(body),
                      "hash": "sha256:" + __import__("hashlib").sha256(body).hexdigest()})
    cfg = dataset_config(datasets=[{"name": "billboards", "files": files, "extract_to": "billboards"}])
    state = run_pipeline(cfg)
    assert state.is_completed(), state.message
    assert task_states(state.state_details.flow_run_id) == {
        "fetch-batch": "Completed", "fetch": "Completed", "verify": "Completed", "extract": "Completed"}
    assert len([r for r in served.log if r.path.startswith("/label_")]) == 8

    state = run_pipeline(cfg)
    assert set(task_states(state.state_details.flow_run_id).values()) == {"Cached"}

    # One small file deleted: the batch runs again and transfers just that one.
    (tmp_path / "data" / "downloads" / "billboards" / "label_3.txt").unlink()
    before = len(served.log)
    state = run_pipeline(cfg)
    assert state.is_completed(), state.message
    assert task_states(state.state_details.flow_run_id)["fetch-batch"] == "Completed"
    assert [r.path for r in served.log[before:] if r.method == "GET"] == ["/label_3.txt"]


@pytest.mark.slow
def test_download_cache_key_names_the_bytes_not_where_they_come_from():
    from types import SimpleNamespace

    from tasks.download import DOWNLOAD_CACHE, fetch_with_resume

    def key(**inputs):
        base = dict(url="http://127.0.0.1:1/a.tar.gz", dest="/d/a.tar.gz", size=10, hash="sha256:" + "0" * 64,
                    mirrors=(), connections=1, retries=5)
        return DOWNLOAD_CACHE.compute_key(SimpleNamespace(task=fetch_with_resume), {**base, **inputs}, {})

    same = key()
    assert key(url="http://127.0.0.1:2/a.tar.gz", mirrors=("http://m/a.tar.gz",), connections=8, retries=0) == same
    assert key(dest="/e/a.tar.gz") != same and key(size=11) != same and key(hash="sha256:" + "1" * 64) != same
    # Without a hash the URL is what names the content.
    assert key(hash=None) != key(hash=None, url="http://other/a.tar.gz")
    assert key(hash=None) == key(hash=None, connections=4)
