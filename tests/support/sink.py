"""Run the SES sink in a background thread against the moto HTTP server (or a fault proxy)."""

from __future__ import annotations

import contextlib
from collections import Counter
import json
import time
from collections.abc import Iterator

import boto3
import pytest

from schemas import serde
from bench.fault_proxy import FaultProxy
from streams.kafka.io import produce_records, read_topic

from sinks.service import SinkService
from streams.runtime import background
from streams.config import Settings
from streams.kafka.topics import ensure_topics, topic_specs


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


def now() -> int:
    return int(time.time() * 1000)


def command(n: int, customer: str = "cust-1", category: str = "transactional", flow: str = "order_confirmation",
            step: int = 1, send_in_ms: int = 0, expires_in_ms: int = 3_600_000, context: dict | None = None,
            **extra) -> dict:
    ctx = context if context is not None else {
        "order_id": f"o-{n}", "total": "12.00", "currency": "EUR", "cross_sell": [],
        "items": [{"sku": "S", "name": f"Item {n}", "price": "12.00", "quantity": 1, "image_url": None, "url": None}]}
    return serde.from_json("EmailCommand", {
        "command_id": f"cmd-{n}-{customer}", "customer_id": customer, "to": f"{customer}@example.com", "flow": flow,
        "step": step, "template": f"{flow}/step{step}", "category": category, "send_at": now() + send_in_ms,
        "expires_at": now() + expires_in_ms, "context": json.dumps(ctx), "trigger_event_id": f"ev-{n}",
        "created_at": now(), **extra})


CART_CTX = {"cart_id": "k1", "cart_url": "https://shop.example.com/cart/k1", "cart_total": "9.00", "currency": "EUR",
            "items": [{"sku": "M", "name": "Mug", "price": "9.00", "quantity": 1, "image_url": None, "url": None}]}


def consent(settings, kafka, customer: str, opt_in: bool = True) -> None:
    produce_records(settings, kafka, settings.topics.name("customers"), "CustomerEvent", [serde.from_json(
        "CustomerEvent", {"event_id": f"p-{customer}-{now()}", "customer_id": customer, "occurred_at": now(),
                          "type": "upserted", "email": f"{customer}@example.com", "marketing_opt_in": opt_in})])


def outcomes(kafka, settings, expect: int, timeout_s: float = 30) -> list[dict]:
    return [r.decoded().record for r in read_topic(kafka, settings.topics.name("outcomes"), expect=expect,
                                                    timeout_s=timeout_s)]


@pytest.fixture
def proxy(moto_ses):
    p = FaultProxy(moto_ses.endpoint_url)
    yield p
    p.close()


@pytest.fixture
def sink_settings(kafka, settings, moto_ses, proxy):
    from streams.kafka.topics import ensure_topics, topic_specs

    assert ensure_topics(kafka, topic_specs(settings)).healthy
    point_at_ses(settings, proxy.url)
    verify_sender(settings, moto_ses.endpoint_url)
    settings.ses.max_send_rate = 200
    return settings


def delivered(moto_ses, marker: str = "X-Shopmail-Command-Id: ") -> Counter:  # type: ignore[no-untyped-def]
    """command_id → how many emails moto received for it."""
    out: Counter = Counter()
    for m in moto_ses.sent_messages():
        if marker in m["raw_data"]:
            out[m["raw_data"].split(marker)[1].split("\r\n")[0].split("\n")[0]] += 1
    return out


def settled_to_end(bootstrap: str, group: str, topic: str, ends: dict[int, int]) -> bool:
    """True once ``group`` has committed, on every partition of ``topic``, its end offset (``ends``,
    from :func:`topic_ends`): every command read is settled (or parked) and its outcome committed with
    that offset."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committed = c.committed([TopicPartition(topic, p) for p in sorted(ends)], timeout=10)
        return all(tp.offset == ends[tp.partition] or ends[tp.partition] == 0 for tp in committed)
    finally:
        c.close()


def topic_ends(bootstrap: str, topic: str, timeout_s: float = 120) -> dict[int, int]:
    """partition → end offset, where a fetch reports the partition's end (Tansu's ListOffsets answer
    for the latest offset can be one short of it)."""
    ends: dict[int, int] = {}
    _read_to_end(bootstrap, topic, timeout_s, ends)
    return ends


def read_to_end(bootstrap: str, topic: str, timeout_s: float = 120) -> list[dict]:
    """Every committed record of ``topic`` (decoded), read up to the end of every partition: no idle
    guess, so a record committed last is never missed. Call it once nothing writes to the topic."""
    return [serde.decode(value, topic=topic).record for value in _read_to_end(bootstrap, topic, timeout_s, {})]


def _read_to_end(bootstrap: str, topic: str, timeout_s: float, ends: dict[int, int]) -> list[bytes]:
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "shopmail-reader", "enable.auto.commit": False,
                  "enable.partition.eof": True, "isolation.level": "read_committed"})
    try:
        parts = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        out: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while len(ends) < len(parts):
            assert time.monotonic() < deadline, f"{topic} not read to its end in {timeout_s} s"
            for m in c.consume(1000, 0.5):
                if m.error():
                    assert m.error().code() == KafkaError._PARTITION_EOF, str(m.error())
                    ends[m.partition()] = m.offset()
                    continue
                out.append(m.value())
        return out
    finally:
        c.close()
