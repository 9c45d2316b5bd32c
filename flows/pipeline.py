"""The ``train-pipeline`` flow: fetch, verify and extract each dataset file, snapshot the model
(concurrently), then train.

    python flows/pipeline.py                                    # the offline sample, end to end
    python flows/pipeline.py --config configs/qwen2-vl-2b.yaml  # the real model (internet + GPU)

Every step is cached across runs in an explicit result storage, and trusted only while its output
on disk is still what the cached result describes (checked cheaply, never by re-hashing). A run
that failed at a step, re-run (or retried from the UI) once the cause is fixed, executes from that
step on; the steps before it are Cached.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python flows/pipeline.py` and Prefect's entrypoint loader
    sys.path.insert(0, str(ROOT))
if __name__ == "__main__":
    import os

    # A first local run starts Prefect's temporary server on a fresh PREFECT_HOME: ~20 s here,
    # right at Prefect's default limit. Give it room (an explicit setting still wins).
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    # Prefect's temporary server sends anonymous usage data by default, and offline that logs a red
    # "ERROR ... Failed to send telemetry" on every run: off for the local run, unless set.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import argparse  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow, get_run_logger  # noqa: E402
from prefect.context import FlowRunContext  # noqa: E402
from prefect.futures import wait  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from flows.failures import failure_reason, raise_first_failure  # noqa: E402
from flows.steps import all_futures, dataset_steps, snapshot_step, sources, train_step  # noqa: E402
from flows.summary import publish_summary  # noqa: E402
from train_pipeline.config import ConfigError, PipelineConfig, check_config, load_config  # noqa: E402
from train_pipeline.config.registry import dataset_origins  # noqa: E402
from train_pipeline.reachability import Unreachable  # noqa: E402


@contextmanager
def download_runner(cfg: PipelineConfig):
    """The task runner of the download fan-out (model snapshot, fetch, verify, extract), started
    for this run and sized by the config in every way of running (``python flows/pipeline.py``, a
    deployment, a test): threads in the flow-run process, ``max_workers`` at a time; or, with
    ``task_runner: {type: dask}``, a LocalCluster for the run or the cluster at ``address``.
    Training stays in the flow-run process either way."""
    if cfg.task_runner.type != "dask":
        with ThreadPoolTaskRunner(max_workers=cfg.max_workers) as runner:
            yield runner
        return
    import cloudpickle
    from prefect_dask import DaskTaskRunner

    # Every task sent to Dask carries this flow. Prefect's entrypoint loader (a deployment) runs
    # this file as a module named 'pipeline', which no Dask scheduler or worker can import: ship
    # this module's code by value (the rest is imported there from the installed package).
    if __name__ not in ("__main__", "flows.pipeline"):
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    spec = cfg.task_runner
    if spec.address:
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            get_run_logger().warning(
                "task_runner.address without a Prefect server (PREFECT_API_URL unset): the cluster's workers "
                "record their task runs elsewhere; run it as a deployment, or set PREFECT_API_URL here and on the workers")
        runner = DaskTaskRunner(address=spec.address)
    else:
        # The workers report task runs to this flow run's API (also the temporary server of a
        # plain `python flows/pipeline.py`, which they could not find by themselves).
        api_url = str(FlowRunContext.get().client.api_url)
        runner = DaskTaskRunner(cluster_kwargs={"n_workers": spec.n_workers, "threads_per_worker": spec.threads_per_worker,
                                                "dashboard_address": None,
                                                # no statistical profiler: nobody looks at it here, and on some
                                                # Pythons it can freeze a worker (stop_profiler_if_it_can_deadlock)
                                                "env": {"PREFECT_API_URL": api_url,
                                                        "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False"}})
    with runner:
        logger = get_run_logger()
        logger.info("downloads run on the Dask cluster at %s", runner.client.scheduler.address)
        stopped = {w: v for w, v in runner.client.run(stop_profiler_if_it_can_deadlock).items() if v}
        if stopped:
            logger.warning(
                "Dask workers %s run Python %s, which can freeze for good when a statistical profiler's "
                "sys._current_frames() meets a thread ending (CPython gh-106883, fixed in 3.11.9 and 3.12.3); the "
                "downloads start and end threads all the time, so those workers' profilers are now off; upgrade "
                "Python there, or start them with DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False",
                ", ".join(sorted(stopped)), ", ".join(sorted(set(stopped.values()))))
        yield runner


def stop_profiler_if_it_can_deadlock(dask_worker) -> str | None:
    """On a Dask worker (``client.run``): turn off its statistical profiler where CPython's
    ``sys._current_frames()``, which the profiler calls every 10 ms, can deadlock the process
    against a thread ending (gh-106883: a GC inside it takes the GIL and the thread-state lock in
    the wrong order). Returns the Python version when it did."""
    v = sys.version_info
    callback = dask_worker.periodic_callbacks.get("profile")
    if callback is None or not (v < (3, 11, 9) or (3, 12) <= v < (3, 12, 3)) or not callback.is_running():
        return None
    callback.stop()
    return f"{v.major}.{v.minor}.{v.micro}"


@flow(name="train-pipeline")
def train_pipeline(config: PipelineConfig | None = None, config_file: str | None = None) -> dict[str, Any]:
    """Download the model and datasets (resumable, verified), extract, and fine-tune.

    ``config`` defaults to the offline sample profile (configs/sample.yaml); ``config_file`` reads
    one from a YAML file instead (relative to the working directory: the checkout in a deployment).
    """
    if config is not None and config_file:
        raise ConfigError("give either 'config' or 'config_file', not both")
    cfg = config or load_config(config_file, check=False)
    planned = check_config(cfg, source=config_file or "config")  # before anything is built or submitted
    storage = cfg.result_storage_ref()
    origins = dataset_origins(cfg, config_file or "the flow's config parameter")
    with sources(cfg, planned) as (model_spec, dataset_specs), download_runner(cfg) as runner:
        model = snapshot_step(runner, model_spec, cfg, storage) if model_spec else None
        datasets = [dataset_steps(runner, ds, cfg, storage) for ds in dataset_specs]
        # Training reads every dataset (check_config made sure each has something it can read).
        trained = train_step(model, datasets, model_spec, cfg, storage) if cfg.train and model and datasets else None
        wait(all_futures(model, datasets, trained))
        publish_summary(model, model_spec, datasets)
        raise_first_failure(model, model_spec, datasets, trained, origins, config_file or "the flow's config parameter")
        return {
            "model": str(model.result().path) if model else None,
            "datasets": {d.spec.name: str(cfg.path(cfg.data_dir) / (d.spec.extract_to or f"downloads/{d.spec.name}"))
                         for d in datasets},
            **outputs(trained.result() if trained else None),
        }


def outputs(result) -> dict[str, str | None]:
    """Where the run's training output is (a TrainResult, or None without training)."""
    keys = ("final_model_dir", "curve_path", "metrics_path")
    return {k: str(getattr(result, k)) if result is not None else None for k in keys}


def output_lines(result: dict[str, Any]) -> list[str]:
    """The last lines of a local run: where its outputs are (also when every step was Cached)."""
    lines = []
    if result.get("model"):
        lines.append(f"model snapshot: {result['model']}")
    for name, folder in (result.get("datasets") or {}).items():
        lines.append(f"dataset {name}: {folder}")
    if result.get("final_model_dir"):
        from train_pipeline.training.processor import LOAD_HINT

        lines.append(f"final model:    {result['final_model_dir']}  ({LOAD_HINT})")
        lines.append(f"loss curve:     {result['curve_path']}")
        lines.append(f"metrics:        {result['metrics_path']}")
    return lines


# -- command line ---------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python flows/pipeline.py",
        description=(
            "Run the train-pipeline flow locally: snapshot the model and fetch/verify/extract the datasets "
            "(concurrently, resumable, cached across runs), then fine-tune. With no options it runs the "
            "offline sample end to end on 127.0.0.1 (about 30 s on CPU). A re-run after a failure "
            "executes only from the failed step on."
        ),
    )
    p.add_argument("--config", metavar="FILE",
                   help="pipeline YAML (default: configs/sample.yaml, the offline sample; "
                        "configs/qwen2-vl-2b.yaml is the real Qwen2-VL-2B profile)")
    p.add_argument("--check", action="store_true",
                   help="only validate the config (and the dataset names against the registry), then exit; no network")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.config or 'configs/sample.yaml'}: OK")
        return 0
    try:  # before Prefect's temporary server starts (6-16 s): a host that does not exist fails now
        preflight(cfg, args.config or "configs/sample.yaml")
    except (Unreachable, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    last_lines = _print_last()
    state = train_pipeline(config=cfg, return_state=True)
    if not state.is_completed():
        print(f"error: train-pipeline {state.type.value.lower()}: {failure_reason(state)}", file=sys.stderr)
        return 1
    last_lines(output_lines(state.result()))
    return 0


def _print_last():
    """A function printing lines as the run's very last: with Prefect's temporary server (no
    PREFECT_API_URL), after its "Stopping temporary server" line at exit (atexit runs the handlers
    registered before the server's own last); else at once."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return lambda lines: print("\n".join(lines), flush=True)
    import atexit

    pending: list[str] = []
    atexit.register(lambda: pending and print("\n".join(pending), flush=True))
    return pending.extend


def preflight(cfg: PipelineConfig, source: str) -> None:
    """Every dataset file still to download has a source whose host exists and accepts connections,
    and so has every Hub endpoint the run will ask (train_pipeline.reachability; a host it cannot
    decide on is left to the run)."""
    if cfg.sample is not None:
        return  # served on 127.0.0.1 by the run itself
    from train_pipeline.config.load import planned_datasets
    from train_pipeline.reachability import check_reachable, hub_sources, pending_sources

    datasets = planned_datasets(cfg, source)
    data_dir, origins = cfg.path(cfg.data_dir), dataset_origins(cfg, source)
    check_reachable([*hub_sources(cfg, datasets, data_dir, origins, source),
                     *pending_sources(datasets, data_dir, origins)])


if __name__ == "__main__":
    sys.exit(main())
