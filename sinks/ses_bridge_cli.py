"""`shopmail ses-bridge`: SES event notifications (file/stdin lines or SNS HTTP POSTs) → email.feedback."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional

import typer
from confluent_kafka import Producer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from schemas import serde
from sinks.ses_events import BridgeError, to_feedback
from streams.config import Settings
from streams.kafka_io import producer_config

log = logging.getLogger("shopmail.ses_bridge")
FEEDBACK = Counter("shopmail_feedback_total", "SES events turned into email.feedback", ["type"])


class Bridge:
    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.topic = settings.topics.name("feedback")
        self.dlq = settings.topics.dlq("feedback")
        self.producer = Producer(producer_config(settings, bootstrap, **{"enable.idempotence": True}))
        self.counts = {"feedback": 0, "ignored": 0, "dead_lettered": 0}

    def handle(self, raw: bytes, source: str, position: int) -> str:
        try:
            record = to_feedback(json.loads(raw))
        except (BridgeError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, BridgeError) else "malformed"
            detail = exc.detail if isinstance(exc, BridgeError) else f"not JSON: {exc}"
            dl = {"original_value": raw, "original_key": None, "topic": source, "partition": -1, "offset": position,
                  "error": reason, "detail": detail[:2000], "failed_at": int(time.time() * 1000),
                  "component": "ses-bridge"}
            self.producer.produce(self.dlq, value=serde.encode("DeadLetter", dl))
            self.counts["dead_lettered"] += 1
            log.warning("dead-lettered %s #%d: %s: %s", source, position, reason, detail)
            return "dead_lettered"
        if record is None:
            self.counts["ignored"] += 1
            return "ignored"
        self.producer.produce(self.topic, key=record["customer_id"].encode(), value=serde.encode("EmailFeedback", record))
        self.counts["feedback"] += 1
        FEEDBACK.labels(record["type"]).inc()
        return "feedback"

    def flush(self) -> None:
        if self.producer.flush(30):
            raise RuntimeError("could not deliver every feedback record")


def serve_sns(bridge: Bridge, port: int, stop: threading.Event) -> None:
    counter = iter(range(1, 1 << 62))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if b'"SubscriptionConfirmation"' in body:
                log.warning("SNS subscription confirmation received: confirm it via its SubscribeURL")
            result = bridge.handle(body, "sns-http", next(counter))
            bridge.flush()
            self.send_response(200 if result != "dead_lettered" else 202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/metrics"):
                body, ctype, code = generate_latest(), CONTENT_TYPE_LATEST, 200
            else:
                body, ctype, code = b"{\"ok\": true}", "application/json", 200 if self.path.startswith("/healthz") else 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log.info("SNS endpoint on :%d", server.server_address[1])
    stop.wait()
    server.shutdown()


def register_bridge(app: typer.Typer) -> None:
    @app.command("ses-bridge")
    def ses_bridge(input: Optional[Path] = typer.Option(None, "--input", "-i",  # noqa: A002
                                                        help="JSON lines of SES events ('-' = stdin)"),
                   http_port: Optional[int] = typer.Option(None, "--http-port", help="serve an SNS HTTP endpoint"),
                   config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file")) -> None:
        """Turn SES event notifications into email.feedback records (malformed ones → email.feedback.dlq)."""
        from streams.cli import settings_from
        from streams.service_cli import service_context

        settings = settings_from(config)
        serving = http_port is not None  # stdin/file mode keeps Ctrl-C as an interrupt
        with service_context(settings, check_topics=False, handle_signals=serving) as (bootstrap, stop):
            bridge = Bridge(settings, bootstrap)
            if http_port is not None:
                serve_sns(bridge, http_port, stop)
            else:
                stream = sys.stdin.buffer if input is None or str(input) == "-" else open(input, "rb")  # noqa: SIM115
                for n, line in enumerate(stream, start=1):
                    if line.strip():
                        bridge.handle(line.strip(), str(input or "stdin"), n)
                bridge.flush()
            print(json.dumps(bridge.counts))
