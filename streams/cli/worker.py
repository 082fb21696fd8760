"""`shopmail worker`: run the stream processors (exactly-once runtime) with health and metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def run_worker(config: Optional[Path], instance_id: Optional[str], web_port: Optional[int],
               runtime_name: str = "txn") -> None:
    from streams.cli_settings import settings_from
    from streams.services import run_with_ops, service_context

    settings = settings_from(config)
    if web_port is not None:
        settings.worker.web_port = web_port
    from streams.runtime.gc_policy import tune_for_streaming

    tune_for_streaming(settings.worker.gc_young_threshold)  # before any topic is made: a bad value stops here
    settings.worker.check_transactions()
    with service_context(settings) as (bootstrap, stop):
        if runtime_name == "faust":
            from streams.extras import require

            require("faust", "--runtime faust")
            from streams.runtime.faust_adapter import run_faust_worker

            run_faust_worker(settings, bootstrap)
            return
        from streams.runtime.worker import ProcessorRuntime
        from streams.runtime.metrics import ProcessorMetrics, health, readiness
        from streams.web import customer_route

        runtime = ProcessorRuntime(settings, bootstrap, instance_id=instance_id, observer=ProcessorMetrics())
        run_with_ops(settings.worker.web_port, lambda: health(runtime), runtime.run, stop, "shopmail.processor",
                     host=settings.ops.bind_host, ready=lambda: readiness(runtime),
                     extra=[customer_route(runtime.customer)])


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
