"""`shopmail sink` (SES sender) and `shopmail ses-bridge` (SES events → email.feedback)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def run_sink(config: Optional[Path], instance_id: Optional[str]) -> None:
    from sinks.service import SinkService
    from streams.cli_settings import settings_from
    from streams.services import run_with_ops, service_context

    settings = settings_from(config)
    with service_context(settings) as (bootstrap, stop):
        service = SinkService(settings, bootstrap, instance_id=instance_id)
        run_with_ops(settings.sink.web_port, service.health, service.run, stop, "shopmail.sink",
                     host=settings.ops.bind_host)


def register(app: typer.Typer) -> None:
    @app.command()
    def sink(config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file"),
             instance_id: Optional[str] = typer.Option(None, "--instance-id", help="stable replica id")) -> None:
        """Run the SES sender: email.commands → SES → email.outcomes (each command at most once)."""
        run_sink(config, instance_id)

    from sinks.ses_bridge_cli import register_bridge

    register_bridge(app)
