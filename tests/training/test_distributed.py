"""Training on several processes (issue 15): settings, the launcher as a process group, rank
lines and failures, no orphans, and the numbers -- 2 processes x batch B give the losses of
1 process x batch 2B, a killed 2-process run resumes exactly, two "nodes" on one machine too.

Everything runs on CPU with gloo through the real torchrun (``torch.distributed.run``); the
launcher tests use a stand-in worker (dist_fake_worker.py) so they cost a Python start each.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processes import alive

from train_pipeline.training.checkpoints import checkpoint_dirs, is_complete_checkpoint
from train_pipeline.training.distributed import WorkerFailed, descendants, run_workers
from train_pipeline.training.metrics import read_metrics, train_rows
from train_pipeline.training.settings import DistributedConfig, TrainConfigError, parse_endpoint, parse_train_config

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# 16 images, 12 optimizer steps of 2 micro-batches: 1 process x 8 per micro-batch, or 2 x 4.
BASE = {
    "max_steps": 12,
    "save_steps": 4,
    "gradient_accumulation_steps": 2,
    "learning_rate": 3e-3,
    "min_pixels": 56 * 56,
    "max_pixels": 112 * 112,
    "max_length": 256,
    "seed": 7,
}
ONE = {**BASE, "per_device_train_batch_size": 8}
TWO = {**BASE, "per_device_train_batch_size": 4, "distributed": {"nproc_per_node": 2}}
REL_TOL = 1e-5


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(("distributed", "names"), [
    ({"nproc_per_node": 0}, ["distributed.nproc_per_node", "'auto'"]),
    ({"nproc_per_node": "all"}, ["distributed.nproc_per_node", "'auto'"]),
    ({"nproc_per_node": True}, ["distributed.nproc_per_node"]),
    ({"nnodes": 0}, ["distributed.nnodes"]),
    ({"nnodes": 2}, ["nnodes 2 needs rdzv_endpoint", "HOST:PORT"]),
    ({"nnodes": 2, "node_rank": 2, "rdzv_endpoint": "10.0.0.1:29500"}, ["node_rank 2", "0..1"]),
    ({"rdzv_endpoint": "http://10.0.0.1:29500"}, ["distributed.rdzv_endpoint", "HOST:PORT"]),
    ({"rdzv_endpoint": "10.0.0.1:70000"}, ["distributed.rdzv_endpoint", "1-65535"]),
    ({"rdzv_id": "my run"}, ["distributed.rdzv_id"]),
    ({"strategy": "zero3"}, ["distributed.strategy", "'ddp' or 'fsdp'"]),
    ({"backend": "mpi"}, ["distributed.backend"]),
    ({"nprocs": 2}, ["distributed.nprocs", "unknown setting"]),
])
def test_bad_distributed_settings_are_one_line(distributed, names):
    with pytest.raises(TrainConfigError) as info:
        parse_train_config({"distributed": distributed})
    message = str(info.value)
    assert "\n" not in message and all(n in message for n in names), message


def test_distributed_settings_parse():
    d = parse_train_config({"distributed": {"nproc_per_node": "auto", "nnodes": 2, "node_rank": 1,
                                            "rdzv_endpoint": "node0.example.com:29500", "strategy": "fsdp"}}).distributed
    assert (d.nproc_per_node, d.nnodes, d.node_rank, d.strategy, d.multi_process) == ("auto", 2, 1, "fsdp", True)
    assert parse_train_config({"distributed": {"nproc_per_node": "4"}}).distributed.nproc_per_node == 4  # --set spelling
    assert not DistributedConfig().multi_process  # the default: today's in-process training


_hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.from_regex(r"\A[a-z][a-z0-9-]{0,20}[a-z0-9](\.[a-z][a-z0-9]{0,10}){0,3}\Z"),
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(host=_hosts, port=st.integers(1, 65535))
def test_endpoint_round_trips(host, port):
    assert parse_endpoint(f"{host}:{port}") == (host, port)


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses(v=6), st.integers(1, 65535))
def test_ipv6_endpoint_round_trips(address, port):
    assert parse_endpoint(f"[{address}]:{port}") == (str(address), port)


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=40), st.from_regex(r"\A[\w.:\[\]-]{0,30}:[0-9]{0,7}\Z"), st.integers(), st.none()))
def test_endpoint_parser_accepts_or_names_the_fix(text):
    """Anything at all: a (host, port) with a valid port, or a one-line ValueError with the fix."""
    try:
        host, port = parse_endpoint(text)
    except ValueError as exc:
        assert "\n" not in str(exc) and "HOST:PORT" in str(exc)
    else:
        assert 1 <= port <= 65535 and host and not any(c.isspace() for c in host)
        # and a valid endpoint is a valid setting
        parse_train_config({"distributed": {"rdzv_endpoint": text}})


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(-5, 2000), st.text(max_size=6), st.booleans(), st.floats(), st.none()))
def test_nproc_is_a_count_or_auto(value):
    try:
        d = parse_train_config({"distributed": {"nproc_per_node": value}}).distributed
    except TrainConfigError as exc:
        assert "\n" not in str(exc) and "distributed.nproc_per_node" in str(exc)
    else:
        assert d.nproc_per_node == "auto" or (isinstance(d.nproc_per_node, int) and 1 <= d.nproc_per_node <= 1024)
        assert str(value).strip().lower() == "auto" or int(str(value).strip()) == d.nproc_per_node


def test_fsdp_on_cpu_is_refused_before_any_launch(tiny_model_dir, sample_data_dir, tmp_path):
    from train_pipeline.training.finetune import TrainSetupError, train

    config = parse_train_config({**TWO, "distributed": {"nproc_per_node": 2, "strategy": "fsdp"}})
    with pytest.raises(TrainSetupError, match="strategy fsdp needs CUDA GPUs"):
        train(tiny_model_dir, sample_data_dir, tmp_path / "out", config)
    assert not (tmp_path / "out").exists()


def test_fsdp_wraps_both_towers_blocks(tiny_model_dir):
    """The wrap classes name real Qwen2-VL modules (an unknown name makes accelerate fail at start)."""
    from transformers import AutoModelForImageTextToText, TrainingArguments

    from train_pipeline.training.distributed import QWEN2VL_WRAP, fsdp_arguments

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    found = {type(m).__name__ for m in model.modules()}
    assert set(QWEN2VL_WRAP) <= found
    args = TrainingArguments(output_dir=str(tiny_model_dir / "unused"), use_cpu=True, report_to="none",
                             **fsdp_arguments(parse_train_config({})))
    assert args.fsdp_plugin_args["transformer_cls_names_to_wrap"] == ",".join(QWEN2VL_WRAP)
    assert args.fsdp_plugin_args["state_dict_type"] == "FULL_STATE_DICT"


def test_fsdp_and_distributed_checkpoints_count_as_complete(tmp_path):
    import torch
    from safetensors.torch import save_file

    ckpt = tmp_path / "checkpoint-4"
    ckpt.mkdir()
    save_file({"w": torch.zeros(2)}, ckpt / "model.safetensors")
    for name in ("optimizer.bin", "scheduler.pt", "rng_state_0.pth", "rng_state_1.pth"):
        torch.save({"x": 1}, ckpt / name)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    assert is_complete_checkpoint(ckpt)
    (ckpt / "rng_state_0.pth").unlink()  # rank 0's RNG missing: rank 1's alone is not a checkpoint
    assert not is_complete_checkpoint(ckpt)


# ---------------------------------------------------------------- the launcher (stand-in workers)


@pytest.fixture
def fake_worker_path(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")]))


def _two(grace: float = 3.0) -> DistributedConfig:
    return DistributedConfig(nproc_per_node=2, stop_grace_s=grace)


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "expected"), [
    ("fail", "distributed training failed: rank 1: ValueError: second line"),
    ("die", "distributed training failed: rank 1: killed by SIGKILL"),
])
def test_a_dying_worker_fails_with_its_rank_and_last_error(fake_worker_path, mode, expected):
    lines = []
    before = descendants(os.getpid())  # the session's own servers (nginx, Prefect) are not ours to judge
    started = time.monotonic()
    with pytest.raises(WorkerFailed) as info:
        run_workers(_two(), {"mode": mode}, log=lines.append, module="dist_fake_worker")
    assert str(info.value).startswith(expected) and "\n" not in str(info.value), str(info.value)
    assert time.monotonic() - started < 300  # rank 0 sleeps 600 s: it was stopped, not waited for
    assert not descendants(os.getpid()) - before
    if mode == "fail":
        assert "[rank 1] reading shard 7" in lines


@pytest.mark.slow
def test_an_exception_in_the_parent_stops_every_worker(fake_worker_path):
    """A cancelled task (any exception while the workers run) ends the whole group."""
    seen: set[int] = set()

    class Cancelled(Exception):
        pass

    def log(line: str) -> None:
        if " ready " in line:
            seen.add(int(line.rsplit(" ", 1)[1]))
        if len(seen) == 2:
            raise Cancelled

    before = descendants(os.getpid())
    with pytest.raises(Cancelled):
        run_workers(_two(), {"mode": "hang"}, log=log, module="dist_fake_worker")
    assert len(seen) == 2 and not any(Path(f"/proc/{pid}").exists() for pid in seen)
    assert not descendants(os.getpid()) - before


@pytest.mark.slow
def test_killing_the_parent_leaves_no_orphans(fake_worker_path, tmp_path):
    """SIGKILL the process that launched the workers (the flow run, killed): the launcher notices
    its parent is gone and stops its workers; nothing of the group survives."""
    script = textwrap.dedent("""
        from train_pipeline.training.distributed import run_workers
        from train_pipeline.training.settings import DistributedConfig
        run_workers(DistributedConfig(nproc_per_node=2, stop_grace_s=3), {"mode": "hang"},
                    log=lambda line: print(line, flush=True), module="dist_fake_worker")
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True, env=dict(os.environ, TMPDIR=str(tmp_path)))
    group: set[int] = set()
    try:
        ready = 0
        for line in parent.stdout:
            ready += " ready " in line
            if ready == 2:
                break
        group = descendants(parent.pid)
        assert len(group) >= 3  # the launcher and two workers (each in a session of its own)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(alive(p) for p in group):
            time.sleep(0.1)
        assert not [p for p in group if alive(p)], "orphans survived their parent"
        assert not list(tmp_path.glob("train-pipeline-launch-*"))  # the launcher removed the parent's spec folder
    finally:
        parent.kill()
        parent.wait()
        for pid in group:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)



# ---------------------------------------------------------------- real training on 2 processes


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _cli(model_dir: Path, data_dir: Path, out: Path, config: dict, *extra: str) -> list[str]:
    path = out.parent / f"{out.name}-config.json"
    path.write_text(json.dumps(config))
    return [sys.executable, "-m", "train_pipeline.training", "train", str(model_dir), str(data_dir), str(out),
            "--config", str(path), *extra]


def _finish(args: list[str]) -> tuple[dict, str]:
    proc = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=240, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout[proc.stdout.index("{"):]), proc.stderr


def _losses(out: Path) -> list[dict]:
    return [{k: r[k] for k in ("step", "loss", "grad_norm", "learning_rate", "num_input_tokens_seen")}
            for r in train_rows(read_metrics(out / "metrics.jsonl"))]


def _assert_close(got: list[dict], want: list[dict]) -> float:
    """Per-step losses within REL_TOL (relative); the same steps, learning rates and tokens seen."""
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, BASE["max_steps"] + 1))
    assert [(r["learning_rate"], r["num_input_tokens_seen"]) for r in got] == \
           [(r["learning_rate"], r["num_input_tokens_seen"]) for r in want]
    worst = max(abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(got, want))
    assert worst <= REL_TOL, [(a["loss"], b["loss"]) for a, b in zip(got, want)]
    assert max(abs(a["grad_norm"] - b["grad_norm"]) / b["grad_norm"] for a, b in zip(got, want)) <= 1e-4
    return worst


@pytest.fixture(scope="module")
def one_process(tiny_model_dir, sample_data_dir, tmp_path_factory):
    """1 process x batch 8 (in this process)."""
    from train_pipeline.training.finetune import train

    out = tmp_path_factory.mktemp("one-process")
    train(tiny_model_dir, sample_data_dir, out, parse_train_config(ONE))
    return out


@pytest.fixture(scope="module")
def two_processes(tiny_model_dir, sample_data_dir, tmp_path_factory):
    """2 processes x batch 4, uninterrupted, through the CLI (the Prefect task calls the same train())."""
    out = tmp_path_factory.mktemp("two-processes") / "out"
    result, stderr = _finish(_cli(tiny_model_dir, sample_data_dir, out, TWO))
    return out, result, stderr


@pytest.mark.slow
def test_two_processes_give_the_losses_of_one_with_the_whole_batch(one_process, two_processes):
    out, result, stderr = two_processes
    worst = _assert_close(_losses(out), _losses(one_process))
    print(f"max relative loss difference, 2 x 4 vs 1 x 8: {worst:.2e}")
    assert result["world_size"] == 2 and result["steps"] == 12 and result["examples"] == 16
    # every rank's lines reach the caller's log, prefixed; progress comes once per step
    assert "[rank 0] " in stderr and "[rank 1] " in stderr
    assert [line for line in stderr.splitlines() if line.startswith("step ")][-1].startswith("step 12/12 loss")
    # rank 0 alone wrote: one record per step, one set of checkpoints with each rank's RNG state
    assert len(read_metrics(out / "metrics.jsonl")) == 12
    assert [s for s, _ in checkpoint_dirs(out)] == [8, 12]
    assert {p.name for p in (out / "checkpoint-12").glob("rng_state*")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert (out / "loss_curve.png").is_file() and (out / "train_result.json").is_file()
    from transformers import AutoModelForImageTextToText

    AutoModelForImageTextToText.from_pretrained(out / "final")


@pytest.mark.slow
def test_killed_distributed_run_resumes_exactly(two_processes, tiny_model_dir, sample_data_dir, tmp_path):
    """SIGKILL every process of a 2-process run right after checkpoint-4 is saved: the run goes
    through the training command line with its workers held there (train_child.py --cli-held: each
    worker, once its part of checkpoint-4 is written, says so and waits), so the kill lands between
    checkpoint-4 and step 5 whatever the machine's load. The same command resumes from checkpoint-4,
    and the per-step numbers equal the uninterrupted 2-process run's."""
    reference, _, _ = two_processes
    out, held = tmp_path / "out", tmp_path / "held"
    held.mkdir()
    command = _cli(tiny_model_dir, sample_data_dir, out, TWO)
    assert command[1:3] == ["-m", "train_pipeline.training"]
    log = tmp_path / "held-run.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, str(HERE / "train_child.py"), "--cli-held", "4", str(held), *command[3:]],
                                env=dict(_env(), TMPDIR=str(tmp_path)), cwd=REPO, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    group: set[int] = set()
    try:
        marks = [held / f"held-rank-{rank}" for rank in range(2)]
        deadline = time.monotonic() + 240
        while not all(m.exists() for m in marks):  # a held run stays held: no race with the next step
            assert proc.poll() is None, f"the run ended before it was held:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no worker held after checkpoint-4 in 240 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
        assert is_complete_checkpoint(out / "checkpoint-4")
        assert [s for s, _ in checkpoint_dirs(out)] == [4] and not (out / "train_result.json").exists()
        group = descendants(proc.pid) | {proc.pid}
        assert len(group) >= 4  # this command, the launcher (torchrun) and the two workers
    finally:
        group |= descendants(proc.pid) | {proc.pid}
        for pid in group:  # the machine goes down: everything at once, no cleanup anywhere
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
    assert not (out / "train_result.json").exists() and not (out / "checkpoint-8").exists()
    result, _ = _finish(_cli(tiny_model_dir, sample_data_dir, out, TWO))
    assert result["resumed_from_step"] == 4 and result["steps"] == 12
    assert _losses(out) == _losses(reference)  # exact: same world size, same reduction order


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_on_one_machine(one_process, tiny_model_dir, sample_data_dir, tmp_path):
    """nnodes=2 x 1 process, two launchers meeting at a c10d rendezvous on 127.0.0.1: the same
    losses as one process with the whole batch. The output folder is shared (as on a shared volume)."""
    out = tmp_path / "out"
    config = {**TWO, "distributed": {"nproc_per_node": 1, "nnodes": 2, "rdzv_endpoint": f"127.0.0.1:{_free_port()}",
                                     "rdzv_id": "two-nodes-test"}}
    node1 = subprocess.Popen(_cli(tiny_model_dir, sample_data_dir, out, config, "--set", "distributed.node_rank=1"),
                             env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        result, _ = _finish(_cli(tiny_model_dir, sample_data_dir, out, config))
        _, err1 = node1.communicate(timeout=120)
    finally:
        node1.kill()
        node1.wait()
    assert node1.returncode == 0, err1[-3000:]
    assert "node 1: workers finished" in err1
    assert result["world_size"] == 2
    _assert_close(_losses(out), _losses(one_process))
