"""Experiment lift with a confidence interval: each variant's conversion rate against the holdout.

Method: difference of two proportions with a Wald 95 % interval
``(p_v − p_c) ± 1.96·sqrt(p_v(1−p_v)/n_v + p_c(1−p_c)/n_c)``; relative lift = (p_v − p_c)/p_c. Chosen
because it is what marketers read in Klaviyo/Braze-style reports and needs no priors; it is only
reliable with enough conversions on both sides (the report shows n and conversions so small samples
are visible), and an interval that contains 0 means "no measurable lift yet".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from streams.analytics.attribution import HOLDOUT, Row

Z95 = 1.959964


@dataclass
class Lift:
    flow: str
    step: int
    variant: str
    n: int
    conversions: int
    rate: float
    control_n: int
    control_conversions: int
    control_rate: float
    diff: float
    ci_low: float
    ci_high: float
    relative_lift: float | None

    @property
    def significant(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0


def two_proportion(conv_v: int, n_v: int, conv_c: int, n_c: int) -> tuple[float, float, float]:
    p_v = conv_v / n_v if n_v else 0.0
    p_c = conv_c / n_c if n_c else 0.0
    se = math.sqrt(p_v * (1 - p_v) / n_v + p_c * (1 - p_c) / n_c) if n_v and n_c else float("inf")
    diff = p_v - p_c
    return diff, diff - Z95 * se, diff + Z95 * se


def lifts(rows: list[Row]) -> list[Lift]:
    """For every (flow, step) that has a holdout row: each variant against it."""
    by_step: dict[tuple[str, int], dict[str, Row]] = {}
    for r in rows:
        by_step.setdefault((r.flow, r.step), {})[r.variant] = r
    out = []
    for (flow, step), variants in sorted(by_step.items()):
        control = variants.get(HOLDOUT)
        if control is None:
            continue
        for name, r in sorted(variants.items()):
            if name == HOLDOUT:
                continue
            diff, lo, hi = two_proportion(r.converted, r.sent, control.converted, control.sent)
            p_c = control.converted / control.sent if control.sent else 0.0
            out.append(Lift(flow, step, name, r.sent, r.converted, r.rate(r.converted), control.sent,
                            control.converted, p_c, diff, lo, hi, diff / p_c if p_c else None))
    return out
