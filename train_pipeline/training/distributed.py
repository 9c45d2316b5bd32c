"""Training on several processes or machines: torchrun's elastic agent started from the train step.

With a world size above 1 (``distributed:`` in the train config), ``finetune.train`` prepares the
output folder as for one process, then starts torch's own launcher (``torch.distributed.run``,
wrapped by ``launcher.py``) in a process group of its own; the launcher starts one
``worker.py`` per process. This module is the parent's side:

- every worker's output lines reach ``log`` (the Prefect task's logger), prefixed ``[rank N]``;
  the progress records of the reporting rank reach ``progress``;
- a worker that fails ends the launch with ``WorkerFailed``: one line with its rank and its last
  error (its exception, or the signal that killed it);
- whatever ends the parent ends every worker: an exception or a cancellation here stops the group
  (SIGTERM, then SIGKILL after ``stop_grace_s``); a parent killed outright is noticed by the
  launcher (its parent changes), which stops its workers the same way; a launcher killed outright
  is noticed by each worker, which ends itself. No orphans either way.

Only what a worker prints goes through here; the training itself (data order, loss averaging,
checkpoints written by rank 0 alone) is in ``worker.py`` and ``finetune.py``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from train_pipeline.training.settings import DistributedConfig, parse_endpoint

logger = logging.getLogger(__name__)

WORKER_MODULE = "train_pipeline.training.worker"
PROGRESS_MARK = "@@train-progress "
ERROR_MARK = "@@train-error "
LOG_PREFIX = "[rank ${rank}] "  # torchrun's TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE; ${rank} = global rank
_RANK_LINE = re.compile(r"^\[rank (\d+)\] ?(.*)$")


class WorkerFailed(RuntimeError):
    """A worker process failed (or the launcher could not start them); one line: rank and last error."""


def local_nproc(d: DistributedConfig) -> int:
    """Processes on this machine: the setting, or for 'auto' every visible CUDA GPU (1 without)."""
    if d.nproc_per_node != "auto":
        return int(d.nproc_per_node)
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 1


def world_size(d: DistributedConfig) -> int:
    """nproc_per_node x nnodes (every node runs as many processes as this one)."""
    return 1 if not d.multi_process else local_nproc(d) * d.nnodes


def backend(d: DistributedConfig) -> str:
    if d.backend != "auto":
        return d.backend
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def launcher_command(d: DistributedConfig, spec_path: Path, log_dir: Path, module: str = WORKER_MODULE) -> list[str]:
    """``python -m train_pipeline.training.launcher`` = ``torch.distributed.run`` plus a watch on its parent."""
    nproc = local_nproc(d)
    cmd = [sys.executable, "-m", "train_pipeline.training.launcher", "--parent-pid", str(os.getpid()),
           "--grace", str(d.stop_grace_s), "--work-dir", str(spec_path.parent), "--",
           "--nproc-per-node", str(nproc), "--max-restarts", "0", "--monitor-interval", "0.2",
           "--tee", "3", "--log-dir", str(log_dir)]
    if d.nnodes == 1:
        cmd += ["--standalone"]  # a c10d rendezvous on a free local port
    else:
        host, port = parse_endpoint(d.rdzv_endpoint)
        cmd += ["--nnodes", str(d.nnodes), "--node-rank", str(d.node_rank), "--rdzv-backend", "c10d",
                "--rdzv-endpoint", f"[{host}]:{port}" if ":" in host else f"{host}:{port}", "--rdzv-id", d.rdzv_id]
    return cmd + ["-m", module, str(spec_path)]


def run_workers(
    d: DistributedConfig,
    spec: dict[str, Any],
    *,
    log: Callable[[str], None] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    module: str = WORKER_MODULE,
) -> None:
    """Run this node's workers on ``spec`` (JSON, read by the worker) until they all finish.

    Raises WorkerFailed (one line: rank, last error) when any fails; stops them all on any
    exception here, KeyboardInterrupt and cancellation included."""
    log = log or logger.info
    work = Path(tempfile.mkdtemp(prefix="train-pipeline-launch-"))
    proc: subprocess.Popen | None = None
    try:
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        (work / "logs").mkdir()
        env = dict(os.environ, TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE=LOG_PREFIX, PYTHONUNBUFFERED="1",
                   TORCH_NCCL_ASYNC_ERROR_HANDLING=os.environ.get("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1"))
        cmd = launcher_command(d, spec_path, work / "logs", module)
        log(f"[launcher] {world_size(d)} processes ({local_nproc(d)} on this node, node {d.node_rank} of {d.nnodes}, "
            f"{d.strategy}): {' '.join(cmd[cmd.index('--') + 1:])}")
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True, text=True, encoding="utf-8", errors="replace",
                                bufsize=1)
        errors: list[tuple[int, str]] = []
        tail: list[str] = []
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            match = _RANK_LINE.match(line)
            rank, text = (int(match.group(1)), match.group(2)) if match else (None, line)
            if text.startswith(PROGRESS_MARK):
                if progress is not None:
                    progress(json.loads(text[len(PROGRESS_MARK):]))
                continue
            if text.startswith(ERROR_MARK):
                record = json.loads(text[len(ERROR_MARK):])
                errors.append((int(record["rank"]), str(record["error"])))
                continue
            tail = (tail + [line])[-60:]
            log(line if match else f"[launcher] {line}")
        rc = proc.wait()
        if rc != 0:
            raise WorkerFailed(_failure(rc, errors, tail))
    finally:
        if proc is not None:
            stop_group(proc, d.stop_grace_s)
        shutil.rmtree(work, ignore_errors=True)


def _failure(rc: int, errors: list[tuple[int, str]], tail: list[str]) -> str:
    """The first failing rank and its last error line, from the worker's own report or torchrun's summary."""
    if errors:
        rank, error = errors[0]
        return f"distributed training failed: rank {rank}: {error} (every rank's log is above, prefixed [rank N])"
    text = "\n".join(tail)
    text = text[text.rfind("Root Cause"):] if "Root Cause" in text else text  # torchrun's summary: first failure
    rank = re.search(r"^\s*rank\s*:\s*(\d+)", text, re.M)
    code = re.search(r"^\s*exitcode\s*:\s*(-?\d+)", text, re.M)
    cause = re.search(r"^\s*traceback\s*:\s*(.+)$", text, re.M)
    if rank:
        why = cause.group(1).strip() if cause else f"exit code {code.group(1) if code else '?'}"
        if code and int(code.group(1)) < 0:
            try:
                why = f"killed by {signal.Signals(-int(code.group(1))).name}"
            except ValueError:
                pass
        return f"distributed training failed: rank {rank.group(1)}: {why} (every rank's log is above, prefixed [rank N])"
    last = next((t for t in reversed(tail) if t.strip()), "no output")
    return f"distributed training failed: the launcher exited with status {rc}: {last.strip()}"


def stop_group(proc: subprocess.Popen, grace: float) -> None:
    """End the launcher and every process under it: SIGTERM to the launcher's group (torchrun then
    stops its workers, each in a session of its own), SIGKILL to whatever is left after ``grace``."""
    if proc.poll() is not None:
        return  # it ended on its own, and torchrun ends its workers before it exits
    pids = descendants(proc.pid)
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pids |= descendants(proc.pid)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGKILL)
    for pid in pids:
        if _alive(pid):
            _signal_group(pid, signal.SIGKILL)
    proc.wait()


def descendants(root: int) -> set[int]:
    """Every process below ``root`` (from /proc; empty where there is none)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal ``pid``'s process group when it leads one (launcher, workers), else the process."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def watch_parent(parent: int, on_orphaned: Callable[[], None], interval: float = 0.2) -> None:
    """Call ``on_orphaned`` (in a daemon thread) once this process's parent is no longer ``parent``."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        on_orphaned()

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


# Qwen2-VL's repeated blocks: each one an FSDP unit (its parameters gathered just for its forward
# and backward), in both towers; the embeddings, merger and head stay in the root unit.
QWEN2VL_WRAP = ("Qwen2VLDecoderLayer", "Qwen2VLVisionBlock")


def fsdp_arguments(config: Any) -> dict[str, Any]:
    """TrainingArguments for FSDP: full sharding of parameters, gradients and optimizer state,
    wrapped per transformer block of the vision and text towers."""
    return {
        "fsdp": "full_shard auto_wrap",
        "fsdp_config": {
            "transformer_layer_cls_to_wrap": list(QWEN2VL_WRAP),
            "use_orig_params": True,  # LoRA and a frozen vision tower mix trainable and frozen weights in a unit
            "sync_module_states": True,
            "state_dict_type": "FULL_STATE_DICT",  # checkpoints and final/ hold ordinary model.safetensors
            "activation_checkpointing": bool(config.gradient_checkpointing),
        },
    }
