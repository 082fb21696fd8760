"""Preparation: just before a command is sent, the checks that depend on the moment (expiry, holdout,
consent and suppression) and the mail itself (render + MIME) → ``w.raw`` or a final outcome.

Every exception here is classified in one place (``sinks.record_errors``): a retryable one is tried
again up to ``sink.record_max_attempts`` times, anything else is a ``failed`` outcome with its reason
and a dead letter; the next command goes on.
"""

from __future__ import annotations

from typing import Protocol

from prometheus_client import Counter

from sinks.render_context import render_extra
from sinks.intake import Intake, Work, now_ms
from sinks.mime import build_mime, list_links, sender_identity
from sinks.record_errors import RecordError, classify
from sinks.rendering import Renderer
from streams.config import Settings

RECORD_RETRIES = Counter("shopmail_sink_record_retries_total", "Commands re-prepared after a retryable error",
                         ["code"])


class AudienceView(Protocol):
    def blocked(self, customer_id: str, category: str) -> str | None: ...


class Preparation:
    def __init__(self, settings: Settings, renderer: Renderer, intake: Intake) -> None:
        self.settings = settings
        self.renderer = renderer
        self.intake = intake

    def prepare(self, w: Work, audience: AudienceView) -> None:
        """Prepare ``w`` once; no exception escapes (a failure becomes ``w``'s outcome)."""
        attempts = self.settings.sink.record_max_attempts
        for attempt in range(1, max(1, attempts) + 1):
            try:
                self._prepare(w, audience)
                return
            except Exception as exc:  # noqa: BLE001 - the one per-command net: classified, never fatal
                err = classify(exc, "prepare")
                if err.kind == "retryable" and attempt < attempts:
                    RECORD_RETRIES.labels(err.code).inc()
                    continue
                if err.kind == "retryable":
                    err = RecordError("permanent", err.code, f"gave up after {attempt} attempts: {err.detail}")
                w.fail(err)
                return

    def _prepare(self, w: Work, audience: AudienceView) -> None:
        """Expiry (again, for parked ones), audience checks, rendering → w.raw or a final outcome."""
        cmd = w.command
        w.prepared = True
        if self.intake.expired(cmd):
            w.outcome, w.reason = "suppressed", "expired"
            return
        if cmd["variant"] == "holdout":  # experiment control group: measured, never sent
            w.outcome, w.reason = "suppressed", "holdout"
            return
        blocked = audience.blocked(cmd["customer_id"], cmd["category"])
        if blocked:
            w.outcome, w.reason = "suppressed", blocked
            return
        ses = self.settings.ses
        links = list_links(ses, self.settings.unsubscribe.secret, cmd)
        unsub = links.pop("unsubscribe")
        rendered = self.renderer.render(cmd, unsub, render_extra(self.settings, cmd), list_links=links)
        marketing = cmd["category"] == "marketing"
        w.identity = identity = sender_identity(ses, cmd["category"], rendered.locale, self.settings.brand)
        w.raw = build_mime(rendered, sender=identity.sender, reply_to=identity.reply_to, to=cmd["to"],
                           command_id=cmd["command_id"], category=cmd["category"],
                           unsubscribe_url=unsub if marketing else None,
                           unsubscribe_mailto=ses.unsubscribe_mailto if marketing else None, date_ms=now_ms())
