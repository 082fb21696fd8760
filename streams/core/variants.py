"""A/B variants and holdouts, assigned deterministically by hash(customer_id, experiment).

The same customer always lands in the same bucket of an experiment, so replays are stable and the
metrics side can recompute who was held out (``assign`` is the single source of truth for both).
"""

from __future__ import annotations

import hashlib

from streams.config import Experiment

HOLDOUT = "holdout"
CONTROL = "control"


def bucket(customer_id: str, experiment: str) -> float:
    """A uniform number in [0, 1) fixed per (customer, experiment)."""
    digest = hashlib.sha256(f"{experiment}\x1f{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(customer_id: str, experiment: Experiment) -> str:
    """``holdout`` for the holdout share, else a variant name drawn by the configured weights."""
    u = bucket(customer_id, experiment.name)
    if u < experiment.holdout:
        return HOLDOUT
    if not experiment.variants:
        return CONTROL
    u = (u - experiment.holdout) / (1 - experiment.holdout) if experiment.holdout < 1 else 0.0
    total = sum(experiment.variants.values())
    acc = 0.0
    for name, weight in sorted(experiment.variants.items()):
        acc += weight / total
        if u < acc:
            return name
    return sorted(experiment.variants)[-1]


def experiment_for(experiments: list[Experiment], flow: str, step: int) -> Experiment | None:
    for exp in experiments:
        if exp.flow == flow and exp.step in (0, step):
            return exp
    return None
