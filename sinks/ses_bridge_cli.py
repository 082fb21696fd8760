"""`shopmail ses-bridge`: SES event notifications (file/stdin lines or SNS HTTP POSTs) → email.feedback."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from sinks.ses_bridge import Bridge, endpoint_from_settings, sns_http_server
from sinks.sns_signature import check_topic_arns


log = logging.getLogger("shopmail.ses_bridge")


def register_bridge(app: typer.Typer) -> None:
    @app.command("ses-bridge")
    def ses_bridge(input: Optional[Path] = typer.Option(None, "--input", "-i",  # noqa: A002
                                                        help="JSON lines of SES events ('-' = stdin)"),
                   http_port: Optional[int] = typer.Option(
                       None, "--http-port", help="serve an SNS HTTP endpoint (signed messages only) on "
                                                 "bridge.bind_host; /healthz and /metrics on bridge.web_port"),
                   config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file")) -> None:
        """Turn SES event notifications into email.feedback records (malformed ones → email.feedback.dlq)."""
        from streams.cli_settings import settings_from
        from streams.services import run_with_ops, service_context

        settings = settings_from(config)
        if http_port is not None:
            try:
                check_topic_arns(settings.bridge.topic_arns)
            except ValueError as exc:
                raise typer.BadParameter(f"{exc}. Set bridge.topic_arns (SHOPMAIL_BRIDGE__TOPIC_ARNS): the SNS "
                                         "topics whose SES events are accepted; SNS signs every account's topics "
                                         "alike") from exc
        serving = http_port is not None  # stdin/file mode keeps Ctrl-C as an interrupt
        with service_context(settings, check_topics=False, handle_signals=serving) as (bootstrap, stop):
            bridge = Bridge(settings, bootstrap)
            if http_port is not None:
                endpoint = endpoint_from_settings(settings, bridge)
                server = sns_http_server(endpoint, settings.bridge.bind_host, http_port,
                                         settings.bridge.max_body_bytes, settings.http).start()
                log.info("SNS endpoint on %s:%d", server.host, server.port)
                try:
                    run_with_ops(settings.bridge.web_port, endpoint.health, lambda s: s.wait(), stop,
                                 "shopmail.ses_bridge", host=settings.ops.bind_host)
                finally:
                    server.shutdown()
            else:
                stream = sys.stdin.buffer if input is None or str(input) == "-" else open(input, "rb")  # noqa: SIM115
                for n, line in enumerate(stream, start=1):
                    if line.strip():
                        bridge.handle(line.strip(), str(input or "stdin"), n)
                bridge.flush()
            print(json.dumps(bridge.counts))
