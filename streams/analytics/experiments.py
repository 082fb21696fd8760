"""What each variant adds over its holdout: conversion and revenue, each with a 95 % confidence interval.

The unit is the **customer, from their first send in the experiment** (intent to treat). A
customer's arm is fixed for an experiment (``variants.assign`` hashes the customer with the
experiment), so each customer counts once in their arm: their exposure starts at their first
(would-be) send in it — a variant's suppressed or failed command included, as the arm is drawn
before any of that — and they "converted" when they placed an order after it and within the
attribution window, clicked or not; their revenue is those orders'. How many commands a customer
got does not weigh: the arm itself changes which commands are made (a mailed customer's second
cart does not restart the flow, a held-back one's does), so counting commands would show a lift
where the mail does nothing. Last-click attributed figures credit the mail for orders after a click
and are never set against the holdout, which cannot click.

An experiment is one (flow, step); a flow whose holdout appears at several steps with one arm per
customer across them is one flow-wide experiment (``step`` 0, every step: the configuration's
``step = 0``), its exposure the customer's first send at any step.

Money is per currency: the comparison for a currency counts the customers' orders in that currency
(conversions and revenue); the number of customers in each arm is the experiment's.

Conversion: difference of two proportions with a Wald interval
``(p_v − p_c) ± 1.96·sqrt(p_v(1−p_v)/n_v + p_c(1−p_c)/n_c)``; relative lift = (p_v − p_c)/p_c. Chosen
because it is what marketers read in Klaviyo/Braze-style reports and needs no priors; it is only
reliable with enough conversions on both sides (the report shows n and conversions so small samples
are visible), and an interval that contains 0 means "no measurable lift yet". Without a variance on
either side (no orders in either group, or every customer ordered in both) there is no interval
(n/a), never a zero-width one.

Revenue: difference of the mean revenue per customer of the two arms (revenue of their orders in
the window) with Welch's normal interval ``(m_v − m_c) ± 1.96·sqrt(s²_v/n_v + s²_c/n_c)`` over each
customer's revenue in the window (0 for most). **Incremental** conversions and revenue are those
differences times the variant's customers: what the mail earned beyond what the same customers would
have bought without it. Revenue per order is skewed (a few large baskets), so the interval is wider
than the conversion's and needs more customers to exclude 0; a normal interval of a mean is still
sound at the sizes where a shop reads it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from streams.analytics.attribution import HOLDOUT, Attribution

Z95 = 1.959964
UNIT = "customers, from their first send in the experiment"
NAN = float("nan")


@dataclass
class Lift:
    flow: str
    step: int  # 0: every step of the flow (one flow-wide experiment)
    variant: str
    n: int  # customers in the variant's arm (from their first send in the experiment)
    conversions: int  # …who ordered (in ``currency``) within the window after it
    rate: float
    control_n: int
    control_conversions: int
    control_rate: float
    diff: float
    ci_low: float
    ci_high: float
    relative_lift: float | None
    rpr: float = 0.0  # revenue of the orders in the window per customer of the arm (not the last-click RPR)
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
    def no_orders(self) -> bool:
        """Neither arm ordered: nothing to compare (the intervals are n/a)."""
        return self.conversions == 0 and self.control_conversions == 0

    @property
    def incremental_conversions(self) -> tuple[float, float, float]:
        """(estimate, low, high): orders beyond the holdout's rate, over the variant's customers."""
        return self.diff * self.n, self.ci_low * self.n, self.ci_high * self.n

    @property
    def incremental_revenue(self) -> tuple[float, float, float]:
        """(estimate, low, high): revenue beyond the holdout's, over the variant's customers."""
        return self.rpr_diff * self.n, self.rpr_ci_low * self.n, self.rpr_ci_high * self.n

    def as_dict(self) -> dict[str, Any]:
        conv, conv_lo, conv_hi = self.incremental_conversions
        rev, rev_lo, rev_hi = self.incremental_revenue
        doc = {JSON_NAMES.get(k, k): (v if not isinstance(v, float) or math.isfinite(v) else None)
               for k, v in asdict(self).items()}
        return doc | {
            "unit": UNIT, "no_orders": self.no_orders, "significant": self.significant, "revenue_significant": self.revenue_significant,
            "incremental_conversions": _round(conv), "incremental_conversions_ci_low": _round(conv_lo),
            "incremental_conversions_ci_high": _round(conv_hi), "incremental_revenue": _round(rev),
            "incremental_revenue_ci_low": _round(rev_lo), "incremental_revenue_ci_high": _round(rev_hi)}


# in JSON the window figures per customer are not called ``rpr``: there ``rpr`` is the last-click revenue per
# mail sent of the flows and rows
JSON_NAMES = {"rpr": "revenue_per_customer", "control_rpr": "control_revenue_per_customer"}


def _round(x: float) -> float | None:
    """Two decimals; None for an interval that cannot be computed (a group without customers or variance)."""
    return round(x, 2) if math.isfinite(x) else None


def _around(diff: float, se: float) -> tuple[float, float, float]:
    """The estimate and its 95 % interval; NaN bounds when there is none (no group or no variance)."""
    if not math.isfinite(se) or se == 0:
        return diff, NAN, NAN
    return diff, diff - Z95 * se, diff + Z95 * se


def two_proportion(conv_v: int, n_v: int, conv_c: int, n_c: int) -> tuple[float, float, float]:
    """Difference of two proportions with its Wald 95 % interval; no interval (NaN) without a group or
    without variance in either (0 of n vs 0 of m: "no orders in either group")."""
    p_v = conv_v / n_v if n_v else 0.0
    p_c = conv_c / n_c if n_c else 0.0
    se = math.sqrt(p_v * (1 - p_v) / n_v + p_c * (1 - p_c) / n_c) if n_v and n_c else float("inf")
    return _around(p_v - p_c, se)


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
    return _around(m_v - m_c, se)


@dataclass
class Unit:
    """One customer in one experiment: their arm, their first (would-be) send in it and the revenue of
    their orders within the window after it, per currency (a currency present: they ordered in it)."""

    variant: str
    first_send: int
    revenue: dict[str, Decimal] = field(default_factory=dict)


def flow_wide(attribution: Attribution) -> set[str]:
    """Flows whose holdout spans several steps with one arm per customer: one flow-wide experiment."""
    holdout_steps: dict[str, set[int]] = {}
    arms: dict[tuple[str, str], set[str]] = {}
    for cmd in attribution.commands.values():
        if cmd.variant == HOLDOUT:
            holdout_steps.setdefault(cmd.flow, set()).add(cmd.step)
        arms.setdefault((cmd.flow, cmd.customer), set()).add(cmd.variant)
    wide = {flow for flow, steps in holdout_steps.items() if len(steps) > 1}
    return wide - {flow for (flow, _), variants in arms.items() if len(variants) > 1}


def units(attribution: Attribution) -> dict[tuple[str, int], dict[str, Unit]]:
    """(flow, step; 0 for a flow-wide experiment) → customer → their unit. A customer's arm is that of
    their first command in the experiment (it is fixed per customer; a later one differs only when the
    configuration changed within the range)."""
    wide = flow_wide(attribution)
    out: dict[tuple[str, int], dict[str, Unit]] = {}
    for cmd in attribution.commands.values():
        customers = out.setdefault((cmd.flow, 0 if cmd.flow in wide else cmd.step), {})
        unit = customers.get(cmd.customer)
        if unit is None or cmd.send_at < unit.first_send:
            customers[cmd.customer] = Unit(cmd.variant, cmd.send_at)
    window = attribution.settings.click_window_ms
    for customers in out.values():
        for customer, unit in customers.items():
            for at, currency, total in attribution.orders.get(customer, ()):
                if 0 < at - unit.first_send <= window:  # after: not the order that triggered the flow
                    unit.revenue[currency] = unit.revenue.get(currency, Decimal("0")) + total
    return out


@dataclass
class _Arm:
    n: int = 0
    conversions: int = 0
    revenue: float = 0.0
    sumsq: float = 0.0

    @property
    def rate(self) -> float:
        return self.conversions / self.n if self.n else 0.0

    @property
    def rpr(self) -> float:
        return self.revenue / self.n if self.n else 0.0


def lifts(attribution: Attribution) -> list[Lift]:
    """For every experiment with a holdout arm: each variant against it, one unit per customer from
    their first send in the experiment, once per currency of the orders in the window (conversions and
    revenue of that currency; a flow without such orders gets the input's only currency, or "")."""
    fallback = sorted(attribution.currencies) if len(attribution.currencies) == 1 else [""]
    out = []
    for (flow, step), customers in sorted(units(attribution).items()):
        if not any(u.variant == HOLDOUT for u in customers.values()):
            continue
        currencies = sorted({c for u in customers.values() for c in u.revenue}) or fallback
        for currency in currencies:
            arms: dict[str, _Arm] = {}
            for u in customers.values():
                arm = arms.setdefault(u.variant, _Arm())
                money = float(u.revenue.get(currency, 0))
                arm.n += 1
                arm.conversions += currency in u.revenue
                arm.revenue += money
                arm.sumsq += money * money
            control = arms[HOLDOUT]
            for name, arm in sorted(arms.items()):
                if name == HOLDOUT:
                    continue
                diff, lo, hi = two_proportion(arm.conversions, arm.n, control.conversions, control.n)
                rdiff, rlo, rhi = two_means(arm.revenue, arm.sumsq, arm.n, control.revenue, control.sumsq, control.n)
                out.append(Lift(flow, step, name, arm.n, arm.conversions, arm.rate, control.n, control.conversions,
                                control.rate, diff, lo, hi, diff / control.rate if control.rate else None,
                                round(arm.rpr, 4), round(control.rpr, 4), rdiff, rlo, rhi, currency))
    return out
