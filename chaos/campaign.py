"""A campaign: the sample's servers behind fault proxies, one Prefect server, a fault-free reference
(run twice: what differs between the two is timing, compared by presence only), then the trials,
one JSON line each."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.harness.files import make_random_file
from chaos.plan import plan_for
from chaos.proxy import FaultPolicy, FaultProxy
from chaos.trial import compare, outputs, run_attempts, run_trial, train_rows, write_config

SAMPLE_TRAIN = {  # configs/sample.yaml's training
    "max_steps": 30, "learning_rate": 2.0e-3, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
    "max_pixels": 12544, "min_pixels": 3136, "max_length": 256, "save_steps": 10, "logging_steps": 1, "seed": 42,
}
LARGE_NAME = "blob.bin"
LARGE_SIZE = (1 << 30) + 12345  # over 1 GiB, and not a multiple of any block size


@dataclass
class Sources:
    hub: FaultProxy
    cdn: FaultProxy
    files: FaultProxy
    archive: tuple[int, str]          # size, sha256:HEX of the sample's dataset archive
    large: tuple[int, str] | None     # of the large variant's file

    def proxies(self) -> tuple[FaultProxy, ...]:
        return self.hub, self.cdn, self.files


@contextmanager
def sample_sources(work: Path, large: bool) -> Iterator[Sources]:
    """The offline sample (built once in ``work``) served by its Hub look-alike (with a CDN) and a file
    server, each behind a fault proxy."""
    from offline.file_server import FileServer
    from offline.hub_server import HubServer
    from offline.sample import build_sample
    from train_pipeline.config import SampleSpec

    assets = build_sample(SampleSpec(n_images=24, seed=0, build_dir=str(work / "sample-build")))
    big = (LARGE_SIZE, "sha256:" + make_random_file(assets.files_root / LARGE_NAME, LARGE_SIZE)) if large else None
    none = FaultPolicy()
    with ExitStack() as stack:
        # Small listing pages: the pagination links go through the proxies (and their faults) too.
        hub = stack.enter_context(HubServer(assets.hub_root, cdn=True, tree_page_size=4))
        files = stack.enter_context(FileServer(assets.files_root))
        proxies = [stack.enter_context(FaultProxy(origin, none, 0))
                   for origin in (hub.endpoint, hub.cdn_endpoint, files.base_url)]
        for p in proxies:  # a redirect to the CDN, a pagination link: through the proxies as well
            for q in proxies:
                p.rewrite[q.origin] = q.endpoint
        yield Sources(*proxies, archive=(assets.archive_size, assets.archive_hash), large=big)


def pipeline_config(src: Sources, variant: str) -> dict:
    """The sample's pipeline with every source behind a proxy; ``large``: download only, plus a
    file over 1 GiB fetched with 4 connections."""
    from offline.sample import ARCHIVE_NAME, SAMPLE_DATASET, SAMPLE_PARQUET_DATASET, SAMPLE_PARQUET_SOURCE, SAMPLE_REPO

    datasets = [
        {"name": SAMPLE_DATASET, "extract_to": SAMPLE_DATASET,
         "files": [{"url": f"{src.files.endpoint}/{ARCHIVE_NAME}", "size": src.archive[0], "hash": src.archive[1]}]},
        {"name": SAMPLE_PARQUET_DATASET, "files": [{"url": SAMPLE_PARQUET_SOURCE, "endpoint": src.hub.endpoint}]},
    ]
    config = {"model": {"repo_id": SAMPLE_REPO, "revision": "main", "endpoint": src.hub.endpoint},
              "datasets": datasets, "train": SAMPLE_TRAIN, "task_retry_delay": 1}
    if variant == "large":
        datasets.append({"name": "blob", "files": [
            {"url": f"{src.files.endpoint}/{LARGE_NAME}", "size": src.large[0], "hash": src.large[1]}]})
        config.update(train=None, connections=4)
    return config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def prefect_server(work: Path) -> Iterator[dict[str, str]]:
    """One Prefect server for the campaign (trials would otherwise each start a temporary one); yields
    the environment of the pipeline's runs."""
    home = work / "prefect-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               HF_HOME=str(work / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1", COLUMNS="200", PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    port = _free_port()
    log = open(work / "prefect-server.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the Prefect server did not start: see {work / 'prefect-server.log'}")
                time.sleep(0.5)
        yield {**env, "PREFECT_API_URL": api}
    finally:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(server.pid, sig)
                server.wait(wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


def _reset(src: Sources, hub: FaultPolicy, files: FaultPolicy, seed: int) -> None:
    src.hub.configure(hub, seed)
    src.cdn.configure(hub, seed + 1)
    src.files.configure(files, seed + 2)


def _bytes_sent(src: Sources) -> int:
    return sum(p.counters.body_bytes for p in src.proxies())


@dataclass
class Reference:
    outputs: dict[str, str]
    rows: list[dict]
    volatile: set[str]
    wall_s: float
    bytes_sent: int


def reference(src: Sources, work: Path, config: dict, env: dict[str, str]) -> Reference:
    """Two fault-free runs: the outputs of the first; files whose bytes differ between them (volatile);
    their mean wall time and bytes sent."""
    runs = []
    for name in ("reference-a", "reference-b"):
        run_dir = work / name
        shutil.rmtree(run_dir, ignore_errors=True)
        _reset(src, FaultPolicy(), FaultPolicy(), 0)
        start = time.monotonic()
        attempts = run_attempts(run_dir, write_config(run_dir, config), env, ())
        if attempts[-1].outcome != "completed":
            raise RuntimeError(f"the fault-free reference run failed: see {run_dir}/attempt-*.log")
        runs.append((run_dir, time.monotonic() - start, _bytes_sent(src)))
    a, b = outputs(runs[0][0]), outputs(runs[1][0])
    if set(a) != set(b) or train_rows(runs[0][0]) != train_rows(runs[1][0]):
        raise RuntimeError("two fault-free runs wrote different files or losses: no reference to compare with")
    volatile = {p for p in a if a[p] != b[p]}
    return Reference(a, train_rows(runs[0][0]), volatile, sum(r[1] for r in runs) / 2, runs[0][2])


def run_campaign(work: Path, out: Path, variant: str, seeds: list[int], keep: bool = False,
                 reference_s: float | None = None) -> list[dict]:
    """Every seed's trial, appended to ``out`` (JSON lines) as it ends; returns the records.
    ``reference_s``: the reference length the kill times are drawn over (a replay gives the one
    its record names, so the kills come at the same seconds); by default, this machine's now."""
    work.mkdir(parents=True, exist_ok=True)
    records = []
    with sample_sources(work, variant == "large") as src, prefect_server(work) as env:
        config = pipeline_config(src, variant)
        ref = reference(src, work / variant, config, env)
        print(f"reference: {ref.wall_s:.1f} s, {ref.bytes_sent} body bytes, {len(ref.outputs)} paths; compared "
              f"by presence only (their bytes differ between two fault-free runs): {sorted(ref.volatile)}", flush=True)
        for seed in seeds:
            plan = plan_for(seed, variant, reference_s or ref.wall_s)
            run_dir = work / variant / f"trial-{seed}"
            shutil.rmtree(run_dir, ignore_errors=True)
            _reset(src, plan.hub, plan.files, seed)
            attempts, wall = run_trial(plan, run_dir, config, env)
            completed = attempts[-1].outcome == "completed"
            cmp = compare(run_dir, ref.outputs, ref.rows, ref.volatile) if completed else None
            kills = sum(a.outcome == "killed" for a in attempts)
            extra = _bytes_sent(src) - ref.bytes_sent
            record = {
                "seed": seed, "variant": variant, "plan": plan.summary(), "kills": kills,
                "kills_planned": len(plan.kill_at), "reference_s": round(reference_s or ref.wall_s, 2),
                "attempts": [asdict(a) for a in attempts], "completed": completed,
                "identical": bool(cmp and cmp.identical), "losses_equal": bool(cmp and cmp.losses_equal),
                "missing": cmp.missing if cmp else [], "differing": cmp.differing if cmp else [],
                "leftovers": cmp.leftovers if cmp else [],
                "bytes_resent": extra, "bytes_resent_per_kill": extra / kills if kills else None,
                "wall_s": round(wall, 1), "wall_per_kill_s": round((wall - ref.wall_s) / kills, 1) if kills else None,
                "last_attempt": {state: sum(states.count(state) for states in attempts[-1].states.values())
                                 for state in ("Completed", "Cached", "Failed")},
                "faults": {name: p.counters.faults for name, p in zip(("hub", "cdn", "files"), src.proxies())},
            }
            records.append(record)
            with open(out, "a") as f:
                f.write(json.dumps(record) + "\n")
            verdict = "ok" if record["identical"] and not record["leftovers"] else "FAIL"
            print(f"seed {seed}: {verdict}; {plan.summary()}; {len(attempts)} attempts, {wall:.0f} s, "
                  f"{extra} bytes re-sent", flush=True)
            if record["identical"] and not keep:
                shutil.rmtree(run_dir, ignore_errors=True)
    return records
