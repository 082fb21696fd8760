"""`shopmail explain CUSTOMER_ID`: the customer's facts, decisions and sends, in words."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

KIND_STYLE = {"fact": "cyan", "scheduled": "blue", "ended": "magenta", "deferred": "yellow", "dropped": "red",
              "fired": "green", "sink": "bold green", "converted": "bold magenta",
              "production": "bold cyan", "differs": "bold red"}


def register(app: typer.Typer) -> None:
    @app.command()
    def explain(customer_id: str = typer.Argument(..., help="the customer to explain"),
                input_path: Optional[Path] = typer.Option(None, "--input", "-i",
                                                          help="a JSONL file like `simulate --input` "
                                                               "(default: the topics of the configured cluster)"),
                config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file"),
                with_config: Optional[Path] = typer.Option(None, "--with-config",
                                                           help="a second config: what would change, side by side"),
                as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
                quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars")) -> None:
        """Why a customer got (or did not get) each mail: facts, decisions with reasons, what the sink did."""
        from streams.cli_settings import settings_from
        from streams.tools.explain import ExplainError, compare

        settings = settings_from(config)
        other = settings_from(with_config) if with_config else None
        try:
            first = _run(settings, customer_id, input_path, quiet)
            second = _run(other, customer_id, input_path, quiet, other_config=True) if other is not None else None
        except ExplainError as exc:
            Console(stderr=True).print(f"[red]explain:[/red] {exc}")
            raise typer.Exit(2) from exc
        if second is not None:
            _same_cause(first, second)
        if as_json:
            doc: dict[str, Any] = first.as_json()
            if second is not None:
                doc["with_config"] = {"config": str(with_config), **second.as_json(),
                                      "changes": [_change_doc(c, first.zone) for c in compare(first, second)
                                                  if not c.same]}
            sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
            return
        console = Console()
        _print(console, first)
        if second is not None:
            _print_changes(console, first, second, str(config or "default config"), str(with_config))


def _change_doc(c: Any, tz: Any) -> dict[str, Any]:
    from streams.tools.explain import iso

    doc: dict[str, Any] = {"key": c.key, "at": iso(c.at, tz), "at_ms": c.at, "config": c.left,
                           "with_config": c.right}
    for side, at in (("config", c.left_at), ("with_config", c.right_at)):
        if at is not None:
            doc[f"{side}_at"], doc[f"{side}_at_ms"] = iso(at, tz), at
    return doc


def _same_cause(first: Any, second: Any) -> None:
    """A command that differs from production under production's config too does not differ because of
    the other config: its row under the other config gives the same cause as under production's."""
    under_production = {r.data.get("command_id"): r.text for r in first.rows if r.kind == "differs"}
    for r in second.rows:
        if r.kind == "differs" and r.data.get("command_id") in under_production:
            r.text = under_production[r.data["command_id"]]


def _run(settings: Any, customer_id: str, input_path: Optional[Path], quiet: bool, other_config: bool = False) -> Any:
    from streams.tools.explain import explain_file, explain_topics

    if input_path is not None:
        return explain_file(settings, customer_id, input_path, quiet)
    if not settings.kafka.bootstrap_servers:
        raise typer.BadParameter("give --input FILE, or set KAFKA_BOOTSTRAP_SERVERS to read the topics")
    from streams.kafka.embedded_broker import kafka_bootstrap

    with kafka_bootstrap(settings.kafka.bootstrap_servers, kafka=settings.kafka) as bootstrap:
        return explain_topics(settings, bootstrap, customer_id, quiet, other_config=other_config)


def _print(console: Console, ex: Any) -> None:
    from streams.tools.explain import when

    tz = ex.zone
    console.print(f"[bold]{ex.customer_id}[/bold] — partition {ex.partition}, times in {ex.zone_words} "
                  f"({ex.facts_read} records of the partition read from {ex.source})")
    table = Table("time", "", "what happened")
    for row in ex.rows:
        style = KIND_STYLE.get(row.kind, "")
        table.add_row(when(row.at, tz), f"[{style}]{row.kind}[/{style}]" if style else row.kind, escape(row.text))
    console.print(table)
    steps = ex.mail_steps
    if steps:
        keyed, deferred = any(s.key for s in steps), any(s.deferred for s in steps)
        due = Table("next due", "flow", "step", *(["key"] if keyed else []), *(["note"] if deferred else []))
        for s in steps:
            due.add_row(when(s.due, tz), s.flow, "start" if s.step == 0 else str(s.step),
                        *([s.key or "–"] if keyed else []), *(["deferred by a guard" if s.deferred else ""]
                                                             if deferred else []))
        console.print(due)
    else:
        console.print("no mail is due for this customer")
    if ex.sunset is not None:
        console.print(f"sunset: {escape(ex.sunset[0])}")


def _print_changes(console: Console, a: Any, b: Any, left: str, right: str) -> None:
    from streams.tools.explain import compare, when

    changes = [c for c in compare(a, b) if not c.same]
    if not changes:
        console.print(f"with {right}: no decision for {a.customer_id} would change")
        return
    table = Table("time", f"with {left}", f"with {right}", title=f"what would change for {a.customer_id}")
    for c in changes:
        lt, rt = c.texts(a.zone)
        table.add_row(when(c.at, a.zone), escape(lt) or "—", escape(rt) or "—")
    console.print(table)
