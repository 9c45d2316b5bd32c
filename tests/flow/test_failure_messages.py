"""What a failed run says, as its last line (issue 16, item 2): the cause, and the setting to
change when no re-run of the same command can help."""

from __future__ import annotations

from conftest import ARCHIVE


def test_bytes_that_never_match_the_hash_name_the_hash_to_fix(dataset_config, served, run_pipeline):
    from flows.failures import failure_reason

    wrong = "sha256:" + "0" * 64
    cfg = dataset_config(retries=5, task_retries=2, task_retry_delay=0.1, datasets=[{
        "name": "billboards", "files": [{"url": served.url(ARCHIVE), "hash": wrong}], "extract_to": "billboards"}])
    state = run_pipeline(cfg)
    assert state.is_failed()
    line = failure_reason(state)
    assert "\n" not in line and f"dataset 'billboards': fetch {ARCHIVE}:" in line
    assert "gave up after 3 downloads from byte 0 in this run: each download brought the same bytes" in line
    assert "; fix the hash or size (or the url) of " in line
    assert "fix the url (and mirrors)" not in line
