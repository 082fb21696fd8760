"""``shopmail unsubscribe-server``: the endpoint behind every list link of a mail (``List-Unsubscribe``,
"keep me subscribed", preferences), all at ``ses.unsubscribe_base_url`` with ``a=<purpose>``.

- no ``a`` (unsubscribe): ``POST`` (RFC 8058 one-click: body ``List-Unsubscribe=One-Click``, sent by the
  mailbox provider, or the confirmation page's form) → an ``unsubscribed`` EmailFeedback on
  ``email.feedback`` (key customer_id, ``event_id`` ``unsubscribe:<command_id>`` so repeats are ignored
  downstream), acknowledged only after the broker has it; ``GET`` → a confirmation page with one button.
- ``a=keep`` (the "keep me subscribed" link of a goodbye mail): ``GET`` → a confirmation page, ``POST`` →
  a ``resubscribed`` EmailFeedback (``event_id`` ``keep:<command_id>``).
- ``a=preferences``: ``GET`` → a page with two forms, ``POST`` with ``choice=unsubscribe`` →
  ``unsubscribed``, ``choice=keep`` → ``resubscribed`` (``event_id``
  ``preferences:<command_id>:<choice>:<ms>``: each choice counts, the last one wins).

A GET changes nothing: link scanners and previewers fetch URLs in mail, and must not unsubscribe anyone.
Every page is in the recipient's language. The URL's token is an HMAC over (purpose, customer, command,
locale) with ``unsubscribe.secret`` (:mod:`sinks.unsubscribe_token`); a missing, forged or edited one, or
one signed for another purpose, gets 403 and produces nothing.

``/healthz`` and ``/metrics`` are served on the ops port (``unsubscribe.web_port``), never here.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

import typer
from confluent_kafka import Producer
from prometheus_client import Counter

from schemas import serde
from sinks.rendering import TEMPLATE_DIR, load_translations, make_environment, safe_url, shipped_locales
from sinks.unsubscribe_token import PURPOSES, verify
from streams.config import Settings
from streams.kafka.io import producer_config
from streams.web import HttpServer, OpsServer, Request, Response, Route

log = logging.getLogger("shopmail.unsubscribe")
REQUESTS = Counter("shopmail_unsubscribe_requests_total", "Unsubscribe endpoint requests", ["method", "outcome"])

# The pages carry inline styles and forms that post back to this service; nothing else is loaded.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                           "frame-ancestors 'none'; base-uri 'none'",
                "X-Robots-Tag": "noindex, nofollow"}
GET_STATES = {"unsubscribe": "confirm", "keep": "keep", "preferences": "preferences"}
CHOICES = {"unsubscribe": ("unsubscribed", "done"), "keep": ("resubscribed", "kept")}
MAX_BODY_BYTES = 4096


def openapi(path: str) -> dict[str, Any]:
    """The service's OpenAPI description (the list links are served at ``path``)."""
    params = [{"name": n, "in": "query", "required": n != "a", "schema": {"type": "string"}, "description": d}
              for n, d in (("c", "command id"), ("u", "customer id"), ("l", "locale of the pages"),
                           ("a", "purpose: keep or preferences (absent: unsubscribe)"), ("t", "signed token"))]
    answers = {"200": {"description": "the page, or the change was recorded"},
               "400": {"description": "a preferences POST without a choice"},
               "403": {"description": "missing, forged or edited link"}, "413": {"description": "body too large"},
               "503": {"description": "not recorded (the broker did not confirm): retry"}}
    form = {"application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": {
        "List-Unsubscribe": {"type": "string", "enum": ["One-Click"]},
        "choice": {"type": "string", "enum": ["unsubscribe", "keep"]}}}}}
    return {"openapi": "3.0.3", "info": {"title": "shopmail unsubscribe-server: list links", "version": "1"},
            "paths": {path: {"parameters": params,
                             "get": {"summary": "a confirmation or preference page", "responses": answers},
                             "post": {"summary": "unsubscribe, keep subscribed, or a preference choice",
                                      "requestBody": {"required": False, "content": form}, "responses": answers}}}}


class UnsubscribeService:
    def __init__(self, settings: Settings, bootstrap: str, port: int | None = None, host: str | None = None,
                 ops_port: int | None = None) -> None:
        if not settings.unsubscribe.secret:
            raise ValueError("unsubscribe.secret is empty: set SHOPMAIL_UNSUBSCRIBE__SECRET (the key the sink signs with)")
        self.settings = settings
        self.key = settings.unsubscribe.secret
        self.topic = settings.topics.name("feedback")
        self.producer = Producer(producer_config(settings, bootstrap, **{"enable.idempotence": True, "linger.ms": 0}))
        self.languages = shipped_locales()
        self._pages = {lang: make_environment(TEMPLATE_DIR, load_translations(lang), html=True)
                       .get_template("pages/unsubscribe.html") for lang in self.languages}
        path = urlsplit(settings.ses.unsubscribe_base_url).path or "/"
        routes = [Route("GET", "/{tail:.*}", self.get), Route("POST", "/{tail:.*}", self.post, MAX_BODY_BYTES)]
        host = host or settings.unsubscribe.bind_host
        self.http = HttpServer(host, settings.unsubscribe.port if port is None else port, routes, "unsubscribe-http",
                               settings.http, PAGE_HEADERS, openapi=openapi(path))
        self.ops = OpsServer(settings.unsubscribe.web_port if ops_port is None else ops_port, self.health,
                             host=settings.ops.bind_host, limits=settings.http)
        self.port = 0
        self._delivery_failing = False

    # ---- requests -----------------------------------------------------------------------------
    def _link(self, request: Request) -> tuple[dict[str, str], str, str | None]:
        """(query, page language, purpose of a valid link or None)."""
        q = dict(request.query)
        lang = (q.get("l") or "").split("-")[0].split("_")[0]
        lang = lang if lang in self.languages else self.settings.brand.default_locale
        purpose = q.get("a") or "unsubscribe"
        valid = purpose in PURPOSES and all(q.get(k) for k in ("c", "u", "l", "t")) and q["t"].isascii() \
            and verify(self.key, q["u"], q["c"], q["l"], q["t"], purpose)  # tokens are base64: ASCII
        return q, lang, purpose if valid else None

    def _page(self, status: int, lang: str, state: str, action: str = "") -> Response:
        brand = self.settings.brand
        support = f"mailto:{brand.support_email}" if brand.support_email else safe_url(brand.support_url)
        return Response.html(status, self._pages[lang].render(
            lang=lang, state=state, action=action, brand=brand, support_link=safe_url(support),
            support_label=brand.support_email or brand.support_url))

    def get(self, request: Request) -> Response:
        q, lang, purpose = self._link(request)
        if purpose is None:
            REQUESTS.labels("GET", "forbidden").inc()
            return self._page(403, lang, "invalid")
        REQUESTS.labels("GET", f"{purpose}_page").inc()
        return self._page(200, lang, GET_STATES[purpose], action=request.raw_path)

    def post(self, request: Request) -> Response:
        q, lang, purpose = self._link(request)
        if purpose is None:
            REQUESTS.labels("POST", "forbidden").inc()
            return self._page(403, lang, "invalid")
        one_click = purpose == "unsubscribe" and b"List-Unsubscribe=One-Click" in request.body
        now = int(time.time() * 1000)
        if purpose == "preferences":
            form = parse_qs(request.body.decode("utf-8", "replace"))
            choice = (form.get("choice") or [""])[0]
            if choice not in CHOICES:
                REQUESTS.labels("POST", "no_choice").inc()
                return self._page(400, lang, "preferences", action=request.raw_path)
            event_id = f"preferences:{q['c']}:{choice}:{now}"
        else:
            choice = purpose
            event_id = f"{purpose}:{q['c']}"
        kind, state = CHOICES[choice]
        record = {"event_id": event_id, "customer_id": q["u"], "occurred_at": now, "type": kind, "command_id": q["c"],
                  "message_id": None, "link": None, "bounce_type": None}
        error = self._publish(q["u"], record)
        if error is not None:
            REQUESTS.labels("POST", "unavailable").inc()
            log.warning("%s for %s not delivered: %s", kind, q["u"], error)
            return Response(503, b"try again", headers={"Retry-After": "5"})
        REQUESTS.labels("POST", "one_click" if one_click else kind).inc()
        log.debug("%s %s (command %s, %s link)", kind, q["u"], q["c"], purpose)
        if one_click:
            return Response(200, b"unsubscribed")
        return self._page(200, lang, state)

    def _publish(self, customer_id: str, record: dict[str, Any]) -> str | None:
        """Produce and wait for the broker; None when written, else why not."""
        errors: list[str] = []
        try:
            self.producer.produce(self.topic, key=customer_id.encode(), value=serde.encode("EmailFeedback", record, self.topic),
                                  on_delivery=lambda err, _msg: errors.append(str(err)) if err else None)
        except (BufferError, ValueError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        if not errors and self.producer.flush(10):
            errors.append("not confirmed within 10 s")
        self._delivery_failing = bool(errors)
        return "; ".join(errors) if errors else None

    def health(self) -> tuple[bool, dict[str, Any]]:
        return not self._delivery_failing, {"delivery_failing": self._delivery_failing}

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "UnsubscribeService":
        self.http.start()
        self.ops.start()
        self.port = self.http.port
        return self

    def shutdown(self) -> None:
        self.http.shutdown()
        self.ops.shutdown()
        self.producer.flush(10)


def register(app: typer.Typer) -> None:
    @app.command("unsubscribe-server")
    def unsubscribe_server(port: Optional[int] = typer.Option(None, "--port", help="default: unsubscribe.port"),
                           config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file")) -> None:
        """Serve the list links (unsubscribe, keep subscribed, preferences): pages on GET, changes on POST →
        email.feedback; /healthz and /metrics on unsubscribe.web_port."""
        from streams.cli_settings import settings_from
        from streams.services import service_context

        settings = settings_from(config)
        if not settings.unsubscribe.secret:
            raise typer.BadParameter("set SHOPMAIL_UNSUBSCRIBE__SECRET (unsubscribe.secret): the sink signs links with it")
        with service_context(settings, check_topics=False) as (bootstrap, stop):
            service = UnsubscribeService(settings, bootstrap, port=port).start()
            log.info("unsubscribe endpoint on %s:%d → %s; ops http on %s:%d", service.http.host, service.port,
                     service.topic, service.ops.host, service.ops.port)
            try:
                stop.wait()
            finally:
                service.shutdown()
