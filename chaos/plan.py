"""A trial's plan, drawn from its seed alone: when the flow process is killed, and how each proxy
misbehaves. ``plan_for(seed, variant)`` twice gives the same plan (``--seed`` replays a trial)."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from chaos.proxy import KINDS, FaultPolicy

MAX_KILLS = 5
STARTUP_S = 5.0        # start of an attempt before its first step: interpreter, Prefect client, flow run
MIN_WORK_SHARE = 0.15  # an attempt always has some work left: re-reading state, the steps' checks


@dataclass(frozen=True)
class TrialPlan:
    seed: int
    variant: str
    kill_at: tuple[float, ...]   # seconds into successive attempts: SIGKILL of the flow's process group
    kill_fractions: tuple[float, ...]  # each kill's moment as a share of its attempt's expected length
    hub: FaultPolicy            # the Hub look-alike and its CDN
    files: FaultPolicy          # the plain HTTP file server

    def summary(self) -> str:
        def faults(p: FaultPolicy) -> str:
            etag = f", etag@{p.etag_change_after}" if p.etag_change_after is not None else ""
            return f"{p.rate:.0%} {'/'.join(k[:2] for k in p.kinds)}{etag}" if p.rate else f"none{etag}"

        kills = " ".join(f"{t:.1f}" for t in self.kill_at)
        return f"kills {len(self.kill_at)} at [{kills}] s; hub {faults(self.hub)}; files {faults(self.files)}"

    def as_dict(self) -> dict:
        return asdict(self)


def plan_for(seed: int, variant: str, reference_s: float) -> TrialPlan:
    """1-5 kills, each at a uniform moment of the attempt it ends; per proxy a fault rate of 0-25 % of
    requests over a random subset of the fault kinds; on the file server, sometimes an ETag change
    from a path's 2nd or 3rd request on."""
    rng = random.Random(f"chaos-plan:{variant}:{seed}")
    fractions = tuple(round(rng.uniform(0.05, 0.95), 3) for _ in range(rng.randint(1, MAX_KILLS)))
    kills = kill_times(fractions, reference_s)

    def policy(etag: bool) -> FaultPolicy:
        kinds = tuple(k for k in KINDS if rng.random() < 0.6) or (rng.choice(KINDS),)
        return FaultPolicy(rate=rng.choice((0.0, 0.05, 0.1, 0.25)), kinds=kinds,
                           etag_change_after=rng.choice((1, 2)) if etag and rng.random() < 0.3 else None)

    return TrialPlan(seed, variant, kills, fractions, hub=policy(etag=False), files=policy(etag=True))


def kill_times(fractions: tuple[float, ...], reference_s: float) -> tuple[float, ...]:
    """Seconds into each attempt. An attempt after a kill skips the work already done (Cached steps,
    a resumed download, a checkpoint), so a kill drawn over the whole reference length would often
    come after a resumed attempt has ended. Each kill is drawn over its attempt's expected length
    instead: the start-up (Python, Prefect, the flow run) plus the work the earlier kills left."""
    startup = min(STARTUP_S, 0.4 * reference_s)
    left = reference_s - startup
    times = []
    for f in fractions:
        expected = startup + max(left, MIN_WORK_SHARE * (reference_s - startup))
        at = round(max(0.5, f * expected), 2)
        times.append(at)
        left -= max(0.0, at - startup)
    return tuple(times)
