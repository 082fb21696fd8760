"""`shopmail replay`: what would the processors (maybe with another config) have sent?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table


def register(app: typer.Typer) -> None:
    @app.command()
    def replay(prefix: str = typer.Option(..., "--prefix", help="topic prefix of the replay, e.g. 'replay-nov.'"),
               start: Optional[str] = typer.Option(None, "--from", help="event time from (ISO-8601 or epoch ms)"),
               end: Optional[str] = typer.Option(None, "--to", help="event time to, exclusive"),
               config: Optional[Path] = typer.Option(None, "--config", "-c", help="production config"),
               with_config: Optional[Path] = typer.Option(None, "--with-config",
                                                          help="config to replay with (default: production's)"),
               as_json: Optional[Path] = typer.Option(None, "--json", help="write the diff as JSON"),
               show: int = typer.Option(10, help="rows of each difference to print")) -> None:
        """Re-run the processors over a time range into prefixed topics and diff against production."""
        from streams.kafka.embedded_broker import kafka_bootstrap
        from streams.cli_settings import settings_from
        from streams.tools.replay import ReplayError, TimeRange, run_replay
        from streams.timeparse import format_ms, parse_time_ms

        production = settings_from(config)
        other = settings_from(with_config) if with_config else None
        if not production.kafka.bootstrap_servers:
            raise typer.BadParameter("set KAFKA_BOOTSTRAP_SERVERS to the cluster holding the production topics")
        window = TimeRange(parse_time_ms(start) if start else None, parse_time_ms(end) if end else None)
        console = Console()
        with kafka_bootstrap(production.kafka.bootstrap_servers, kafka=production.kafka) as bootstrap:
            with console.status("copying inputs and replaying…"):
                try:
                    result = run_replay(production, bootstrap, prefix, window, other)
                except ReplayError as exc:
                    console.print(f"[red]replay failed:[/red] {exc}")
                    raise typer.Exit(1) from exc
        d = result.diff
        console.print(f"copied: {result.copied}; replay commands: {len(result.commands)} → {prefix}email.commands")
        table = Table("change", "command_id", "flow", "step", "customer", "detail")
        for c in d.added[:show]:
            table.add_row("[green]added[/green]", c["command_id"], c["flow"], str(c["step"]), c["customer_id"],
                          f"send_at {format_ms(c['send_at'])}")
        for c in d.removed[:show]:
            table.add_row("[red]removed[/red]", c["command_id"], c["flow"], str(c["step"]), c["customer_id"], "")
        for old, new, fields in d.changed[:show]:
            detail = ", ".join(f"{f}: {old.get(f)!s:.30} → {new.get(f)!s:.30}" for f in fields)
            table.add_row("[yellow]changed[/yellow]", new["command_id"], new["flow"], str(new["step"]),
                          new["customer_id"], detail)
        console.print(table)
        console.print(d.summary())
        if as_json:
            as_json.write_text(json.dumps({"summary": d.summary(), "added": d.added, "removed": d.removed,
                                           "changed": [{"production": o, "replay": n, "fields": f}
                                                       for o, n, f in d.changed]}, indent=2))
