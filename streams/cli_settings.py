"""The settings every ``shopmail`` command starts from: defaults → ``--config``/``SHOPMAIL_CONFIG`` →
environment, with the Schema Registry configured for the process; a configuration error is one line and
exit code 2. Commands of every package call it; it lives below the CLI so that nothing imports the CLI."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from streams.config import ConfigError, Settings, load_settings


def settings_from(config: Path | None) -> Settings:
    from schemas import serde

    try:
        settings = load_settings(config)
        serde.configure(settings.registry)  # registry framing for every command of this process
    except ConfigError as exc:
        Console(stderr=True).print(f"[red]config error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    return settings
