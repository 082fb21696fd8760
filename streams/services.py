"""Start-up shared by the long-running commands (`worker`, `sink`, `ses-bridge`): logging, SIGTERM /
SIGINT → a stop event, the cluster from settings (or the embedded broker), topics created and checked,
and the ops HTTP server (/healthz, /readyz, /metrics; streams/web.py) around the service loop."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import typer

from streams.config import OpsSettings, Settings


@contextlib.contextmanager
def service_context(settings: Settings, check_topics: bool = True,
                    handle_signals: bool = True) -> Iterator[tuple[str, threading.Event]]:
    """Yields (bootstrap servers, stop event); with ``handle_signals`` SIGTERM and SIGINT set the
    event (a loop that checks it stops cleanly) instead of raising."""
    from streams.kafka.embedded_broker import kafka_bootstrap
    from streams.kafka.topics import ensure_topics, topic_specs

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    if handle_signals:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    if not settings.kafka.bootstrap_servers:
        raise typer.BadParameter("set KAFKA_BOOTSTRAP_SERVERS (or kafka.bootstrap_servers)")
    from schemas.serde import prepare_output

    prepare_output(settings)  # registry output framing: every output subject's id now, or no start
    with kafka_bootstrap(settings.kafka.bootstrap_servers, kafka=settings.kafka) as bootstrap:
        if check_topics:
            report = ensure_topics(bootstrap, topic_specs(settings), create=True, kafka=settings.kafka)
            if not report.healthy:
                raise typer.BadParameter("topic mismatch: " + "; ".join(report.mismatches))
        yield bootstrap, stop


def run_with_ops(port: int, health: Callable[[], tuple[bool, dict[str, Any]]], loop: Callable[[threading.Event], None],
                 stop: threading.Event, logger: str, host: str = OpsSettings.bind_host,
                 ready: Callable[[], tuple[bool, dict[str, Any]]] | None = None, extra: Sequence[Any] = ()) -> None:
    """Serve /healthz, /readyz and /metrics on ``host:port`` (pass ``settings.ops.bind_host``) while
    ``loop(stop)`` runs; ``ready`` answers /readyz (``health`` when not given)."""
    from streams.web import OpsServer

    server = OpsServer(port, health, host=host, ready=ready, extra=extra).start()
    logging.getLogger(logger).info("ops http on %s:%d (/healthz, /readyz, /metrics)", server.host, server.port)
    try:
        loop(stop)
    finally:
        server.shutdown()
