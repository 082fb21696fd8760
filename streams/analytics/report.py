"""`shopmail report`: what each flow earned, led by the figures a shop lives by — human click rate,
placed-order rate and revenue per recipient (RPR) per flow, step and variant, and what each variant
adds over its holdout (conversions and revenue, with 95 % intervals) — with the attribution window
printed next to them. Opens are shown split human/machine; conversions and revenue come from human
touches only. Outputs: a rich terminal table, CSV, JSON and a PNG chart (RPR per flow, lift with
interval bars). Reads the live topics or Avro files written by `shopmail export`."""

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

from streams.analytics.attribution import HOLDOUT, Attribution, Row, window_label
from streams.analytics.experiments import Lift, lifts
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
    experiments: list[Lift]  # each variant against its step's holdout (over all days)
    engagement: dict[str, dict[str, int]]  # "opened"/"clicked" → signal or "signal:reason" → records
    settings: dict[str, Any]
    unreadable: int = 0


def read_topics(settings: Settings, bootstrap: str, progress: Any = None) -> Inputs:
    """``progress(topic)`` → a ``(read, total)`` callback for that topic's read (a progress bar)."""
    from streams.kafka.io import read_topic

    inputs = Inputs(f"the topics at {bootstrap}" + (f" (prefix {settings.topics.prefix!r})"
                                                   if settings.topics.prefix else ""))
    for logical, kind in SOURCES.items():
        name = settings.topics.name(logical)
        for r in read_topic(bootstrap, name, idle_s=0.5, timeout_s=120, kafka=settings.kafka,
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


def merge(rows: Iterable[Row], flow: str, step: int = 0, variant: str = "all", day: str = "all") -> Row:
    """One row summing ``rows`` (counts, revenue and its sum of squares)."""
    out = Row(flow, step, variant, day)
    for r in rows:
        for f in fields(Row):
            if f.name not in ("flow", "step", "variant", "day"):
                setattr(out, f.name, getattr(out, f.name) + getattr(r, f.name))
    return out


def per_flow(rows: list[Row]) -> list[Row]:
    """Each flow over its steps and variants, the holdout left out (it received nothing)."""
    flows: dict[str, list[Row]] = {}
    for r in rows:
        if r.variant != HOLDOUT:
            flows.setdefault(r.flow, []).append(r)
    return [merge(rs, flow) for flow, rs in sorted(flows.items())]


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
    return Report(window_label(s), rows, per_flow(all_days), lifts(all_days), engagement,
                  {"click_window_ms": s.click_window_ms, "open_window_ms": s.open_window_ms,
                   "attribute_opens": s.attribute_opens},
                  inputs.unreadable if inputs else 0)


# ---- terminal -------------------------------------------------------------------------------------

def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _money(x: Decimal | float) -> str:
    return f"{x:,.2f}"


def _interval(est: float, lo: float, hi: float, fmt: str = "{:+,.2f}", unit: str = "",
              significant: bool = False) -> str:
    """The estimate, and its interval on a second line (n/a when a group has no recipients)."""
    mark = " *" if significant else ""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{fmt.format(est)}{unit}\n[n/a]"
    return f"{fmt.format(est)}{unit}{mark}\n[{fmt.format(lo)}, {fmt.format(hi)}]"


def _opens(r: Row) -> str:
    return f"{_pct(r.rate(r.human_opened))} / {_pct(r.rate(r.machine_opened))}"


def _table(title: str, key: str, columns: Iterable[str]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", header_style="bold", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    table.add_column(key, overflow="fold")
    for name in columns:
        table.add_column(name, justify="right")
    return table


LEAD = ("sent", "human\nclick", "placed\norder", "RPR", "revenue", "opens\nhuman / machine", "bot\nclicks")


def _lead_cells(r: Row) -> list[str]:
    return [f"{r.sent:,}", _pct(r.rate(r.human_clicked)), _pct(r.rate(r.converted)), _money(r.rpr),
            _money(r.revenue), _opens(r), f"{r.bot_clicked:,}"]


def _key(flow: str, step: int, variant: str, day: str = "all") -> str:
    return f"{flow} · {step} · {variant}" + (f" · {day}" if day != "all" else "")


def print_report(console: Console, report: Report) -> None:
    console.print(f"[bold]Attribution: {report.window}.[/bold] Conversions and revenue come from human clicks "
                  "(and orders the shop attributes itself); rates and RPR are per recipient (sent; for the "
                  "holdout: held back).")
    flows = _table("Per flow (holdout excluded)", "flow", LEAD)
    for r in report.flows:
        flows.add_row(r.flow, *_lead_cells(r))
    console.print(flows)
    detail = _table("Attribution by flow, step and variant", "flow · step · variant", LEAD + ("unsub /\nbounce",))
    for r in report.rows:
        detail.add_row(_key(r.flow, r.step, r.variant, r.day), *_lead_cells(r), f"{r.unsubscribes} / {r.bounces}",
                       style="dim" if r.variant == HOLDOUT else None)
    console.print(detail)
    if report.experiments:
        t = _table("Experiments vs holdout: what the mail added (95% CI; * the interval excludes 0)",
                   "flow · step · variant", ("recipients\nvs holdout", "placed\norder", "lift", "incremental\norders",
                                             "RPR", "incremental\nRPR", "incremental\nrevenue"))
        for x in report.experiments:
            orders, o_lo, o_hi = x.incremental_conversions
            rev, r_lo, r_hi = x.incremental_revenue
            t.add_row(_key(x.flow, x.step, x.variant), f"{x.n:,} vs {x.control_n:,}",
                      f"{_pct(x.rate)} vs {_pct(x.control_rate)}",
                      _interval(100 * x.diff, 100 * x.ci_low, 100 * x.ci_high, "{:+.1f}", " pp", x.significant),
                      _interval(orders, o_lo, o_hi, "{:+,.1f}"),
                      f"{_money(x.rpr)} vs {_money(x.control_rpr)}",
                      _interval(x.rpr_diff, x.rpr_ci_low, x.rpr_ci_high, significant=x.revenue_significant),
                      _interval(rev, r_lo, r_hi, significant=x.revenue_significant))
        console.print(t)
    else:
        console.print("No held-back control group in this range, so no incremental figures "
                      "(an experiment's share in flows.experiments sets one).")
    parts = []
    for kind, label in (("opened", "opens"), ("clicked", "clicks")):
        counts = report.engagement.get(kind, {})
        if counts:
            parts.append(f"{label}: " + ", ".join(f"{k} {n:,}" for k, n in counts.items()))
    if parts:
        console.print("Engagement records by verdict — " + " · ".join(parts))
    if report.unreadable:
        console.print(f"[yellow]{report.unreadable:,} records could not be decoded and were left out[/yellow]")


# ---- files ----------------------------------------------------------------------------------------

def _lift_columns(report: Report) -> dict[tuple[str, int, str], dict[str, Any]]:
    out = {}
    for x in report.experiments:
        d = x.as_dict()
        out[(x.flow, x.step, x.variant)] = {
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


LIFT_COLUMNS = ("lift_pp", "lift_pp_ci_low", "lift_pp_ci_high", "incremental_conversions",
                "incremental_conversions_ci_low", "incremental_conversions_ci_high", "incremental_rpr",
                "incremental_rpr_ci_low", "incremental_rpr_ci_high", "incremental_revenue",
                "incremental_revenue_ci_low", "incremental_revenue_ci_high")


def row_dicts(report: Report) -> Iterator[dict[str, Any]]:
    """Each row with its lift over the holdout (empty without one; over the whole range, also in rows of
    one day) and the attribution window."""
    lift = _lift_columns(report)
    for r in report.rows:
        d = r.as_dict()
        d.update(lift.get((r.flow, r.step, r.variant)) or dict.fromkeys(LIFT_COLUMNS))
        d["attribution"] = report.window
        yield d


def write_csv(report: Report, path: Path) -> None:
    dicts = list(row_dicts(report))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dicts[0]))
        writer.writeheader()
        writer.writerows(dicts)


def write_json(report: Report, path: Path) -> None:
    doc: dict[str, Any] = {"attribution": {"model": report.window, **report.settings},
                           "flows": [r.as_dict() for r in report.flows], "rows": list(row_dicts(report)),
                           "experiments": [x.as_dict() for x in report.experiments],
                           "engagement": report.engagement, "unreadable_records": report.unreadable}
    path.write_text(json.dumps(doc, indent=2))


def write_chart(report: Report, path: Path) -> None:
    from streams.extras import require

    matplotlib = require("matplotlib", "a PNG chart")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 5), gridspec_kw={"width_ratios": [1.2, 1, 1]})
    fig.suptitle(f"Attribution: {report.window} · conversions and revenue from human clicks", fontsize=10)
    flows = report.flows
    ax = axes[0]
    bars = ax.bar(range(len(flows)), [float(r.rpr) for r in flows], color="#3a7bd5")
    ax.bar_label(bars, labels=[_money(r.rpr) for r in flows], fontsize=7)
    ax.set_xticks(range(len(flows)), [r.flow for r in flows], fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("revenue per recipient")
    ax.set_title("RPR per flow (holdout excluded)")
    exps = report.experiments
    labels = [f"{x.flow}/{x.step}\n{x.variant}" for x in exps]
    for ax, title, unit, values in (
            (axes[1], "Conversion lift vs holdout (95% CI)", "placed-order rate lift (pp)",
             [(100 * x.diff, 100 * x.ci_low, 100 * x.ci_high) for x in exps]),
            (axes[2], "Incremental RPR vs holdout (95% CI)", "revenue per recipient over holdout",
             [(x.rpr_diff, x.rpr_ci_low, x.rpr_ci_high) for x in exps])):
        ax.set_title(title)
        ax.axhline(0, color="#666666", linewidth=0.8)
        if not exps:
            ax.text(0.5, 0.5, "no holdout in this range", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            continue
        finite = [(i, est, lo, hi) for i, (est, lo, hi) in enumerate(values) if lo > float("-inf")]
        ax.errorbar([i for i, *_ in finite], [est for _, est, _, _ in finite],
                    yerr=[[est - lo for _, est, lo, _ in finite], [hi - est for _, est, _, hi in finite]],
                    fmt="o", color="#3a7bd5", ecolor="#3a7bd5", capsize=5)
        ax.set_xticks(range(len(exps)), labels, fontsize=7)
        ax.set_xlim(-0.7, len(exps) - 0.3)
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
