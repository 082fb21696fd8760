"""`shopmail worker`: run the stream processors (exactly-once runtime) with health and metrics."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Optional

import typer


def run_worker(config: Optional[Path], instance_id: Optional[str], web_port: Optional[int],
               runtime_name: str = "txn") -> None:
    from streams.broker import kafka_bootstrap
    from streams.cli import settings_from
    from streams.processor import ProcessorRuntime
    from streams.topics import ensure_topics, topic_specs

    settings = settings_from(config)
    if web_port is not None:
        settings.worker.web_port = web_port
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if not settings.kafka.bootstrap_servers:
        raise typer.BadParameter("set KAFKA_BOOTSTRAP_SERVERS (or kafka.bootstrap_servers)")
    with kafka_bootstrap(settings.kafka.bootstrap_servers) as bootstrap:
        report = ensure_topics(bootstrap, topic_specs(settings), create=True)
        if not report.healthy:
            raise typer.BadParameter("topic mismatch: " + "; ".join(report.mismatches))
        if runtime_name == "faust":
            from streams.faust_runtime import run_faust_worker

            run_faust_worker(settings, bootstrap)
            return
        from streams.processor_metrics import ProcessorMetrics, health
        from streams.web import OpsServer

        runtime = ProcessorRuntime(settings, bootstrap, instance_id=instance_id, observer=ProcessorMetrics())
        server = OpsServer(settings.worker.web_port, lambda: health(runtime)).start()
        logging.getLogger("shopmail.processor").info("ops http on :%d (/healthz, /metrics)", server.port)
        try:
            runtime.run(stop)
        finally:
            server.shutdown()


def register(app: typer.Typer) -> None:
    @app.command()
    def worker(config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file"),
               instance_id: Optional[str] = typer.Option(None, "--instance-id",
                                                         help="stable id (transactional.id suffix); default hostname"),
               web_port: Optional[int] = typer.Option(None, "--web-port", help="/healthz + /metrics port"),
               runtime: str = typer.Option("txn", "--runtime",
                                           help="txn (exactly-once, default) or faust (at-least-once adapter)")) -> None:
        """Run the stream processors: inputs → email commands, exactly once."""
        if runtime not in ("txn", "faust"):
            raise typer.BadParameter("--runtime is txn or faust")
        run_worker(config, instance_id, web_port, runtime)
