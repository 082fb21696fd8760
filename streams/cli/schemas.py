"""`shopmail schemas register|list`: shopmail's schemas in a Confluent-compatible Schema Registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    schemas = typer.Typer(no_args_is_help=True, help="Schema Registry subjects of every shopmail topic.")
    app.add_typer(schemas, name="schemas")
    config_opt = typer.Option(None, "--config", "-c", help="TOML config file (default: $SHOPMAIL_CONFIG)")

    @schemas.command("register")
    def register_cmd(config: Optional[Path] = config_opt) -> None:
        """Register every shopmail schema under its TopicNameStrategy subject (<topic>-value) with
        BACKWARD compatibility (idempotent); needs registry.url."""
        from schemas.subjects import register_all
        from streams.cli.main import console, settings_from

        settings = settings_from(config)
        if not settings.registry.url:
            console.print("[red]set registry.url (SHOPMAIL_REGISTRY__URL) to the Schema Registry[/red]")
            raise typer.Exit(2)
        try:
            rows = register_all(settings)
        except Exception as exc:  # noqa: BLE001 - refused (incompatible), unreachable, unauthorised
            console.print(f"[red]registration failed:[/red] {type(exc).__name__}: {exc}")
            raise typer.Exit(1) from exc
        for subject, fullname, schema_id in rows:
            print(json.dumps({"subject": subject, "schema": fullname, "id": schema_id}))

    @schemas.command("list")
    def list_cmd(config: Optional[Path] = config_opt) -> None:
        """Print the subject → schema plan without contacting a registry."""
        from schemas.subjects import subjects
        from streams.cli.main import settings_from

        for s in subjects(settings_from(config)):
            print(json.dumps({"subject": s.subject, "schema": s.entry.fullname}))
