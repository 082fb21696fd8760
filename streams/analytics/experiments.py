"""What each variant adds over its holdout: conversion and revenue, each with a 95 % confidence interval.

Like with like (intent to treat): both groups are every command assigned to them (a variant's
suppressed or failed commands included, as the holdout is drawn before any of that), and in both a
command "converts" when its customer places an order after its (would-be) send and within the
attribution window, clicked or not; its revenue is those orders'. Last-click attributed figures
credit the mail for orders after a click and are never set against the holdout, which cannot click.
Revenue is compared per currency.

Conversion: difference of two proportions with a Wald interval
``(p_v − p_c) ± 1.96·sqrt(p_v(1−p_v)/n_v + p_c(1−p_c)/n_c)``; relative lift = (p_v − p_c)/p_c. Chosen
because it is what marketers read in Klaviyo/Braze-style reports and needs no priors; it is only
reliable with enough conversions on both sides (the report shows n and conversions so small samples
are visible), and an interval that contains 0 means "no measurable lift yet".

Revenue: difference of the mean revenue per recipient of the two groups (revenue of the orders in
the window per assigned command) with Welch's normal interval
``(m_v − m_c) ± 1.96·sqrt(s²_v/n_v + s²_c/n_c)`` over each command's revenue in the window (0 for
most). **Incremental** conversions and revenue are those differences times the variant's assigned
commands: what the mail earned beyond what the same customers would have bought without it. Revenue
per order is skewed (a few large baskets), so the interval is wider than the conversion's and needs
more recipients to exclude 0; a normal interval of a mean is still sound at the sizes where a shop reads it.
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
    n: int  # commands assigned to the variant (intent to treat)
    conversions: int  # …whose customer ordered within the window after the send
    rate: float
    control_n: int
    control_conversions: int
    control_rate: float
    diff: float
    ci_low: float
    ci_high: float
    relative_lift: float | None
    rpr: float = 0.0  # revenue of the orders in the window per assigned command (not the last-click RPR)
    control_rpr: float = 0.0
    rpr_diff: float = 0.0
    rpr_ci_low: float = 0.0
    rpr_ci_high: float = 0.0
    currency: str = ""  # of rpr, control_rpr and the revenue figures

    @property
    def significant(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0

    @property
    def revenue_significant(self) -> bool:
        return self.rpr_ci_low > 0 or self.rpr_ci_high < 0

    @property
    def incremental_conversions(self) -> tuple[float, float, float]:
        """(estimate, low, high): orders beyond the holdout's rate, over the variant's assigned commands."""
        return self.diff * self.n, self.ci_low * self.n, self.ci_high * self.n

    @property
    def incremental_revenue(self) -> tuple[float, float, float]:
        """(estimate, low, high): revenue beyond the holdout's, over the variant's assigned commands."""
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
    """For every (flow, step) that has a holdout row: each variant against it, intent to treat (n: the
    assigned commands; conversions: those with an order in the window; revenue: those orders'), once per
    currency (rows of all days: give ``Attribution.table()`` without ``by_day``)."""
    by_step: dict[tuple[str, int, str], dict[str, Row]] = {}
    for r in rows:
        by_step.setdefault((r.flow, r.step, r.currency), {})[r.variant] = r
    out = []
    for (flow, step, currency), variants in sorted(by_step.items()):
        control = variants.get(HOLDOUT)
        if control is None:
            continue
        for name, r in sorted(variants.items()):
            if name == HOLDOUT:
                continue
            diff, lo, hi = two_proportion(r.ordered, r.assigned, control.ordered, control.assigned)
            p_c = control.ordered_rate
            rdiff, rlo, rhi = two_means(float(r.revenue_in_window), r.revenue_in_window_sumsq, r.assigned,
                                        float(control.revenue_in_window), control.revenue_in_window_sumsq,
                                        control.assigned)
            out.append(Lift(flow, step, name, r.assigned, r.ordered, r.ordered_rate, control.assigned,
                            control.ordered, p_c, diff, lo, hi, diff / p_c if p_c else None,
                            float(r.rpr_in_window), float(control.rpr_in_window), rdiff, rlo, rhi, currency))
    return out
