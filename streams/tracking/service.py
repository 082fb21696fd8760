"""``shopmail tracking`` as one object: the view follower (serving copy), the view builder, the
webhook ingest, the public HTTP server (pages and webhooks) and the ops server (``/healthz``, ``/readyz``:
views restored, ``/metrics``) on ``tracking.web_port``. A thread that fails stops the service and turns
/healthz red, so the pod restarts instead of serving a frozen view."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka.admin import AdminClient

from streams.config import ConfigError, Settings
from streams.kafka.io import client_config
from streams.tracking.builder import ViewBuilder
from streams.tracking.follower import ViewFollower
from streams.tracking.ingest import WebhookIngest
from streams.tracking.page import PageRenderer
from streams.tracking.server import TrackingHttp
from streams.tracking.view import ViewStore
from streams.web import OpsServer

log = logging.getLogger("shopmail.tracking")


def check_view_topic(settings: Settings, bootstrap: str) -> None:
    """The view topic must exist with as many partitions as the input topics (view partition p is
    written by the owner of input partition p)."""
    t = settings.topics
    view_topic = settings.tracking.view_topic_name(t.prefix)
    md = AdminClient(client_config(settings.kafka, bootstrap)).list_topics(timeout=10)
    counts = {name: len(md.topics[name].partitions) for name in (view_topic, t.name("orders"), t.name("shipments"),
                                                                 t.name("commands")) if name in md.topics}
    if view_topic not in counts:
        raise ConfigError(f"topic {view_topic} is missing: run `shopmail topics`")
    wrong = {name: n for name, n in counts.items() if n != counts[view_topic]}
    if wrong:
        raise ConfigError(f"{view_topic} has {counts[view_topic]} partitions but {wrong}: they must match")


class TrackingService:
    def __init__(self, settings: Settings, bootstrap: str) -> None:
        key = settings.tracking.signing_key()
        if not key:
            raise ConfigError("tracking.secret (or tracking.secret_file) is required to verify page tokens")
        check_view_topic(settings, bootstrap)
        self.settings = settings
        self.stop = threading.Event()
        self.failed: list[str] = []
        self.store = ViewStore()
        self.follower = ViewFollower(settings, bootstrap, self.store)
        self.builder = ViewBuilder(settings, bootstrap)
        self.ingest = WebhookIngest(settings, bootstrap, self.store)
        self.http = TrackingHttp(settings.tracking.bind_host, settings.tracking.port, self.store, PageRenderer(),
                                 self.ingest, key, settings.tracking.max_body_bytes, settings.http)
        self.ops = OpsServer(settings.tracking.web_port, self.health, host=settings.tracking.bind_host,
                             ready=self.ready, limits=settings.http)
        self._threads = [self._thread("tracking-follower", self.follower.run),
                         self._thread("tracking-builder", self.builder.run)]

    def _thread(self, name: str, run: Callable[[threading.Event], None]) -> threading.Thread:
        def guarded() -> None:
            try:
                run(self.stop)
            except Exception as exc:  # recorded, logged, and the whole service stops
                self.failed.append(f"{name}: {type(exc).__name__}: {exc}")
                log.exception("%s failed; stopping", name)
                self.stop.set()

        return threading.Thread(target=guarded, name=name, daemon=True)

    def health(self) -> tuple[bool, dict[str, Any]]:
        alive = all(t.is_alive() for t in self._threads) and not self.failed
        return alive, {"views": len(self.store), "restored": self.store.ready.is_set(), "failed": self.failed}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Alive and every view restored: only then may the page answer."""
        ok, detail = self.health()
        return ok and self.store.ready.is_set(), detail

    def start(self) -> "TrackingService":
        for t in self._threads:
            t.start()
        self.http.start()
        self.ops.start()
        log.info("tracking page and webhooks on %s:%d, ops on :%d", self.settings.tracking.bind_host, self.http.port,
                 self.ops.port)
        return self

    def close(self) -> None:
        self.stop.set()
        self.http.shutdown()
        self.ops.shutdown()
        for t in self._threads:
            t.join(15)
        self.ingest.close()
