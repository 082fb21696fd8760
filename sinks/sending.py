"""Sending: the SES call of one prepared command, the rate limit and the replica's share of it.

``Sending.send`` runs on one of ``ses.max_concurrency`` threads; it never raises: the result is the
command's outcome — ``sent``, ``failed`` (a permanent rejection, dead-lettered), ``unpend`` (SES refuses
to send for now: the command goes back to waiting and its pending entry is withdrawn) or ``abandon``
(shutdown during a backoff: it stays pending, it may have been accepted).
"""

from __future__ import annotations

import threading
import time

from prometheus_client import Counter, Gauge, Histogram

from sinks.intake import Work, now_ms
from sinks.rate_limit import TokenBucket, Unlimited
from sinks.record_errors import truncate
from sinks.ses_sender import SendFailure, SesSender, account_send_rate
from streams.config import Settings

LATENCY = Histogram("shopmail_sink_send_latency_seconds", "SES SendEmail latency incl. retries",
                    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
RETRIES = Counter("shopmail_sink_retries_total", "SES calls retried", ["code"])
QUEUE_AGE = Histogram("shopmail_sink_queue_age_seconds", "Time from send_at to the SES call",
                      buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 1800, 3600))
RATE = Gauge("shopmail_sink_send_rate", "This replica's token-bucket rate (its share of the account's rate), sends/s")


class Sending:
    def __init__(self, settings: Settings, sender: SesSender) -> None:
        self.settings = settings
        self.sender = sender
        ses = settings.ses
        rate = ses.max_send_rate
        if ses.use_account_rate:
            account = account_send_rate(sender.client)
            if account:
                rate = min(rate, account) if rate > 0 else account
        self.rate = rate  # the account's (or configured) rate, shared by all replicas
        burst = ses.rate_burst or None
        self.bucket: TokenBucket | Unlimited = TokenBucket(rate, burst) if rate > 0 else Unlimited()
        self.slots = max(1, ses.max_concurrency)
        self.failing_since: float | None = None  # monotonic time of the first of a run of service failures

    def share(self, assigned: int, total: int) -> None:
        """This replica's share of the send rate: rate × assigned ÷ all partitions of email.commands."""
        ses = self.settings.ses
        if not isinstance(self.bucket, TokenBucket) or not ses.share_rate_by_partitions:
            return
        share = max(assigned, 1) / max(total, 1)  # unassigned: sends nothing anyway
        burst = ses.rate_burst * share if ses.rate_burst else None
        self.bucket.set_rate(self.rate * share, max(1.0, burst) if burst is not None else None)
        RATE.set(self.bucket.rate)

    @property
    def replica_rate(self) -> float | None:
        return self.bucket.rate if isinstance(self.bucket, TokenBucket) else None

    def send(self, w: Work, stop: threading.Event) -> Work:
        cmd = w.command
        QUEUE_AGE.observe(max(0.0, (now_ms() - cmd["send_at"]) / 1000))
        started = time.monotonic()
        tags = {"command_id": cmd["command_id"], "customer_id": cmd["customer_id"], "flow": cmd["flow"],
                "step": str(cmd["step"]), "variant": cmd["variant"]}
        try:
            identity = w.identity
            result = self.sender.send_raw(w.raw, cmd["to"], tags, stop,
                                          on_retry=lambda f: RETRIES.labels(f.code).inc(),
                                          from_address=identity.address if identity else None,
                                          configuration_set=identity.configuration_set if identity else None)
            w.outcome, w.message_id, w.attempts = "sent", result.message_id, result.attempts
            self.failing_since = None
        except SendFailure as exc:
            if exc.service_failing and self.failing_since is None:
                self.failing_since = time.monotonic()
            if exc.kind == "pause":  # not accepted: back to waiting, its pending withdrawn
                w.outcome, w.reason = "unpend", exc.code
            elif exc.kind == "retryable":  # shutdown during backoff: it stays pending (maybe accepted)
                w.outcome = "abandon"
            else:
                w.outcome, w.reason, w.error_code, w.dead_letter = "failed", truncate(f"{exc.code}: {exc.message}"), \
                    exc.code, True
        except Exception as exc:  # noqa: BLE001 - a bug around the call: the command may have gone out
            w.outcome, w.reason, w.error_code = "failed", truncate(f"send_error: {type(exc).__name__}: {exc}"), "send_error"
            w.dead_letter = True
        finally:
            LATENCY.observe(time.monotonic() - started)
        return w
