"""One trial: ``python flows/pipeline.py --config FILE`` run, killed by the plan and run again until it
completes, its outputs then compared with the fault-free reference's."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from chaos.plan import TrialPlan
from resumable.hashes import file_digest

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("models_cache", "data", "results")
MAX_ATTEMPTS = 12           # kills + fault failures; a trial that needs more did not complete
ATTEMPT_TIMEOUT_S = 900     # one attempt that runs longer is stuck (and counted as such)
TASK_STATE = re.compile(r"Task run '([a-z-]+)[^']*' - Finished in state (\w+)\(")


@dataclass
class Attempt:
    wall_s: float
    outcome: str               # "completed", "killed", "failed rc=N", "stuck"
    states: dict[str, list[str]] = field(default_factory=dict)  # step -> final states of its task runs
    last_line: str = ""


def tree(root: Path) -> dict[str, str]:
    """{relative path: sha256 of a regular file, 'dir', 'link -> target', or 'special'} under
    ``root`` (a FIFO or socket is named, never opened)."""
    found: dict[str, str] = {}
    if not root.exists():
        return found
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[rel] = f"link -> {os.readlink(path)}"
        elif path.is_dir():
            found[rel] = "dir"
        elif path.is_file():
            found[rel] = file_digest(path)
        else:
            found[rel] = "special"
    return found


def outputs(run_dir: Path) -> dict[str, str]:
    """Everything the pipeline wrote in the trial's folders, keyed '<folder>/<relative path>'."""
    return {f"{name}/{rel}": digest for name in OUTPUTS for rel, digest in tree(run_dir / name).items()}


def train_rows(run_dir: Path) -> list[dict]:
    """The per-step training numbers (metrics.jsonl) of every training under results/."""
    rows = []
    for metrics in sorted((run_dir / "results").glob("*/metrics.jsonl")):
        for line in metrics.read_text().splitlines():
            row = json.loads(line)
            if "loss" in row and "step" in row:
                rows.append({k: row.get(k) for k in ("step", "loss", "grad_norm", "learning_rate")})
    return rows


def write_config(run_dir: Path, config: dict) -> Path:
    import yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    config = {**config, "models_cache": str(run_dir / "models_cache"), "data_dir": str(run_dir / "data"),
              "results_dir": str(run_dir / "results"), "result_storage": str(run_dir / "prefect-results")}
    path = run_dir / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_attempts(run_dir: Path, config: Path, env: dict[str, str], kill_at: tuple[float, ...]) -> list[Attempt]:
    """The same command again and again: each planned kill ends one attempt; a failed attempt (a fault
    that outlasted the retries) is run again too; the first success ends the trial."""
    attempts: list[Attempt] = []
    kills = list(kill_at)
    while len(attempts) < MAX_ATTEMPTS:
        log = run_dir / f"attempt-{len(attempts) + 1}.log"
        deadline = kills.pop(0) if kills else None
        start = time.monotonic()
        with open(log, "wb") as sink:
            proc = subprocess.Popen([sys.executable, "flows/pipeline.py", "--config", str(config)], cwd=ROOT, env=env,
                                    stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=deadline if deadline is not None else ATTEMPT_TIMEOUT_S)
            outcome = "completed" if rc == 0 else f"failed rc={rc}"
        except subprocess.TimeoutExpired:
            outcome = "killed" if deadline is not None else "stuck"
        finally:
            _kill_group(proc)
        text = log.read_text(errors="replace")
        states: dict[str, list[str]] = {}
        for step, state in TASK_STATE.findall(text):
            states.setdefault(step, []).append(state)
        lines = [line for line in text.splitlines() if line.strip()]
        attempts.append(Attempt(round(time.monotonic() - start, 2), outcome, states, lines[-1][:300] if lines else ""))
        if outcome in ("completed", "stuck"):
            break
    return attempts


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the attempt's whole process group (the machine going down: no cleanup anywhere)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@dataclass
class Comparison:
    identical: bool
    missing: list[str]
    leftovers: list[str]  # paths the reference does not have: a .part, a .corrupt, a temporary folder, ...
    differing: list[str]
    losses_equal: bool


def compare(run_dir: Path, reference: dict[str, str], reference_rows: list[dict], volatile: set[str]) -> Comparison:
    """Byte-for-byte against the reference, except the files that differ between two fault-free runs
    (``volatile``: times, durations), whose presence alone is compared."""
    got = outputs(run_dir)
    missing = sorted(set(reference) - set(got))
    leftovers = sorted(set(got) - set(reference))
    differing = sorted(p for p in set(got) & set(reference) if p not in volatile and got[p] != reference[p])
    rows = train_rows(run_dir)
    return Comparison(not (missing or leftovers or differing) and rows == reference_rows, missing, leftovers,
                      differing, rows == reference_rows)


def run_trial(plan: TrialPlan, run_dir: Path, config: dict, env: dict[str, str]) -> tuple[list[Attempt], float]:
    start = time.monotonic()
    attempts = run_attempts(run_dir, write_config(run_dir, config), env, plan.kill_at)
    return attempts, time.monotonic() - start
