"""boto3 ``sesv2`` SendEmail with the sink's own retry policy and error classification.

botocore's retries are turned off (``total_max_attempts=1``): SES has no idempotency token, so the sink
decides what is retried (throttling, 5xx, connection errors — with exponential backoff and full
jitter) and what is permanent (rejected, unverified identity, bad request, not found) or pauses
sending altogether (sending paused, account suspended, daily quota exhausted).

The sending threads share one ``sesv2`` client (boto3 clients are thread-safe; its pool holds a keep-alive
connection for each thread), made with botocore's cheapest supported settings for a call whose parameters
the sink builds itself: no client-side parameter validation (SES validates the request and answers
``BadRequestException``, classified permanent), TCP keep-alive on.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError as BotoConnectionError

from streams.config import SesSettings

RETRYABLE_CODES = {"TooManyRequestsException", "Throttling", "ThrottlingException", "LimitExceededException",
                   "ServiceUnavailable", "InternalFailure", "InternalServerError"}
PERMANENT_CODES = {"MessageRejected", "BadRequestException", "MailFromDomainNotVerifiedException",
                   "NotFoundException", "InvalidParameterValue", "ValidationException",
                   "AccessDeniedException"}
PAUSE_CODES = {"SendingPausedException", "AccountSuspendedException"}


class SendFailure(Exception):
    """kind: ``retryable`` | ``permanent`` | ``pause``; ``code`` the SES error code."""

    def __init__(self, kind: str, code: str, message: str, exhausted: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.kind = kind
        self.code = code
        self.message = message
        self.exhausted = exhausted  # a retryable error (throttling, 5xx, connection) that never cleared

    @property
    def service_failing(self) -> bool:
        """SES itself failing (paused, unreachable, erroring) rather than rejecting this one message."""
        return self.kind == "pause" or self.exhausted


@dataclass
class SendResult:
    message_id: str
    attempts: int


def classify(exc: Exception) -> SendFailure:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "Unknown"))
        msg = str(err.get("Message", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in PAUSE_CODES or "Daily message quota exceeded" in msg or "Maximum sending quota" in msg:
            return SendFailure("pause", code, msg)
        if code in RETRYABLE_CODES or status == 429 or status >= 500:
            return SendFailure("retryable", code, msg)
        if code in PERMANENT_CODES or 400 <= status < 500:
            return SendFailure("permanent", code, msg)
        return SendFailure("retryable", code, msg)
    if isinstance(exc, (BotoConnectionError, BotoCoreError)):
        return SendFailure("retryable", type(exc).__name__, str(exc))
    return SendFailure("permanent", type(exc).__name__, str(exc))


def make_client(ses: SesSettings) -> Any:
    """No botocore retries (the sink retries), no client-side parameter validation, TCP keep-alive, a pooled
    connection for every sending thread."""
    cfg = Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=15,
                 max_pool_connections=max(10, ses.max_concurrency * 2), parameter_validation=False,
                 tcp_keepalive=True)
    kwargs: dict[str, Any] = {"region_name": ses.region, "config": cfg}
    if ses.endpoint_url:
        kwargs["endpoint_url"] = ses.endpoint_url
    return boto3.client("sesv2", **kwargs)


def account_send_rate(client: Any) -> float | None:
    """SES's MaxSendRate from GetAccount, or None where it cannot be read (moto: not implemented)."""
    try:
        quota = client.get_account().get("SendQuota", {})
        rate = quota.get("MaxSendRate")
        return float(rate) if rate else None
    except (ClientError, BotoCoreError):
        return None


class SesSender:
    def __init__(self, ses: SesSettings, client: Any | None = None) -> None:
        self.ses = ses
        self.client = client or make_client(ses)
        self.retries = 0  # total retried attempts (metrics)

    def send_raw(self, raw: bytes, to: str, tags: dict[str, str], stop: threading.Event | None = None,
                 on_retry: Any = None, from_address: str | None = None,
                 configuration_set: str | None = None) -> SendResult:
        """``from_address``/``configuration_set``: the mail's own identity (:func:`sinks.mime.sender_identity`);
        None → ``ses.from_address`` / ``ses.configuration_set``."""
        attempt = 0
        while True:
            attempt += 1
            try:
                kwargs: dict[str, Any] = {
                    "FromEmailAddress": from_address or self.ses.from_address, "Destination": {"ToAddresses": [to]},
                    "Content": {"Raw": {"Data": raw}},
                    "EmailTags": [{"Name": k, "Value": _tag_value(v)} for k, v in tags.items()],
                }
                config_set = configuration_set or self.ses.configuration_set
                if config_set:
                    kwargs["ConfigurationSetName"] = config_set
                resp = self.client.send_email(**kwargs)
                return SendResult(resp["MessageId"], attempt)
            except Exception as exc:  # noqa: BLE001 - classified below
                failure = classify(exc)
                if failure.kind != "retryable" or attempt >= self.ses.max_attempts:
                    if failure.kind == "retryable":
                        failure = SendFailure("permanent", failure.code, f"gave up after {attempt} attempts: {failure.message}",
                                              exhausted=True)
                    raise failure from exc
                self.retries += 1
                if on_retry is not None:
                    on_retry(failure)
                delay = random.uniform(0, min(self.ses.backoff_max_s, self.ses.backoff_base_s * 2 ** (attempt - 1)))
                if stop is not None and stop.wait(delay):
                    raise SendFailure("retryable", failure.code, "shutdown during backoff") from exc
                if stop is None:
                    time.sleep(delay)


def _tag_value(value: str) -> str:
    """SES tag values: ASCII letters, digits, underscore, dash (max 256)."""
    return "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in str(value))[:256] or "_"
