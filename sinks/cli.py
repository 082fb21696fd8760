"""`shopmail sink` (SES sender) and `shopmail ses-bridge` (SES events → email.feedback)."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Optional

import typer


def run_sink(config: Optional[Path], instance_id: Optional[str]) -> None:
    from sinks.service import SinkService
    from streams.broker import kafka_bootstrap
    from streams.cli import settings_from
    from streams.topics import ensure_topics, topic_specs
    from streams.web import OpsServer

    settings = settings_from(config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if not settings.kafka.bootstrap_servers:
        raise typer.BadParameter("set KAFKA_BOOTSTRAP_SERVERS (or kafka.bootstrap_servers)")
    with kafka_bootstrap(settings.kafka.bootstrap_servers) as bootstrap:
        report = ensure_topics(bootstrap, topic_specs(settings))
        if not report.healthy:
            raise typer.BadParameter("topic mismatch: " + "; ".join(report.mismatches))
        service = SinkService(settings, bootstrap, instance_id=instance_id)
        ops = OpsServer(settings.sink.web_port, service.health).start()
        logging.getLogger("shopmail.sink").info("ops http on :%d (/healthz, /metrics)", ops.port)
        try:
            service.run(stop)
        finally:
            ops.shutdown()


def register(app: typer.Typer) -> None:
    @app.command()
    def sink(config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file"),
             instance_id: Optional[str] = typer.Option(None, "--instance-id", help="stable replica id")) -> None:
        """Run the SES sender: email.commands → SES → email.outcomes (each command at most once)."""
        run_sink(config, instance_id)

    try:
        from sinks.ses_bridge_cli import register_bridge
    except ImportError:
        return
    register_bridge(app)
