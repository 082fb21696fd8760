"""``shopmail unsubscribe-server``: the endpoint behind every ``List-Unsubscribe`` URL.

- ``POST <url>`` (RFC 8058 one-click: body ``List-Unsubscribe=One-Click``, sent by the mailbox provider, or
  the confirmation page's form) → an ``unsubscribed`` EmailFeedback on ``email.feedback`` (key customer_id,
  ``event_id`` ``unsubscribe:<command_id>`` so repeats are ignored downstream), acknowledged only after the
  broker has it.
- ``GET <url>`` → a confirmation page in the recipient's language with one button (a POST). A GET changes
  nothing: link scanners and previewers fetch URLs in mail, and must not unsubscribe anyone.
- The URL's token is an HMAC over (customer, command, locale) with ``unsubscribe.secret``
  (:mod:`sinks.unsubscribe_token`); a missing, forged or edited one gets 403 and produces nothing.

``/healthz`` and ``/metrics`` are served on the same port.
"""

from __future__ import annotations

import logging
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

import typer
from confluent_kafka import Producer
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from schemas import serde
from sinks.rendering import TEMPLATE_DIR, load_translations, make_environment, safe_url, shipped_locales
from sinks.unsubscribe_token import verify
from streams.config import Settings
from streams.kafka.io import producer_config
from streams.web import HttpListener

log = logging.getLogger("shopmail.unsubscribe")
REQUESTS = Counter("shopmail_unsubscribe_requests_total", "Unsubscribe endpoint requests", ["method", "outcome"])


class UnsubscribeService:
    def __init__(self, settings: Settings, bootstrap: str, port: int | None = None, host: str | None = None) -> None:
        if not settings.unsubscribe.secret:
            raise ValueError("unsubscribe.secret is empty: set SHOPMAIL_UNSUBSCRIBE__SECRET (the key the sink signs with)")
        self.settings = settings
        self.key = settings.unsubscribe.secret
        self.topic = settings.topics.name("feedback")
        self.producer = Producer(producer_config(settings, bootstrap, **{"enable.idempotence": True, "linger.ms": 0}))
        self.languages = shipped_locales()
        self._pages = {lang: make_environment(TEMPLATE_DIR, load_translations(lang), html=True)
                       .get_template("pages/unsubscribe.html") for lang in self.languages}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                if self.path.startswith("/metrics"):
                    self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
                elif self.path.startswith("/healthz"):
                    self._send(200, b'{"ok": true}', "application/json")
                else:
                    self._send(*outer.get(self.path))

            def do_POST(self) -> None:  # noqa: N802
                length = min(int(self.headers.get("Content-Length") or 0), 4096)
                self._send(*outer.post(self.path, self.rfile.read(length)))

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("Referrer-Policy", "no-referrer")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.http = HttpListener(host or settings.unsubscribe.bind_host,
                                 settings.unsubscribe.port if port is None else port, Handler, "unsubscribe-http")
        self.port = self.http.port

    # ---- requests -----------------------------------------------------------------------------
    def _params(self, path: str) -> tuple[dict[str, str], bool]:
        q = {k: v[0] for k, v in parse_qs(urlsplit(path).query, keep_blank_values=True).items()}
        valid = all(q.get(k) for k in ("c", "u", "l", "t")) and verify(self.key, q["u"], q["c"], q["l"], q["t"])
        return q, valid

    def _page(self, lang: str, state: str, action: str = "") -> bytes:
        lang = lang if lang in self.languages else self.settings.brand.default_locale
        brand = self.settings.brand
        support = f"mailto:{brand.support_email}" if brand.support_email else safe_url(brand.support_url)
        return self._pages[lang].render(lang=lang, state=state, action=action, brand=brand,
                                        support_link=safe_url(support),
                                        support_label=brand.support_email or brand.support_url).encode()

    def get(self, path: str) -> tuple[int, bytes, str]:
        q, valid = self._params(path)
        lang = (q.get("l") or "").split("-")[0].split("_")[0]
        if not valid:
            REQUESTS.labels("GET", "forbidden").inc()
            return 403, self._page(lang, "invalid"), "text/html; charset=utf-8"
        REQUESTS.labels("GET", "confirm_page").inc()
        return 200, self._page(lang, "confirm", action=path), "text/html; charset=utf-8"

    def post(self, path: str, body: bytes) -> tuple[int, bytes, str]:
        q, valid = self._params(path)
        lang = (q.get("l") or "").split("-")[0].split("_")[0]
        if not valid:
            REQUESTS.labels("POST", "forbidden").inc()
            return 403, self._page(lang, "invalid"), "text/html; charset=utf-8"
        record = {"event_id": f"unsubscribe:{q['c']}", "customer_id": q["u"], "occurred_at": int(time.time() * 1000),
                  "type": "unsubscribed", "command_id": q["c"], "message_id": None, "link": None, "bounce_type": None}
        errors: list[str] = []
        self.producer.produce(self.topic, key=q["u"].encode(), value=serde.encode("EmailFeedback", record, self.topic),
                              on_delivery=lambda err, _msg: errors.append(str(err)) if err else None)
        if self.producer.flush(10) or errors:
            REQUESTS.labels("POST", "unavailable").inc()
            log.warning("unsubscribe for %s not delivered: %s", q["u"], errors or "timeout")
            return 503, b"try again", "text/plain; charset=utf-8"
        one_click = b"List-Unsubscribe=One-Click" in body
        REQUESTS.labels("POST", "one_click" if one_click else "confirmed").inc()
        log.debug("unsubscribed %s (command %s)", q["u"], q["c"])
        if one_click:
            return 200, b"unsubscribed", "text/plain; charset=utf-8"
        return 200, self._page(lang, "done"), "text/html; charset=utf-8"

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "UnsubscribeService":
        self.http.start()
        return self

    def shutdown(self) -> None:
        self.http.shutdown()
        self.producer.flush(10)


def register(app: typer.Typer) -> None:
    @app.command("unsubscribe-server")
    def unsubscribe_server(port: Optional[int] = typer.Option(None, "--port", help="default: unsubscribe.port"),
                           config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file")) -> None:
        """Serve the one-click unsubscribe endpoint (POST) and its confirmation page (GET) → email.feedback."""
        from streams.cli.main import settings_from
        from streams.cli.service import service_context

        settings = settings_from(config)
        if not settings.unsubscribe.secret:
            raise typer.BadParameter("set SHOPMAIL_UNSUBSCRIBE__SECRET (unsubscribe.secret): the sink signs links with it")
        with service_context(settings, check_topics=False) as (bootstrap, stop):
            service = UnsubscribeService(settings, bootstrap, port=port).start()
            log.info("unsubscribe endpoint on :%d → %s", service.port, service.topic)
            try:
                stop.wait()
            finally:
                service.shutdown()
