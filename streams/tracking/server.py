"""The public HTTP endpoint: ``GET /track/{token}`` (the page) and ``POST /webhooks/{provider}`` (carrier
webhooks), on the shared HTTP stack (:mod:`streams.web`: timeouts, body limits, bounded connections,
security headers). ``/healthz``, ``/readyz`` and ``/metrics`` are served on the separate ops port, never here.

A token that is malformed, edited, forged, names an unknown order or an order of another customer gets
the same 404 page, byte for byte: its language comes only from ``?lang=`` and Accept-Language, never
from the order, so the answer does not tell whether an order exists (403 would confirm it too).
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Counter

from streams.config import HttpSettings
from streams.tracking.ingest import WebhookIngest
from streams.tracking.page import PageRenderer, pick_language
from streams.tracking.tokens import token_order_id, verify_token
from streams.tracking.view import ViewStore
from streams.tracking.webhooks import signature_header
from streams.web import HttpServer, Request, Response, Route

log = logging.getLogger("shopmail.tracking.http")
PAGES = Counter("shopmail_tracking_pages_total", "Tracking page requests by answer", ["code"])

PAGE_HEADERS = {
    "Cache-Control": "no-store, private",
    "X-Robots-Tag": "noindex, nofollow",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src https: http:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}
_ANSWERS = {"200": {"description": "ok"}, "400": {"description": "malformed (dead-lettered)"},
            "401": {"description": "bad or missing signature"}, "404": {"description": "unknown provider"},
            "413": {"description": "body too large"}, "422": {"description": "unknown tracking number"},
            "503": {"description": "not ready or not written: retry"}}
OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "shopmail tracking: page and carrier webhooks", "version": "1"},
    "paths": {
        "/track/{token}": {"get": {
            "summary": "the tracking page of the order the signed token names",
            "parameters": [{"name": "token", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "lang", "in": "query", "required": False, "schema": {"type": "string"}},
                           {"name": "Accept-Language", "in": "header", "required": False,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the page"}, "404": {"description": "no such order for this token"},
                          "503": {"description": "views still being restored"}}}},
        "/webhooks/{provider}": {"post": {
            "summary": "a carrier webhook (signed with the provider's secret)",
            "parameters": [{"name": "provider", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "X-Shopmail-Signature", "in": "header", "required": False,
                            "schema": {"type": "string"}},
                           {"name": "aftership-hmac-sha256", "in": "header", "required": False,
                            "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "description": "the generic shape (AfterShip's differs; docs/tracking.md)",
                "required": ["event_id", "tracking_number", "status", "occurred_at"],
                "properties": {"event_id": {"type": "string"}, "tracking_number": {"type": "string"},
                               "carrier": {"type": "string"}, "tracking_url": {"type": "string"},
                               "status": {"type": "string", "enum": ["label_created", "in_transit",
                                                                     "out_for_delivery", "delivered", "exception",
                                                                     "returned"]},
                               "occurred_at": {"description": "epoch ms or ISO 8601, 2000-01-01 … now + 1 day",
                                               "oneOf": [{"type": "integer", "minimum": 946_684_800_000,
                                                          "maximum": 4_102_444_800_000},
                                                         {"type": "string", "format": "date-time"}]}}}}}},
            "responses": _ANSWERS}},
    },
}


class TrackingHttp(HttpServer):
    def __init__(self, host: str, port: int, store: ViewStore, renderer: PageRenderer, ingest: WebhookIngest,
                 key: bytes, max_body_bytes: int, limits: HttpSettings | None = None) -> None:
        self.store, self.renderer, self.ingest, self.key = store, renderer, ingest, key
        routes = [Route("GET", "/track/{token}", self._get_page),
                  Route("POST", "/webhooks/{provider}", self._post_webhook, max_body_bytes)]
        super().__init__(host, port, routes, "tracking-http", limits, PAGE_HEADERS, openapi=OPENAPI)

    def _get_page(self, request: Request) -> Response:
        code, body = self.page(request.params["token"], request.query.get("lang"),
                               request.headers.get("Accept-Language"))
        return Response.html(code, body, {"Retry-After": "5"} if code == 503 else None)

    def _post_webhook(self, request: Request) -> Response:
        provider = request.params["provider"]
        answer = self.ingest.handle(provider, request.body, request.headers.get(signature_header(provider)))
        return Response.json(answer.code, answer.body)

    def page(self, token: str, lang_param: str | None, accept_language: str | None) -> tuple[int, str]:
        if not self.store.ready.is_set():
            PAGES.labels("503").inc()
            return 503, "<!doctype html><title>503</title><p>Starting, please retry in a moment.</p>"
        order_id = token_order_id(token)
        view = self.store.get(order_id) if order_id is not None else None
        if view is None or not verify_token(self.key, token, view["order_id"], view["customer_id"]):
            PAGES.labels("404").inc()
            log.debug("tracking page: no order for token %.12s…", token)
            return 404, self.renderer.not_found(pick_language([lang_param], accept_language,
                                                              self.renderer.available))
        lang = pick_language([lang_param, view.get("locale")], accept_language, self.renderer.available)
        PAGES.labels("200").inc()
        return 200, self.renderer.render(view, lang)
