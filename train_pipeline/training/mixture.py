"""All datasets of a run -> the training examples (concatenated, or mixed by weight), the
evaluation examples, and the fingerprint of both.

- weight ``w`` (``train.datasets.<name>.weight``, default 1): the dataset gives ``floor(w)``
  copies of each of its rows per epoch plus ``round(frac(w) x rows)`` rows chosen with the seed;
  1 everywhere is plain concatenation; 0 leaves the dataset out of training.
- eval: ``eval.dataset`` is read for evaluation only; ``eval.fraction`` holds out that share of
  each training dataset (at least one row, never all), chosen with the seed, before weighting,
  so no held-out row is ever trained on. ``eval.max_examples`` caps the eval set (seeded).

Everything is a function of the rows and the config: a resumed run rebuilds the same lists in
the same order, which an exact resume needs (Trainer's sampler then shuffles them by its seed).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from train_pipeline.training.data_settings import repeat_counts
from train_pipeline.training.formats import DataError, DataReport, Example, read_dataset


@dataclass
class DatasetUse:
    name: str
    role: str  # "train", "eval" or "unused" (weight 0)
    weight: float
    report: DataReport | None = None  # None: not read (unused)
    train: int = 0  # examples it gives per epoch
    eval: int = 0


@dataclass
class RunData:
    train: list[Example]
    eval: list[Example]
    uses: list[DatasetUse]
    fingerprint: str  # sha256 of every example read (chat and image bytes), per dataset
    dropped: list[str] = field(default_factory=list)  # rows dropped before training (too long), by origin

    def report_dict(self) -> dict[str, Any]:
        reports = [u.report for u in self.uses if u.report is not None]
        return {
            "total_rows": sum(r.total_rows for r in reports),
            "usable_rows": sum(r.usable for r in reports),
            "train_examples": len(self.train),
            "eval_examples": len(self.eval),
            "dropped_for_length": self.dropped,
            "datasets": [{"name": u.name, "role": u.role, "weight": u.weight, "train_examples": u.train,
                          "eval_examples": u.eval, **(u.report.to_dict() if u.report else {})} for u in self.uses],
        }


def build_run_data(sources: Sequence[Any], config) -> RunData:
    """Read every dataset of ``sources`` with ``config``'s settings; DataError when the settings
    name a dataset that is not there or leave nothing to train on."""
    problem = config.check_dataset_names([s.name for s in sources])
    if problem:
        raise DataError(problem)
    eval_name = config.eval.dataset if config.eval is not None else None
    uses, read = [], {}
    digest = hashlib.sha256()
    for source in sources:
        settings = config.dataset_settings(source.name)
        role = "eval" if source.name == eval_name else "train" if settings.weight > 0 else "unused"
        use = DatasetUse(source.name, role, settings.weight)
        if role != "unused":
            examples, use.report = read_dataset(source.folders, settings, config.instruction, label=source.name)
            read[source.name] = examples
            digest.update(f"{source.name}\0{len(examples)}\0".encode())
            for e in examples:
                digest.update(example_digest(e).encode())
        uses.append(use)
    train, held = _hold_out(uses, read, config)
    evaluation = held + (read[eval_name] if eval_name else [])
    if config.eval is not None:
        evaluation = _cap(evaluation, config.eval.max_examples, config.seed)
        if not evaluation:
            raise DataError("train.eval.fraction holds out no row: every training dataset has a single row; "
                            "use eval.dataset, or remove eval")
    mixture = _mix(uses, train, config.seed)
    if not mixture:
        raise DataError("train.datasets weights leave no training example (weight x rows rounds to 0): raise a weight")
    return RunData(mixture, evaluation, uses, digest.hexdigest())


def example_digest(e: Example) -> str:
    """What the example trains on: its chat and its images' bytes (by sha256)."""
    text = json.dumps([e.messages, [i.digest for i in e.images]], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _hold_out(uses: list[DatasetUse], read: dict[str, list[Example]], config) -> tuple[dict[str, list[Example]], list[Example]]:
    """{dataset: rows left for training}, and the rows held out for evaluation (eval.fraction)."""
    fraction = config.eval.fraction if config.eval is not None else None
    train: dict[str, list[Example]] = {}
    held: list[Example] = []
    for use in uses:
        if use.role != "train":
            if use.role == "eval":
                use.eval = len(read[use.name])
            continue
        rows = read[use.name]
        if not fraction or len(rows) < 2:
            train[use.name] = rows
            continue
        k = min(max(1, round(fraction * len(rows))), len(rows) - 1)
        out = set(random.Random(f"{config.seed}:eval:{use.name}").sample(range(len(rows)), k))
        held += [e for i, e in enumerate(rows) if i in out]
        train[use.name] = [e for i, e in enumerate(rows) if i not in out]
        use.eval = k
    return train, held


def _mix(uses: list[DatasetUse], train: dict[str, list[Example]], seed: int) -> list[Example]:
    out: list[Example] = []
    for use in uses:
        if use.name not in train:
            continue
        rows = train[use.name]
        whole, extra = repeat_counts(use.weight, len(rows))
        picked = sorted(random.Random(f"{seed}:mix:{use.name}").sample(range(len(rows)), extra)) if extra else []
        part = rows * whole + [rows[i] for i in picked]
        use.train = len(part)
        out += part
    return out


def _cap(rows: list[Example], limit: int | None, seed: int) -> list[Example]:
    if limit is None or len(rows) <= limit:
        return rows
    keep = sorted(random.Random(f"{seed}:eval-cap").sample(range(len(rows)), limit))
    return [rows[i] for i in keep]
