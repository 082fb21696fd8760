"""`shopmail simulate --input events.jsonl [--until TIME] [--config FILE] [--output commands.jsonl]`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def simulate(input: Path = typer.Option(..., "--input", "-i", help="JSONL: {topic, value} per line"),  # noqa: A002
                 until: Optional[str] = typer.Option(None, "--until", help="advance the clock to (ISO-8601 or epoch ms)"),
                 config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file"),
                 output: Optional[Path] = typer.Option(None, "--output", "-o", help="commands JSONL (default stdout)")) -> None:
        """Run the processors' domain core over an event file without a broker (exit 3 if any line was bad)."""
        from schemas import serde
        from streams.cli import settings_from
        from streams.simulate import simulate as run
        from streams.timeparse import parse_time_ms

        settings = settings_from(config)
        try:
            until_ms = parse_time_ms(until) if until else None
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        out = open(output, "w") if output else sys.stdout  # noqa: SIM115
        try:
            with open(input) as lines:
                result = run(lines, settings, until_ms,
                             on_bad=lambda bad: print(bad.as_json(), file=sys.stderr),
                             on_command=lambda cmd: out.write(serde.dumps_json("EmailCommand", cmd) + "\n"))
        finally:
            if output:
                out.close()
        print(f"simulate: {result.events} events, {len(result.commands)} commands, "
              f"{len(result.bad_lines)} bad lines", file=sys.stderr)
        if result.bad_lines:
            raise typer.Exit(3)
