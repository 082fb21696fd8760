"""/healthz and /metrics (Prometheus text format) on a small threaded HTTP server; port 0 = free port.
Binds loopback unless told otherwise (``ops.bind_host``; the deploy manifests set 0.0.0.0)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest


class HttpListener:
    """A ThreadingHTTPServer for ``handler`` on ``host:port`` (0 = a free port), served on a daemon thread."""

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler], name: str) -> None:
        self.server = ThreadingHTTPServer((host, port), handler)
        self.host = host
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name=name, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def shutdown(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class OpsServer(HttpListener):
    """``/healthz`` answers ``health`` (liveness: 503 restarts the pod), ``/readyz`` answers ``ready``
    (readiness: 503 takes it out of service; ``health`` when not given), ``/metrics`` Prometheus."""

    def __init__(self, port: int, health: Callable[[], tuple[bool, dict[str, Any]]],
                 registry: CollectorRegistry = REGISTRY, host: str = "127.0.0.1",
                 ready: Callable[[], tuple[bool, dict[str, Any]]] | None = None) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                if self.path.startswith("/metrics"):
                    body, ctype, code = generate_latest(registry), CONTENT_TYPE_LATEST, 200
                elif self.path.startswith("/healthz") or self.path.startswith("/readyz"):
                    ok, detail = outer.ready() if self.path.startswith("/readyz") else outer.health()
                    body, ctype, code = json.dumps({"ok": ok, **detail}).encode(), "application/json", 200 if ok else 503
                else:
                    body, ctype, code = b"not found", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.health = health
        self.ready = ready or health
        super().__init__(host, port, Handler, "ops-http")
