"""`shopmail audiences list|export`: retargeting audiences as customer lists for ad platforms."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    audiences = typer.Typer(no_args_is_help=True, help="Retargeting audiences: members now, and "
                                                       "customer-list exports (hashed emails) for ad platforms.")
    app.add_typer(audiences, name="audiences")

    def load(config: Optional[Path], from_file: Optional[Path]):  # type: ignore[no-untyped-def]
        from streams.cli_settings import settings_from
        from streams.tools import audiences as tool

        if from_file is not None:
            return tool.read_file(from_file)
        settings = settings_from(config)
        if not settings.kafka.bootstrap_servers:
            raise typer.BadParameter("set KAFKA_BOOTSTRAP_SERVERS (or kafka.bootstrap_servers), or use --from-file")
        from streams.kafka.embedded_broker import kafka_bootstrap

        with kafka_bootstrap(settings.kafka.bootstrap_servers, kafka=settings.kafka) as bootstrap:
            try:
                return tool.read_topic(settings, bootstrap)
            except LookupError as exc:
                raise typer.BadParameter(str(exc)) from exc

    FromFile = typer.Option(None, "--from-file", help="a memberships JSONL (`shopmail simulate --audiences`) "
                                                      "instead of the topic")
    Config = typer.Option(None, "--config", "-c", help="TOML config file")

    @audiences.command("list")
    def list_audiences(config: Optional[Path] = Config, from_file: Optional[Path] = FromFile) -> None:
        """Each audience with its members now and the customers who left it."""
        from rich.console import Console
        from rich.table import Table

        state = load(config, from_file)
        table = Table("audience", "members", "left")
        for name, (members, left) in state.counts().items():
            table.add_row(name, str(members), str(left))
        Console().print(table)

    @audiences.command("export")
    def export(audience: str = typer.Argument(..., help="e.g. abandoned_cart_open, lapsed, lapsed_vip"),
               fmt: str = typer.Option("hashed", "--format", help="google | meta | hashed (column header of "
                                                                    "the platform's customer-list CSV)"),
               out: Optional[Path] = typer.Option(None, "--out", "-o", help="CSV file (default stdout)"),
               config: Optional[Path] = Config, from_file: Optional[Path] = FromFile) -> None:
        """The audience's members now as a customer-list CSV of SHA-256 hashed, normalised emails."""
        from streams.tools.audiences import FORMATS, write_csv

        if fmt not in FORMATS:
            raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
        from streams.core.flows.registry import FLOWS

        defined = sorted(a for f in FLOWS for a in f.audiences)
        if audience not in defined:
            raise typer.BadParameter(f"no flow defines the audience {audience!r} (defined: {', '.join(defined)})")
        state = load(config, from_file)
        if state.unreadable:  # one of them may be a leave: exporting without it could list a withdrawn member
            print(f"{state.unreadable} membership records could not be read (see the processors' schema "
                  f"version); nothing exported", file=sys.stderr)
            raise typer.Exit(1)
        members = state.members(audience)
        if out is None:
            n = write_csv(members, sys.stdout, fmt)
        else:
            with open(out, "w", encoding="utf-8", newline="") as f:
                n = write_csv(members, f, fmt)
        print(f"{audience}: {n} hashed emails ({fmt})" + (f" → {out}" if out else ""), file=sys.stderr)
