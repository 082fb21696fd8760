"""`shopmail tracking`: the branded tracking page and the carrier webhook ingest."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("tracking")
    def tracking(config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file"),
                 port: Optional[int] = typer.Option(None, "--port", help="public port (default tracking.port)")) -> None:
        """Serve /track/<token> pages and /webhooks/<provider> from the compacted tracking view."""
        from streams.cli_settings import settings_from
        from streams.config import ConfigError
        from streams.services import service_context
        from streams.tracking.service import TrackingService

        settings = settings_from(config)
        if port is not None:
            settings.tracking.port = port
        with service_context(settings) as (bootstrap, stop):
            try:
                service = TrackingService(settings, bootstrap).start()
            except ConfigError as exc:
                raise typer.BadParameter(str(exc)) from exc
            try:
                while not stop.wait(1.0):
                    if service.stop.is_set():
                        raise typer.Exit(1)  # a component failed (logged); the pod restarts
            finally:
                service.close()
