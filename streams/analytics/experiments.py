"""What each variant adds over its holdout: conversion and revenue, each with a 95 % confidence interval.

Conversion: difference of two proportions with a Wald interval
``(p_v − p_c) ± 1.96·sqrt(p_v(1−p_v)/n_v + p_c(1−p_c)/n_c)``; relative lift = (p_v − p_c)/p_c. Chosen
because it is what marketers read in Klaviyo/Braze-style reports and needs no priors; it is only
reliable with enough conversions on both sides (the report shows n and conversions so small samples
are visible), and an interval that contains 0 means "no measurable lift yet".

Revenue: difference of the mean revenue per recipient (RPR) of the two groups with Welch's normal
interval ``(m_v − m_c) ± 1.96·sqrt(s²_v/n_v + s²_c/n_c)`` over the revenue of each recipient (0 for
most). **Incremental** conversions and revenue are those differences times the variant's recipients:
what the mail earned beyond what the same customers would have bought without it. Revenue per order
is skewed (a few large baskets), so the interval is wider than the conversion's and needs more
recipients to exclude 0; a normal interval of a mean is still sound at the sizes where a shop reads it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

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
    rpr: float = 0.0
    control_rpr: float = 0.0
    rpr_diff: float = 0.0
    rpr_ci_low: float = 0.0
    rpr_ci_high: float = 0.0

    @property
    def significant(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0

    @property
    def revenue_significant(self) -> bool:
        return self.rpr_ci_low > 0 or self.rpr_ci_high < 0

    @property
    def incremental_conversions(self) -> tuple[float, float, float]:
        """(estimate, low, high): conversions beyond the holdout's rate, over the variant's recipients."""
        return self.diff * self.n, self.ci_low * self.n, self.ci_high * self.n

    @property
    def incremental_revenue(self) -> tuple[float, float, float]:
        """(estimate, low, high): revenue beyond the holdout's RPR, over the variant's recipients."""
        return self.rpr_diff * self.n, self.rpr_ci_low * self.n, self.rpr_ci_high * self.n

    def as_dict(self) -> dict[str, Any]:
        conv, conv_lo, conv_hi = self.incremental_conversions
        rev, rev_lo, rev_hi = self.incremental_revenue
        doc = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in asdict(self).items()}
        return doc | {
            "significant": self.significant, "revenue_significant": self.revenue_significant,
            "incremental_conversions": _round(conv), "incremental_conversions_ci_low": _round(conv_lo),
            "incremental_conversions_ci_high": _round(conv_hi), "incremental_revenue": _round(rev),
            "incremental_revenue_ci_low": _round(rev_lo), "incremental_revenue_ci_high": _round(rev_hi)}


def _round(x: float) -> float | None:
    """Two decimals; None for an interval that cannot be computed (a group without recipients)."""
    return round(x, 2) if math.isfinite(x) else None


def two_proportion(conv_v: int, n_v: int, conv_c: int, n_c: int) -> tuple[float, float, float]:
    p_v = conv_v / n_v if n_v else 0.0
    p_c = conv_c / n_c if n_c else 0.0
    se = math.sqrt(p_v * (1 - p_v) / n_v + p_c * (1 - p_c) / n_c) if n_v and n_c else float("inf")
    diff = p_v - p_c
    return diff, diff - Z95 * se, diff + Z95 * se


def _mean_var(total: float, sumsq: float, n: int) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    mean = total / n
    var = max(0.0, (sumsq - n * mean * mean) / (n - 1)) if n > 1 else 0.0
    return mean, var


def two_means(total_v: float, sumsq_v: float, n_v: int, total_c: float, sumsq_c: float,
              n_c: int) -> tuple[float, float, float]:
    """Difference of two means from (sum, sum of squares, n) with Welch's normal 95 % interval."""
    m_v, var_v = _mean_var(total_v, sumsq_v, n_v)
    m_c, var_c = _mean_var(total_c, sumsq_c, n_c)
    se = math.sqrt(var_v / n_v + var_c / n_c) if n_v and n_c else float("inf")
    diff = m_v - m_c
    return diff, diff - Z95 * se, diff + Z95 * se


def lifts(rows: list[Row]) -> list[Lift]:
    """For every (flow, step) that has a holdout row: each variant against it (rows of one day each, or
    of all days: give ``Attribution.table()`` without ``by_day``)."""
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
            rdiff, rlo, rhi = two_means(float(r.revenue), r.revenue_sumsq, r.sent, float(control.revenue),
                                        control.revenue_sumsq, control.sent)
            out.append(Lift(flow, step, name, r.sent, r.converted, r.rate(r.converted), control.sent,
                            control.converted, p_c, diff, lo, hi, diff / p_c if p_c else None,
                            float(r.rpr), float(control.rpr), rdiff, rlo, rhi))
    return out
