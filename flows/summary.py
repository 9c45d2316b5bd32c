"""The run's download summary: printed as a table in the terminal and published as a table
artifact in the Prefect UI."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.futures import PrefectFuture
from prefect.states import State

from flows.steps import DatasetSteps
from resumable.redaction import redact
from train_pipeline import report
from train_pipeline.config import ModelSpec

SUMMARY_ARTIFACT = "download-summary"


def _ok(state: State) -> bool:
    return state.is_completed()


def summary_rows(model: PrefectFuture | None, spec: ModelSpec | None, datasets: list[DatasetSteps]) -> list[report.Row]:
    rows = []
    for d in datasets:
        if d.batch is not None:
            rows += batch_rows(d)
        for f in d.files:
            if f.spec.is_hub:
                rows.append(hub_summary_row(f))
                continue
            fetch_state, verify_state = f.fetched.state, f.verified.state
            if not _ok(fetch_state):
                rows.append(report.file_row(f.spec.filename, redact(f.spec.url), f.spec.size or -1, "failed", 0, 0.0, None))
                continue
            r = fetch_state.result()
            cached_run = fetch_state.name == "Cached"
            digest = verify_state.result() if _ok(verify_state) else None
            # A result cached by an earlier run names that run's server: show where the file comes from now.
            url = redact(f.spec.url) if cached_run else r.url
            rows.append(report.file_row(r.path, url, r.size, "cached" if cached_run else r.status,
                                        0 if cached_run else r.bytes_transferred, 0.0 if cached_run else r.seconds,
                                        digest or ("NOT VERIFIED" if not _ok(verify_state) else r.digest)))
    if model is not None:
        state = model.state
        if _ok(state):
            s = state.result()
            cached_run = state.name == "Cached"
            rows.append(report.Row(f"{s.repo_id}@{s.commit[:12]} ({s.files} files)", s.bytes_total,
                                   report.source_of(redact(spec.endpoint)) if spec.endpoint else "huggingface.co",
                                   "cached" if cached_run else s.status, 0 if cached_run else s.bytes_transferred,
                                   0.0 if cached_run else s.seconds, f"commit:{s.commit}"))
        else:
            rows.append(report.Row("model snapshot", -1, "hub", "failed", 0, 0.0, ""))
    return rows


def hub_summary_row(f) -> report.Row:
    """An hf:// source: its files together, with the commit they come from."""
    state = f.fetched.state
    if not _ok(state):
        return report.hub_row(f.spec.url, f.spec.endpoint)
    row = report.hub_row(f.spec.url, f.spec.endpoint, state.result())
    if state.name == "Cached":
        row = report.Row(row.file, row.size, row.source, "cached", 0, 0.0, row.digest)
    return row


def batch_rows(d: DatasetSteps) -> list[report.Row]:
    state = d.batch.state
    if not _ok(state):
        return [report.file_row(f.filename, redact(f.url), f.size or -1, "failed", 0, 0.0, None) for f in d.batch_specs]
    cached_run = state.name == "Cached"
    now = {f.filename: redact(f.url) for f in d.batch_specs}  # cached: the source named now, not an earlier run's
    return [report.file_row(r.path, now.get(Path(r.path).name, r.url) if cached_run else r.url, r.size,
                            "cached" if cached_run else r.status,
                            0 if cached_run else r.bytes_transferred, 0.0 if cached_run else r.seconds, r.digest)
            for r in state.result()]


def publish_summary(model, spec: ModelSpec | None, datasets: list[DatasetSteps]) -> None:
    rows = summary_rows(model, spec, datasets)
    print("\n" + report.render(rows), flush=True)
    try:
        create_table_artifact(table=report.table(rows), key=SUMMARY_ARTIFACT,
                              description="Downloads of this run: status, bytes transferred, speed, verified hash")
    except Exception as exc:  # the terminal table is already out; the UI copy is best effort
        get_run_logger().warning("summary artifact not created: %s", exc)
