"""`shopmail report`: what each flow earned, led by the figures a shop lives by — human click rate,
placed-order rate and revenue per recipient (RPR) per flow, step and variant, and what each variant
adds over its holdout (conversions and revenue, with 95 % intervals) — with the attribution window
printed next to them. Opens are shown split human/machine; conversions and revenue come from human
touches only. Against the holdout the unit is the customer, from their first send in the experiment.
Outputs: a rich terminal table, CSV, JSON and a PNG chart (RPR per flow and currency, lift with
interval bars, one money panel per currency). Reads the live topics or Avro files written by `shopmail export`."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from streams.analytics.attribution import HOLDOUT, Attribution, Row, holdout_rule, window_label
from streams.analytics.experiments import UNIT, Lift, lifts
from streams.config import Settings

SOURCES = {"commands": "command", "outcomes": "outcome", "feedback": "feedback", "orders": "order"}


class EmptyReport(ValueError):
    """The input holds nothing to report on (no file, no topic records, no email sent in the range)."""


@dataclass
class Inputs:
    """Records read per kind (command, outcome, feedback, order) and those that could not be read."""

    where: str
    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    unreadable: int = 0

    def counts(self) -> dict[str, int]:
        out = {kind: 0 for kind in SOURCES.values()}
        for kind, _ in self.records:
            out[kind] += 1
        return out


@dataclass
class Report:
    window: str  # the attribution model and window, e.g. "last click, 5 days"
    rows: list[Row]  # per flow, step and variant (and day with by_day)
    flows: list[Row]  # per flow, every variant but the holdout
    experiments: list[Lift]  # each variant against its experiment's holdout, per customer (over all days)
    engagement: dict[str, dict[str, int]]  # "opened"/"clicked" → signal or "signal:reason" → records
    settings: dict[str, Any]
    unreadable: int = 0
    holdout_rule: str = ""  # how variants are set against the holdout (intent to treat, the window)


def read_topics(settings: Settings, bootstrap: str, progress: Any = None) -> Inputs:
    """``progress(topic)`` → a ``(read, total)`` callback for that topic's read (a progress bar)."""
    from streams.kafka.io import read_topic

    inputs = Inputs(f"the topics at {bootstrap}" + (f" (prefix {settings.topics.prefix!r})"
                                                   if settings.topics.prefix else ""))
    for logical, kind in SOURCES.items():
        name = settings.topics.name(logical)
        for r in read_topic(bootstrap, name, idle_s=0, timeout_s=120, kafka=settings.kafka,
                            progress=progress(name) if progress else None):
            try:
                inputs.records.append((kind, r.decoded().record))
            except Exception:  # noqa: BLE001 - counted and shown; the record itself is the DLQ's business
                inputs.unreadable += 1
    return inputs


def read_avro_dir(settings: Settings, directory: Path) -> Inputs:
    from schemas.logical import read_export

    if not directory.is_dir():
        raise EmptyReport(f"{directory} is not a directory (write one with `shopmail export --out DIR`)")
    inputs = Inputs(str(directory))
    found = False
    for logical, kind in SOURCES.items():
        path = directory / f"{settings.topics.name(logical)}.avro"
        if path.exists():
            found = True
            try:
                with open(path, "rb") as f:
                    inputs.records.extend((kind, rec) for rec in read_export(f))
            except (ValueError, OSError, EOFError) as exc:
                raise EmptyReport(f"{path} is not an Avro container file: {exc}") from exc
    if not found:
        names = ", ".join(f"{settings.topics.name(t)}.avro" for t in SOURCES)
        raise EmptyReport(f"{directory} holds none of {names} (the Avro exports report reads): it holds "
                          f"{_what_it_holds(directory)}")
    return inputs


def _what_it_holds(directory: Path) -> str:
    """What a directory without the Avro exports holds instead, in words (e.g. only Parquet exports)."""
    found = sorted(p.name for p in directory.iterdir() if p.is_file())
    parquet = [n for n in found if n.endswith(".parquet")]
    if parquet:
        return f"only Parquet files ({_some(parquet)}): write the Avro ones with " \
               f"`shopmail export --format avro --out {directory}`"
    if found:
        return f"{len(found)} other file(s) ({_some(found)})"
    return "nothing (an empty directory)"


def _some(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def from_avro_dir(settings: Settings, directory: Path) -> Attribution:
    return Attribution(settings.metrics).feed(read_avro_dir(settings, directory).records)


def merge(rows: Iterable[Row], flow: str, step: int = 0, variant: str = "all", day: str = "all",
          currency: str = "") -> Row:
    """One row summing ``rows`` (counts, revenue and its sums of squares), all of one currency."""
    out = Row(flow, step, variant, day, currency)
    for r in rows:
        for f in fields(Row):
            if f.name not in ("flow", "step", "variant", "day", "currency"):
                setattr(out, f.name, getattr(out, f.name) + getattr(r, f.name))
    return out


def per_flow(rows: list[Row]) -> list[Row]:
    """Each flow over its steps and variants, per currency, the holdout left out (it received nothing)."""
    flows: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        if r.variant != HOLDOUT:
            flows.setdefault((r.flow, r.currency), []).append(r)
    return [merge(rs, flow, currency=currency) for (flow, currency), rs in sorted(flows.items())]


def build(attribution: Attribution, by_day: bool = False, inputs: Inputs | None = None) -> Report:
    """The report of an attribution; ``EmptyReport`` when no email was sent or held back in it."""
    rows = attribution.table(by_day=by_day)
    if not any(r.sent for r in rows):
        message = "no email sent or held back" + (f" in {inputs.where}" if inputs else "") + ": nothing to attribute"
        if inputs:
            read = ", ".join(f"{kind}s {n:,}" for kind, n in inputs.counts().items())
            message += f" (records read: {read}" + (f"; {inputs.unreadable:,} unreadable)" if inputs.unreadable
                                                    else ")")
        raise EmptyReport(message)
    all_days = rows if not by_day else attribution.table()
    engagement: dict[str, dict[str, int]] = {"opened": {}, "clicked": {}}
    for (kind, signal, reason), n in sorted(attribution.engagement.items()):
        key = f"{signal}:{reason}" if reason else signal
        engagement[kind][key] = engagement[kind].get(key, 0) + n
    s = attribution.settings
    return Report(window_label(s), rows, per_flow(all_days), lifts(attribution), engagement,
                  {"click_window_ms": s.click_window_ms, "open_window_ms": s.open_window_ms,
                   "attribute_opens": s.attribute_opens},
                  inputs.unreadable if inputs else 0, holdout_rule(s))


# ---- terminal -------------------------------------------------------------------------------------

def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _money(x: Decimal | float) -> str:
    return f"{x:,.2f}"


NO_ORDERS = "no orders in either group"


def _interval(est: float, lo: float, hi: float, fmt: str = "{:+,.2f}", unit: str = "",
              significant: bool = False, no_orders: bool = False) -> Text:
    """The estimate, and its interval on a second line (n/a when a group has no customers or neither
    has a variance; "no orders in either group" when neither ordered); plain text, so the brackets are
    never read as markup."""
    mark = " *" if significant else ""
    if no_orders:
        return Text(f"n/a\n({NO_ORDERS})")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return Text(f"{fmt.format(est)}{unit}\n[n/a]")
    return Text(f"{fmt.format(est)}{unit}{mark}\n[{fmt.format(lo)}, {fmt.format(hi)}]")


def _opens(r: Row) -> str:
    return f"{_pct(r.rate(r.human_opened))} / {_pct(r.rate(r.machine_opened))}"


def _table(title: str, key: str, columns: Iterable[str]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", header_style="bold", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    table.add_column(key, overflow="fold")
    for name in columns:
        table.add_column(name, justify="right")
    return table


LEAD = ("sent", "human\nclick", "placed order\n(last click)", "RPR\n(last click)", "revenue\n(last click)", "cur",
        "ordered in window\n(any, per command)", "opens\nhuman / machine", "bot\nclicks")


def _currency(code: str) -> str:
    return code or "–"


def _lead_cells(r: Row) -> list[str]:
    return [f"{r.sent:,}", _pct(r.rate(r.human_clicked)), _pct(r.rate(r.converted)), _money(r.rpr),
            _money(r.revenue), _currency(r.currency), _pct(r.ordered_rate), _opens(r), f"{r.bot_clicked:,}"]


def _key(flow: str, step: int, variant: str, day: str = "all") -> str:
    return f"{flow} · {_step(step)} · {variant}" + (f" · {day}" if day != "all" else "")


def _step(step: int) -> str:
    """A step, or "all steps" for a flow-wide experiment (step 0)."""
    return str(step) if step else "all steps"


def print_report(console: Console, report: Report) -> None:
    console.print(Text.assemble(
        (f"Attribution: {report.window}.", "bold"),
        " Placed order, RPR and revenue are last-click attributed: orders after a human click (or that the "
        "shop attributes itself), per recipient (sent; for the holdout: held back). Against the holdout: "
        f"{report.holdout_rule}. Money is per currency, never added across currencies: a currency's row "
        "holds only its orders (placed order, revenue, ordered in window); sent and the other counts are the "
        "flow's, all currencies, repeated on each of its currency rows."))
    flows = _table("Per flow (holdout excluded)", "flow", LEAD)
    for r in report.flows:
        flows.add_row(r.flow, *_lead_cells(r))
    console.print(flows)
    detail = _table("Attribution by flow, step and variant", "flow · step · variant",
                    LEAD + ("unsub / bounce /\ncomplaint",))
    for r in report.rows:
        detail.add_row(_key(r.flow, r.step, r.variant, r.day), *_lead_cells(r),
                       f"{r.unsubscribes} / {r.bounces} / {r.complaints}",
                       style="dim" if r.variant == HOLDOUT else None)
    console.print(detail)
    if report.experiments:
        t = _table(f"Experiments vs holdout: what the mail added (intent to treat, unit: {UNIT}; 95% CI; "
                   "* the interval excludes 0)", "flow · step · variant",
                   ("customers\nvs holdout", "ordered in\nwindow (any)", "lift", "incremental\norders",
                    "revenue per customer\nin window (any)", "cur", "incremental\nper customer",
                    "incremental\nrevenue"))
        for x in report.experiments:
            orders, o_lo, o_hi = x.incremental_conversions
            rev, r_lo, r_hi = x.incremental_revenue
            t.add_row(_key(x.flow, x.step, x.variant), f"{x.n:,} vs {x.control_n:,}",
                      f"{_pct(x.rate)} vs {_pct(x.control_rate)}",
                      _interval(100 * x.diff, 100 * x.ci_low, 100 * x.ci_high, "{:+.1f}", " pp", x.significant,
                                x.no_orders),
                      _interval(orders, o_lo, o_hi, "{:+,.1f}", no_orders=x.no_orders),
                      f"{_money(x.rpr)} vs {_money(x.control_rpr)}", _currency(x.currency),
                      _interval(x.rpr_diff, x.rpr_ci_low, x.rpr_ci_high, significant=x.revenue_significant,
                                no_orders=x.no_orders),
                      _interval(rev, r_lo, r_hi, significant=x.revenue_significant, no_orders=x.no_orders))
        console.print(t)
    elif any(r.variant == HOLDOUT for r in report.rows):
        console.print("Only held-back customers in this range: no variant of their steps was assigned here, so "
                      "nothing to set against the holdout and no incremental figures.")
    else:
        console.print("No held-back control group in this range, so no incremental figures "
                      "(an experiment's share in flows.experiments sets one).")
    parts = []
    for kind, label in (("opened", "opens"), ("clicked", "clicks")):
        counts = report.engagement.get(kind, {})
        if counts:
            parts.append(f"{label}: " + ", ".join(f"{k} {n:,}" for k, n in counts.items()))
    if parts:
        console.print(Text("Engagement records by verdict — " + " · ".join(parts)))
    if report.unreadable:
        console.print(f"[yellow]{report.unreadable:,} records could not be decoded and were left out[/yellow]")


# ---- files ----------------------------------------------------------------------------------------

def _lift_columns(report: Report) -> dict[tuple[str, int, str, str], dict[str, Any]]:
    out = {}
    for x in report.experiments:
        d = x.as_dict()
        out[(x.flow, x.step, x.variant, x.currency)] = {
            "lift_unit": UNIT, "lift_experiment_step": x.step, "lift_customers": x.n,
            "lift_holdout_customers": x.control_n, "lift_no_orders": x.no_orders,
            "lift_pp": None if d["diff"] is None else round(100 * d["diff"], 2),
            "lift_pp_ci_low": None if d["ci_low"] is None else round(100 * d["ci_low"], 2),
            "lift_pp_ci_high": None if d["ci_high"] is None else round(100 * d["ci_high"], 2),
            **{k: d[k] for k in ("incremental_conversions", "incremental_conversions_ci_low",
                                 "incremental_conversions_ci_high")},
            "incremental_rpr": None if d["rpr_diff"] is None else round(d["rpr_diff"], 4),
            "incremental_rpr_ci_low": None if d["rpr_ci_low"] is None else round(d["rpr_ci_low"], 4),
            "incremental_rpr_ci_high": None if d["rpr_ci_high"] is None else round(d["rpr_ci_high"], 4),
            **{k: d[k] for k in ("incremental_revenue", "incremental_revenue_ci_low", "incremental_revenue_ci_high")}}
    return out


LIFT_COLUMNS = ("lift_unit", "lift_experiment_step", "lift_customers", "lift_holdout_customers", "lift_no_orders",
                "lift_pp", "lift_pp_ci_low", "lift_pp_ci_high", "incremental_conversions",
                "incremental_conversions_ci_low", "incremental_conversions_ci_high", "incremental_rpr",
                "incremental_rpr_ci_low", "incremental_rpr_ci_high", "incremental_revenue",
                "incremental_revenue_ci_low", "incremental_revenue_ci_high")


def row_dicts(report: Report) -> Iterator[dict[str, Any]]:
    """Each row with its lift over the holdout (empty without one; over the whole range, also in rows of
    one day; a flow-wide experiment's on each of its steps' rows: ``lift_experiment_step`` 0), the
    attribution window and the holdout comparison's rule."""
    lift = _lift_columns(report)
    for r in report.rows:
        d = r.as_dict()
        d.update(lift.get((r.flow, r.step, r.variant, r.currency)) or lift.get((r.flow, 0, r.variant, r.currency))
                 or dict.fromkeys(LIFT_COLUMNS))
        d["counts_of"] = COUNTS_OF
        d["attribution"] = report.window
        d["holdout_comparison"] = report.holdout_rule
        yield d


def csv_dicts(report: Report) -> Iterator[dict[str, Any]]:
    """What the JSON holds, as one table: ``level`` "flow" (per flow, holdout excluded), "row" (per flow,
    step and variant) and "verdict" (engagement records by verdict: ``verdict``, ``records``)."""
    rows = list(row_dicts(report))
    columns = ["level", *rows[0], "verdict", "records"]
    blank = dict.fromkeys(columns)
    for r in report.flows:
        yield blank | r.as_dict() | {"level": "flow", "attribution": report.window, "counts_of": COUNTS_OF,
                                     "holdout_comparison": report.holdout_rule}
    for d in rows:
        yield blank | d | {"level": "row"}
    for kind, counts in report.engagement.items():
        for verdict, n in counts.items():
            yield blank | {"level": "verdict", "verdict": f"{kind}:{verdict}", "records": n}


def write_csv(report: Report, path: Path) -> None:
    dicts = list(csv_dicts(report))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dicts[0]))
        writer.writeheader()
        writer.writerows(dicts)


FIGURES = {
    "converted, placed_order_rate, revenue, rpr": "last-click attributed: orders after a human click (or naming "
                                                  "the mail), rates and RPR per recipient (sent)",
    "assigned, ordered, ordered_rate, revenue_in_window, rpr_in_window": "per command: every order within the "
                                                                         "window after the (would-be) send; not what "
                                                                         "experiments compare",
    "experiments, lift_*, incremental_*": f"intent to treat, unit: {UNIT} (one per customer and experiment, "
                                          "whatever their number of commands); n, conversions and revenue per "
                                          "customer of each arm; null intervals: none computable (no_orders: "
                                          "no orders in either group)",
    "currency": "every amount of a row is in its currency, and its orders (converted, ordered) are those in "
                "its currency only",
    "sent, assigned, delivered, opens, clicks, unsubscribes, bounces, complaints": "the flow step's, all "
                                                                                  "currencies: repeated on each "
                                                                                  "currency's row (counts_of), "
                                                                                  "never sum them across currencies",
}
COUNTS_OF = "sent, assigned and engagement counts: the flow step's, all currencies (repeated on each currency's row)"


def write_json(report: Report, path: Path) -> None:
    doc: dict[str, Any] = {"attribution": {"model": report.window, **report.settings,
                                           "holdout_comparison": report.holdout_rule, "figures": FIGURES},
                           "flows": [r.as_dict() for r in report.flows], "rows": list(row_dicts(report)),
                           "experiments": [x.as_dict() for x in report.experiments],
                           "engagement": report.engagement, "unreadable_records": report.unreadable}
    path.write_text(json.dumps(doc, indent=2))


def split_intervals(values: list[tuple[float, float, float]]) -> tuple[list[tuple[int, float, float, float]],
                                                                         list[tuple[int, float]]]:
    """Chart points: (index, estimate, low, high) of those with an interval, (index, estimate) of those
    without one (a group without recipients)."""
    with_ci = [(i, est, lo, hi) for i, (est, lo, hi) in enumerate(values) if math.isfinite(lo) and math.isfinite(hi)]
    without = [(i, est) for i, (est, lo, hi) in enumerate(values) if not (math.isfinite(lo) and math.isfinite(hi))]
    return with_ci, without


def chart_currencies(report: Report) -> list[str]:
    """The chart's money panels: one per currency (RPR per flow, incremental revenue per customer), so
    no axis ever holds two currencies."""
    return sorted({r.currency for r in report.flows} | {x.currency for x in report.experiments}) or [""]


def write_chart(report: Report, path: Path) -> None:
    from streams.extras import require

    matplotlib = require("matplotlib", "a PNG chart")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flows, exps = report.flows, report.experiments
    currencies = chart_currencies(report)
    # one panel per currency for money (never two currencies on one axis) and one for the order-rate lift
    fig, axes = plt.subplots(1, 1 + 2 * len(currencies), figsize=(6 + 5 * len(currencies), 5), squeeze=False)
    axes = axes[0]
    fig.suptitle(f"Attribution: {report.window} (RPR) · vs holdout: {report.holdout_rule}", fontsize=8)
    panels: list[tuple[Any, str, str, list[tuple[float, float, float]], list[str]]] = [
        (axes[0], "Ordered-in-window lift vs holdout (95% CI)", "order rate lift (pp), per customer",
         [(100 * x.diff, 100 * x.ci_low, 100 * x.ci_high) for x in exps],  # a share: currencies side by side
         [f"{x.flow}/{_step(x.step)}\n{x.variant}" + (f"\norders in {_currency(x.currency)}"
                                                     if len(currencies) > 1 else "") for x in exps])]
    for k, currency in enumerate(currencies):
        ax = axes[1 + k]
        mine = [r for r in flows if r.currency == currency]
        bars = ax.bar(range(len(mine)), [float(r.rpr) for r in mine], color="#3a7bd5")
        ax.bar_label(bars, labels=[f"{_money(r.rpr)} {r.currency}".strip() for r in mine], fontsize=7)
        ax.set_xticks(range(len(mine)), [r.flow for r in mine], fontsize=7, rotation=30, ha="right")
        ax.set_ylabel(f"revenue per recipient, last click ({_currency(currency)})")
        ax.set_title(f"RPR per flow, {_currency(currency)} (holdout excluded)")
        in_currency = [x for x in exps if x.currency == currency]
        panels.append((axes[1 + len(currencies) + k], f"Incremental revenue per customer\n{_currency(currency)} "
                       "(95% CI)", f"revenue per customer over holdout ({_currency(currency)})",
                       [(x.rpr_diff, x.rpr_ci_low, x.rpr_ci_high) for x in in_currency],
                       [f"{x.flow}/{_step(x.step)}\n{x.variant}" for x in in_currency]))
    for ax, title, unit, values, ticks in panels:
        ax.set_title(title, fontsize=9)
        ax.axhline(0, color="#666666", linewidth=0.8)
        if not values:
            ax.text(0.5, 0.5, "no holdout in this range", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            continue
        with_ci, without = split_intervals(values)
        ax.errorbar([i for i, *_ in with_ci], [est for _, est, _, _ in with_ci],
                    yerr=[[est - lo for _, est, lo, _ in with_ci], [hi - est for _, est, _, hi in with_ci]],
                    fmt="o", color="#3a7bd5", ecolor="#3a7bd5", capsize=5)
        for i, est in without:
            ax.plot([i], [est], marker="o", color="#999999")
            ax.annotate("no interval", (i, est), textcoords="offset points", xytext=(0, 8), ha="center",
                        fontsize=7, color="#666666")
        ax.set_xticks(range(len(ticks)), ticks, fontsize=7)
        ax.set_xlim(-0.7, len(ticks) - 0.3)
        ax.set_ylabel(unit)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def demo_report(console: Console, settings: Settings, bootstrap: str, work: Path) -> None:
    """The demo's closing report: tables + chart under the demo's work directory."""
    inputs = read_topics(settings, bootstrap)
    try:
        report = build(Attribution(settings.metrics).feed(inputs.records), inputs=inputs)
    except EmptyReport as exc:
        console.print(f"[red]report: {exc}[/red]")
        return
    print_report(console, report)
    chart = work / "report.png"
    write_chart(report, chart)
    console.print(f"chart: {chart}")
