"""Subcommands about what customers receive: ``preview`` and ``unsubscribe-server``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from sinks import preview, unsubscribe_service

    preview.register(app)
    unsubscribe_service.register(app)
