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
        """Register every shopmail schema under its TopicNameStrategy subject (<topic>-value)
        (idempotent); BACKWARD compatibility only on a subject without a level of its own; needs
        registry.url. One JSON line per subject; exit 1 if any subject was not registered."""
        from schemas.subjects import register_all
        from rich.console import Console

        from streams.cli_settings import settings_from

        console = Console(stderr=True)
        settings = settings_from(config)
        if not settings.registry.url:
            console.print("[red]set registry.url (SHOPMAIL_REGISTRY__URL) to the Schema Registry[/red]")
            raise typer.Exit(2)
        rows = register_all(settings)
        for r in rows:
            line: dict[str, object] = {"subject": r.subject, "schema": r.schema}
            if r.error:
                line["error"] = r.error
            else:
                line.update(id=r.schema_id, compatibility=r.compatibility, compatibility_set=r.compatibility_set)
            print(json.dumps(line))
        failed = [r for r in rows if r.error]
        if failed:
            console.print(f"[red]registration failed for {len(failed)} of {len(rows)} subjects:[/red] "
                          f"{', '.join(r.subject for r in failed)}", soft_wrap=True)
            raise typer.Exit(1)

    @schemas.command("list")
    def list_cmd(config: Optional[Path] = config_opt) -> None:
        """Print the subject → schema plan without contacting a registry."""
        from schemas.subjects import subjects
        from streams.cli_settings import settings_from

        for s in subjects(settings_from(config)):
            print(json.dumps({"subject": s.subject, "schema": s.entry.fullname}))
