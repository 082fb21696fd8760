"""The producer guide's Python example (docs/producing.md) runs as written: confluent-kafka's
SerializingProducer + AvroSerializer → the real broker → the worker → the expected commands; and a
registry outage in the running worker dead-letters only what it cannot read."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from schemas import serde
from schemas.registry_client import schema_text
from schemas.subjects import register_all
from streams.config import Settings
from streams.kafka.io import producer_config, read_topic
from tests.support.registry_standin import RegistryStandIn
from tests.support.runtime import running_processor

pytestmark = pytest.mark.integration

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "producing.md"


def guide_example() -> dict[str, Any]:
    """The ```python block of the guide, executed as a module."""
    (code,) = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    namespace: dict[str, Any] = {}
    exec(compile(code, str(GUIDE), "exec"), namespace)  # noqa: S102 - the documented example, run as written
    return namespace


@pytest.fixture
def registry_settings(settings: Settings) -> Iterator[tuple[Settings, RegistryStandIn]]:
    reg = RegistryStandIn().start()
    settings.registry.url = reg.url
    settings.registry.max_retries = 0
    settings.registry.timeout_s = 2.0
    try:
        yield settings, reg
    finally:
        serde.configure(None)
        reg.stop()


def test_the_guides_python_producer_becomes_an_order_confirmation_a_standard_deserializer_reads(kafka, registry_settings):
    settings, reg = registry_settings
    settings.registry.output_framing = "registry"
    register_all(settings)  # what the deploy pipeline runs: the producer does not register schemas itself
    orders = settings.topics.name("orders")
    with running_processor(settings, kafka):
        guide_example()["produce_order"](kafka, reg.url, orders, "c-17")
        commands = read_topic(kafka, settings.topics.name("commands"), expect=1, timeout_s=30)
    assert [c.decoded().record["flow"] for c in commands] == ["order_confirmation"]
    cmd = commands[0].decoded().record
    assert cmd["customer_id"] == "c-17" and cmd["to"] == "c-17@example.com" and commands[0].key == b"c-17"
    assert read_topic(kafka, settings.topics.dlq("orders"), timeout_s=2, idle_s=0.5) == []
    # the command is in registry framing: Kafka Connect, ksqlDB or this deserializer read it as is
    assert commands[0].value[:1] == b"\x00"
    standard = AvroDeserializer(SchemaRegistryClient({"url": reg.url}))
    assert standard(commands[0].value, SerializationContext(settings.topics.name("commands"), MessageField.VALUE)) == cmd


def test_a_registry_outage_dead_letters_uncached_schemas_and_the_partition_goes_on(kafka, registry_settings):
    settings, reg = registry_settings
    settings.topics.partitions = 1
    settings.registry.retry_after_s = 60.0
    orders = settings.topics.name("orders")
    v2 = AvroSerializer(SchemaRegistryClient({"url": reg.url}), schema_text(serde.registry().v2["OrderEvent"]))
    v1 = AvroSerializer(SchemaRegistryClient({"url": reg.url}), schema_text(serde.registry().get("OrderEvent")))
    ctx = SerializationContext(orders, MessageField.VALUE)
    reg.compatibility[f"{orders}-value"] = "NONE"  # v1 and v2 in one subject: the migration's level

    def order(n: int, contract: AvroSerializer) -> bytes:
        from datetime import datetime, timezone
        from decimal import Decimal

        at = datetime.now(timezone.utc)
        rec = {"event_id": f"e{n}", "customer_id": f"c{n}", "type": "placed", "order_id": f"o{n}",
               "email": f"c{n}@example.com", "currency": "EUR",
               "items": [{"sku": "MUG", "name": "Mug", "price": Decimal("5.00"), "quantity": 1}]}
        if contract is v2:
            rec |= {"occurred_at": at, "total": Decimal("5.00")}
        else:
            rec |= {"occurred_at": int(at.timestamp() * 1000), "total": "5.00",
                    "items": [dict(rec["items"][0], price="5.00")]}
        return contract(rec, ctx)

    first, uncached = order(1, v2), order(2, v1)  # both ids exist in the registry
    p = Producer(producer_config(settings, kafka))
    with running_processor(settings, kafka):
        p.produce(orders, key=b"c1", value=first)
        p.flush(10)
        read_topic(kafka, settings.topics.name("commands"), expect=1, timeout_s=30)  # v2's id is now cached
        reg.stop()
        p.produce(orders, key=b"c2", value=uncached)
        p.produce(orders, key=b"c3", value=order(3, v2))
        p.flush(10)
        commands = read_topic(kafka, settings.topics.name("commands"), expect=2, timeout_s=30)
        dlq = read_topic(kafka, settings.topics.dlq("orders"), expect=1, timeout_s=30)
    assert sorted(c.decoded().record["customer_id"] for c in commands) == ["c1", "c3"]
    letter = dlq[0].decoded().record
    assert letter["error"] == "registry_unavailable" and letter["original_value"] == uncached
    assert "re-drive" in letter["detail"]
