"""Run the SES sink in a background thread against the moto HTTP server (or a fault proxy)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import boto3

from sinks.service import SinkService
from streams import background
from streams.config import Settings
from streams.topics import ensure_topics, topic_specs


def verify_sender(settings: Settings, endpoint_url: str) -> None:
    boto3.client("sesv2", endpoint_url=endpoint_url, region_name=settings.ses.region).create_email_identity(
        EmailIdentity=settings.ses.from_address)


def point_at_ses(settings: Settings, endpoint_url: str) -> None:
    settings.ses.endpoint_url = endpoint_url
    settings.ses.use_account_rate = False  # moto does not implement GetAccount
    settings.ses.backoff_base_s = 0.05
    settings.ses.backoff_max_s = 0.5


@contextlib.contextmanager
def running_sink(settings: Settings, bootstrap: str, instance_id: str = "sink-0",
                 ready_timeout_s: float = 30.0) -> Iterator[SinkService]:
    assert ensure_topics(bootstrap, topic_specs(settings)).healthy
    service = SinkService(settings, bootstrap, instance_id=instance_id)
    bg = background.start(service.run, "sink")
    try:
        if not service.ready.wait(ready_timeout_s):
            raise AssertionError(f"sink not ready in {ready_timeout_s}s (errors: {bg.errors})")
        yield service
    finally:
        bg.finish()
