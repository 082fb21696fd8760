"""`shopmail report`: the attribution table (rich), CSV/JSON, and a PNG chart (funnel per flow and
variants side by side). Reads the live topics or Avro files written by `shopmail export`."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from streams.config import Settings
from streams.analytics.attribution import Attribution, Row
from streams.analytics.experiments import lifts

SOURCES = {"commands": "command", "outcomes": "outcome", "feedback": "feedback", "orders": "order"}


def from_topics(settings: Settings, bootstrap: str) -> Attribution:
    from streams.kafka.io import read_topic

    records = []
    for logical, kind in SOURCES.items():
        for r in read_topic(bootstrap, settings.topics.name(logical), idle_s=0.5, timeout_s=120,
                            kafka=settings.kafka):
            try:
                records.append((kind, r.decoded().record))
            except Exception:  # noqa: BLE001 - bad records are the DLQ's business, not the report's
                continue
    return Attribution(settings.metrics).feed(records)


def from_avro_dir(settings: Settings, directory: Path) -> Attribution:
    from schemas.logical import read_export

    records = []
    for logical, kind in SOURCES.items():
        path = directory / f"{settings.topics.name(logical)}.avro"
        if path.exists():
            with open(path, "rb") as f:
                records.extend((kind, rec) for rec in read_export(f))
    return Attribution(settings.metrics).feed(records)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def print_table(console: Console, rows: list[Row], title: str = "Attribution by flow, step and variant") -> None:
    table = Table("flow", "step", "variant", "sent", "delivered", "open", "click", "conv", "revenue", "unsub",
                  "bounce", title=title)
    for r in rows:
        table.add_row(r.flow, str(r.step), r.variant, str(r.sent), str(r.delivered), _pct(r.rate(r.opened)),
                      _pct(r.rate(r.clicked)), _pct(r.rate(r.converted)), f"{r.revenue:.2f}", str(r.unsubscribes),
                      str(r.bounces))
    console.print(table)
    exp = lifts(rows)
    if exp:
        t2 = Table("flow", "step", "variant", "n", "conv", "control n", "control conv", "lift (abs)", "95% CI",
                   title="Experiments vs holdout (two-proportion Wald interval)")
        for x in exp:
            t2.add_row(x.flow, str(x.step), x.variant, str(x.n), _pct(x.rate), str(x.control_n), _pct(x.control_rate),
                       f"{100 * x.diff:+.1f} pp", f"[{100 * x.ci_low:+.1f}, {100 * x.ci_high:+.1f}] pp"
                       + (" *" if x.significant else ""))
        console.print(t2)


def write_csv(rows: list[Row], path: Path) -> None:
    dicts = [r.as_dict() for r in rows]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dicts[0]) if dicts else ["flow"])
        writer.writeheader()
        writer.writerows(dicts)


def write_json(rows: list[Row], path: Path) -> None:
    doc: dict[str, Any] = {"rows": [r.as_dict() for r in rows],
                           "experiments": [x.__dict__ | {"significant": x.significant} for x in lifts(rows)]}
    path.write_text(json.dumps(doc, indent=2))


def write_chart(rows: list[Row], path: Path) -> None:
    from streams.extras import require

    matplotlib = require("matplotlib", "a PNG chart")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flows: dict[str, dict[str, int]] = {}
    for r in rows:
        if r.variant == "holdout":
            continue
        f = flows.setdefault(r.flow, {"sent": 0, "delivered": 0, "opened": 0, "clicked": 0, "converted": 0})
        for k in f:
            f[k] += getattr(r, k)
    variants = [r for r in rows if r.flow in {x.flow for x in rows if x.variant not in ("control",)}]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    stages = ["sent", "delivered", "opened", "clicked", "converted"]
    width = 0.8 / max(len(flows), 1)
    for i, (flow, counts) in enumerate(sorted(flows.items())):
        axes[0].bar([x + i * width for x in range(len(stages))], [counts[s] for s in stages], width, label=flow)
    axes[0].set_xticks([x + width * (len(flows) - 1) / 2 for x in range(len(stages))], stages)
    axes[0].set_title("Funnel per flow")
    axes[0].legend(fontsize=8)
    labels = [f"{r.flow}/{r.step}\n{r.variant}" for r in variants]
    axes[1].bar(range(len(variants)), [100 * r.rate(r.converted) for r in variants],
                color=["#999999" if r.variant == "holdout" else "#3a7bd5" for r in variants])
    axes[1].set_xticks(range(len(variants)), labels, fontsize=7, rotation=45, ha="right")
    axes[1].set_ylabel("conversion rate (%)")
    axes[1].set_title("Variants side by side (grey: holdout)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def demo_report(console: Console, settings: Settings, bootstrap: str, work: Path) -> None:
    """The demo's closing report: table + chart under the demo's work directory."""
    rows = from_topics(settings, bootstrap).table()
    print_table(console, rows)
    chart = work / "report.png"
    write_chart(rows, chart)
    console.print(f"chart: {chart}")
