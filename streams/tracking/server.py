"""The public HTTP endpoint: ``GET /track/<token>`` (the page), ``POST /webhooks/<provider>`` (carrier
webhooks), ``GET /healthz`` (liveness) and ``GET /readyz`` (views restored). Metrics are served on the
separate ops port, never here.

A token that is malformed, edited, forged or names an unknown order gets the same 404 page: 403 would
confirm that an order exists, and 404 is also what a link to a deleted order should say.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import Counter

from streams.tracking.ingest import WebhookIngest
from streams.tracking.page import PageRenderer, pick_language
from streams.tracking.tokens import token_order_id, verify_token
from streams.tracking.view import ViewStore
from streams.tracking.webhooks import signature_header
from streams.web import HttpListener

log = logging.getLogger("shopmail.tracking.http")
PAGES = Counter("shopmail_tracking_pages_total", "Tracking page requests by answer", ["code"])

PAGE_HEADERS = {
    "Cache-Control": "no-store, private",
    "Referrer-Policy": "no-referrer",  # the token must not leak to the carrier's site
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src https: http:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}


class TrackingHttp(HttpListener):
    def __init__(self, host: str, port: int, store: ViewStore, renderer: PageRenderer, ingest: WebhookIngest,
                 key: bytes, max_body_bytes: int, health: Callable[[], tuple[bool, dict[str, Any]]]) -> None:
        outer = self
        self.store, self.renderer, self.ingest, self.key = store, renderer, ingest, key
        self.max_body_bytes = max_body_bytes
        self.health = health

        class Handler(BaseHTTPRequestHandler):
            server_version = "shopmail-tracking"
            sys_version = ""

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                url = urlsplit(self.path)
                if url.path.startswith("/track/"):
                    code, body = outer.page(url.path[len("/track/"):], parse_qs(url.query),
                                            self.headers.get("Accept-Language"))
                    self._send(code, body.encode(), "text/html; charset=utf-8", PAGE_HEADERS)
                elif url.path in ("/healthz", "/readyz"):
                    ok, detail = outer.health()
                    if url.path == "/readyz":
                        ok = ok and outer.store.ready.is_set()
                    self._send(200 if ok else 503, json.dumps({"ok": ok, **detail}).encode(), "application/json")
                else:
                    self._send(404, b"not found", "text/plain")

            def do_POST(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                provider = url.path[len("/webhooks/"):] if url.path.startswith("/webhooks/") else ""
                if not provider or "/" in provider:
                    self._send(404, b"not found", "text/plain")
                    return
                try:
                    length = int(self.headers.get("Content-Length") or "")
                except ValueError:
                    self._json(411, {"error": "length_required", "detail": "Content-Length header needed"})
                    return
                if length > outer.max_body_bytes or length < 0:
                    self._json(413, {"error": "too_large", "detail": f"body over {outer.max_body_bytes} bytes"})
                    self.close_connection = True
                    return
                body = self.rfile.read(length)
                answer = outer.ingest.handle(provider, body, self.headers.get(signature_header(provider)))
                self._json(answer.code, answer.body)

            def _json(self, code: int, body: dict[str, Any]) -> None:
                self._send(code, json.dumps(body).encode(), "application/json")

            def _send(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        super().__init__(host, port, Handler, "tracking-http")
        self.server.daemon_threads = True

    def page(self, token: str, query: dict[str, list[str]], accept_language: str | None) -> tuple[int, str]:
        token = unquote(token)
        if not self.store.ready.is_set():
            PAGES.labels("503").inc()
            return 503, "<!doctype html><title>503</title><p>Starting, please retry in a moment.</p>"
        order_id = token_order_id(token)
        view = self.store.get(order_id) if order_id is not None else None
        wanted = [(query.get("lang") or [None])[0], view.get("locale") if view else None]
        lang = pick_language(wanted, accept_language, self.renderer.available)
        if view is None or not verify_token(self.key, token, view["order_id"], view["customer_id"]):
            PAGES.labels("404").inc()
            log.debug("tracking page: no order for token %.12s…", token)
            return 404, self.renderer.not_found(lang)
        PAGES.labels("200").inc()
        return 200, self.renderer.render(view, lang)

