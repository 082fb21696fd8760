"""Schema Registry framing beside single-object encoding, producer-first evolution and contract v2,
against the registry stand-in on a real socket (tests/support/registry_standin.py)."""

from __future__ import annotations

import copy
import io
import json
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from schemas import serde
from schemas.registry_client import schema_text
from schemas.subjects import register_all, subjects
from streams.config import SchemaRegistrySettings, load_settings
from tests.support.registry_standin import RegistryStandIn
from tests.test_security_broker import pki  # noqa: F401 - the fixture: a test CA and a loopback certificate

TOPIC = "shop.orders"
AT = datetime(2026, 3, 1, 12, 30, tzinfo=timezone.utc)
AT_MS = 1_772_368_200_000


def order_v2(**over: Any) -> dict[str, Any]:
    """An order as a producer writes contract v2: Decimal money, datetime times."""
    rec = {"event_id": "e1", "customer_id": "c1", "occurred_at": AT, "type": "placed", "order_id": "o1",
           "items": [{"sku": "MUG", "name": "Mug", "price": Decimal("9.90"), "quantity": 2}],
           "total": Decimal("19.80"), "currency": "EUR", "subtotal": Decimal("16.50"), "tax": Decimal("3.30")}
    rec.update(over)
    return rec


ORDER_V1 = {"event_id": "e1", "customer_id": "c1", "occurred_at": AT_MS, "type": "placed", "order_id": "o1",
            "items": [{"sku": "MUG", "name": "Mug", "price": "9.90", "quantity": 2}], "total": "19.80",
            "currency": "EUR", "subtotal": "16.50", "tax": "3.30"}


@pytest.fixture
def standin() -> Iterator[RegistryStandIn]:
    reg = RegistryStandIn().start()
    serde.configure(SchemaRegistrySettings(url=reg.url, retry_after_s=30.0, timeout_s=2.0, max_retries=0))
    try:
        yield reg
    finally:
        serde.configure(None)
        reg.stop()


def serializer(reg: RegistryStandIn, schema: dict[str, Any] | str) -> AvroSerializer:
    text = schema if isinstance(schema, str) else json.dumps(schema)
    return AvroSerializer(SchemaRegistryClient({"url": reg.url}), text)


def confluent_bytes(reg: RegistryStandIn, schema: dict[str, Any] | str, record: dict[str, Any],
                    topic: str = TOPIC) -> bytes:
    return serializer(reg, schema)(record, SerializationContext(topic, MessageField.VALUE))


def v2_raw(name: str) -> dict[str, Any]:
    return copy.deepcopy(serde.registry().v2[name].raw)


def single_object(raw: dict[str, Any], record: dict[str, Any]) -> bytes:
    entry = serde.make_entry(raw, serde.SCHEMA_DIR / "producer.avsc")
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, entry.parsed, record)
    return serde.MAGIC + entry.fingerprint_bytes + buf.getvalue()


def test_a_record_from_confluents_avro_serializer_reads_as_the_same_domain_record_as_contract_v1(standin):
    data = confluent_bytes(standin, schema_text(serde.registry().v2["OrderEvent"]), order_v2())
    assert data[:1] == b"\x00"  # Confluent framing: magic 0, then the 4-byte schema id
    from_v2 = serde.decode(data, "OrderEvent", TOPIC)
    from_v1 = serde.decode(serde.encode("OrderEvent", serde.from_json("OrderEvent", ORDER_V1)), "OrderEvent")
    assert from_v2.name == "OrderEvent" and from_v2.record == from_v1.record


def test_contract_v1_through_the_registry_is_read_as_is(standin):
    rec = serde.from_json("OrderEvent", ORDER_V1)
    data = confluent_bytes(standin, schema_text(serde.registry().get("OrderEvent")), rec)
    assert serde.decode(data, "OrderEvent", TOPIC).record == rec


def test_single_object_contract_v2_needs_no_registry():
    serde.configure(None)
    data = single_object(v2_raw("OrderEvent"), order_v2())
    assert serde.decode(data, "OrderEvent").record == serde.from_json("OrderEvent", ORDER_V1)


def test_a_newer_writer_with_a_new_field_and_a_new_enum_symbol_is_read_via_the_registry(standin):
    raw = v2_raw("EmailFeedback")
    raw["fields"].append({"name": "campaign", "type": ["null", "string"], "default": None, "doc": "new"})
    bounce = next(f for f in raw["fields"] if f["name"] == "bounce_type")
    bounce["type"][1]["symbols"].append("undetermined")
    rec = {"event_id": "f1", "customer_id": "c1", "occurred_at": AT, "type": "bounced",
           "bounce_type": "undetermined", "campaign": "spring"}
    decoded = serde.decode(confluent_bytes(standin, raw, rec, "email.feedback"), "EmailFeedback", "email.feedback")
    assert decoded.record["bounce_type"] == "unknown"  # the enum's default: not a permanent bounce
    assert decoded.record["occurred_at"] == AT_MS and "campaign" not in decoded.record


def test_a_single_object_record_of_an_unshipped_writer_is_read_once_the_producer_registers_it(standin):
    raw = v2_raw("OrderEvent")
    raw["fields"].append({"name": "gift_wrap", "type": "boolean", "default": False, "doc": "new"})
    data = single_object(raw, order_v2(gift_wrap=True))
    with pytest.raises(serde.SerdeError) as err:
        serde.decode(data, "OrderEvent", TOPIC)
    assert err.value.reason == "unknown_fingerprint" and "shop.orders-value" in err.value.detail
    SchemaRegistryClient({"url": standin.url}).register_schema(f"{TOPIC}-value", Schema(json.dumps(raw), "AVRO"))
    serde.configure(SchemaRegistrySettings(url=standin.url))  # a fresh process: no negative cache
    assert serde.decode(data, "OrderEvent", TOPIC).record == serde.from_json("OrderEvent", ORDER_V1)


def test_an_unknown_schema_id_is_a_typed_error(standin):
    with pytest.raises(serde.SerdeError) as err:
        serde.decode(b"\x00\x00\x00\x30\x39" + b"\x02", "OrderEvent", TOPIC)
    assert err.value.reason == "unknown_schema_id" and "12345" in err.value.detail


def test_an_incompatible_writer_schema_is_a_typed_error(standin):
    raw = v2_raw("OrderEvent")
    raw["fields"] = [f if f["name"] != "order_id" else dict(f, type="long") for f in raw["fields"]]
    with pytest.raises(serde.SerdeError) as err:
        serde.decode(confluent_bytes(standin, raw, order_v2(order_id=7)), "OrderEvent", TOPIC)
    assert err.value.reason == "incompatible_schema"


def test_a_decimal_of_another_scale_is_incompatible_not_misread(standin):
    raw = v2_raw("OrderEvent")
    raw["fields"] = [f if f["name"] != "total" else dict(f, type=dict(f["type"], scale=2)) for f in raw["fields"]]
    with pytest.raises(serde.SerdeError) as err:
        serde.decode(confluent_bytes(standin, raw, order_v2()), "OrderEvent", TOPIC)
    assert err.value.reason == "incompatible_schema" and "scale 2" in err.value.detail


def test_an_event_kind_unknown_to_this_reader_is_a_typed_error_a_redrive_can_fix(standin):
    raw = v2_raw("OrderEvent")
    next(f for f in raw["fields"] if f["name"] == "type")["type"]["symbols"].append("partially_refunded")
    with pytest.raises(serde.SerdeError) as err:
        serde.decode(confluent_bytes(standin, raw, order_v2(type="partially_refunded")), "OrderEvent", TOPIC)
    assert err.value.reason == "unknown_kind"


def test_a_registry_outage_keeps_cached_schemas_and_dead_letters_uncached_ids_without_a_stall(standin):
    standin.compatibility[f"{TOPIC}-value"] = "NONE"  # v1 and v2 in one subject: the migration's level
    cached = confluent_bytes(standin, schema_text(serde.registry().v2["OrderEvent"]), order_v2())
    other = confluent_bytes(standin, schema_text(serde.registry().get("OrderEvent")),
                            serde.from_json("OrderEvent", ORDER_V1))
    serde.decode(cached, "OrderEvent", TOPIC)  # its schema id is now cached
    standin.stop()
    assert serde.decode(cached, "OrderEvent", TOPIC).record["total"] == "19.80"
    with pytest.raises(serde.SerdeError) as err:
        serde.decode(other, "OrderEvent", TOPIC)
    assert err.value.reason == "registry_unavailable"
    started = time.monotonic()
    for _ in range(100):  # inside registry.retry_after_s: no new connection attempt per record
        with pytest.raises(serde.SerdeError) as err:
            serde.decode(other, "OrderEvent", TOPIC)
        assert err.value.reason == "registry_unavailable"
    assert time.monotonic() - started < 0.5
    assert serde.decode(cached, "OrderEvent", TOPIC).record["order_id"] == "o1"


def test_registry_framing_without_a_configured_registry_is_a_typed_error():
    serde.configure(None)
    with pytest.raises(serde.SerdeError) as err:
        serde.decode(b"\x00\x00\x00\x00\x01\x02", "OrderEvent", TOPIC)
    assert err.value.reason == "registry_not_configured"


def test_basic_auth_credentials_are_sent_and_a_refusal_is_a_typed_error():
    reg = RegistryStandIn(credentials=("key", "secret")).start()
    try:
        client = SchemaRegistryClient({"url": reg.url, "basic.auth.user.info": "key:secret"})
        ser = AvroSerializer(client, schema_text(serde.registry().v2["OrderEvent"]))
        data = ser(order_v2(), SerializationContext(TOPIC, MessageField.VALUE))
        serde.configure(SchemaRegistrySettings(url=reg.url, basic_auth_user="key", basic_auth_password="wrong",
                                               max_retries=0))
        with pytest.raises(serde.SerdeError) as err:
            serde.decode(data, "OrderEvent", TOPIC)
        assert err.value.reason == "registry_unavailable" and "401" in err.value.detail
        serde.configure(SchemaRegistrySettings(url=reg.url, basic_auth_user="key", basic_auth_password="secret"))
        assert serde.decode(data, "OrderEvent", TOPIC).record["order_id"] == "o1"
    finally:
        serde.configure(None)
        reg.stop()


def test_the_registry_is_reached_over_tls_with_the_configured_ca_and_refused_without_it(pki):
    reg = RegistryStandIn(tls=(str(pki.server.certificate), str(pki.server.key))).start()
    try:
        ser = AvroSerializer(SchemaRegistryClient({"url": reg.url, "ssl.ca.location": str(pki.ca)}),
                             schema_text(serde.registry().v2["OrderEvent"]))
        data = ser(order_v2(), SerializationContext(TOPIC, MessageField.VALUE))
        serde.configure(SchemaRegistrySettings(url=reg.url, ssl_ca_location=str(pki.other_ca), max_retries=0))
        with pytest.raises(serde.SerdeError) as err:
            serde.decode(data, "OrderEvent", TOPIC)
        assert err.value.reason == "registry_unavailable" and "certificate" in err.value.detail.lower()
        serde.configure(SchemaRegistrySettings(url=reg.url, ssl_ca_location=str(pki.ca)))
        assert serde.decode(data, "OrderEvent", TOPIC).record["order_id"] == "o1"
    finally:
        serde.configure(None)
        reg.stop()


def test_registry_settings_come_from_the_environment_and_mask_the_password():
    s = load_settings(env={"SHOPMAIL_REGISTRY__URL": "https://sr:8081", "SHOPMAIL_REGISTRY__BASIC_AUTH_USER": "k",
                           "SHOPMAIL_REGISTRY__BASIC_AUTH_PASSWORD": "p", "SHOPMAIL_REGISTRY__OUTPUT_FRAMING": "registry",
                           "SHOPMAIL_REGISTRY__SSL_CA_LOCATION": "/ca.pem"})
    assert (s.registry.url, s.registry.output_framing, s.registry.ssl_ca_location) == ("https://sr:8081", "registry", "/ca.pem")
    from schemas.registry_client import client_config

    assert client_config(s.registry)["basic.auth.user.info"] == "k:p"
    assert client_config(s.registry)["ssl.ca.location"] == "/ca.pem"
    assert "p'" not in repr(s.registry) and "***" in repr(s.registry)


def test_schemas_register_puts_every_subject_under_backward_and_outputs_read_with_the_standard_deserializer(standin):
    settings = load_settings(env={}, overrides={"registry": {"url": standin.url, "output_framing": "registry"}})
    rows = register_all(settings)
    assert not [r for r in rows if r.error]
    assert {r.subject for r in rows} == {s.subject for s in subjects(settings)}
    assert {"email.commands-value", "email.outcomes-value", "email.feedback-value", "email.coupons-value",
            "audience.memberships-value", "shop.orders.dlq-value"} <= {r.subject for r in rows}
    assert all(standin.compatibility[r.subject] == "BACKWARD" and r.compatibility_set for r in rows)
    assert {r.subject: r.schema for r in rows}["shop.orders-value"] == "shopmail.orders.OrderEvent"
    again = register_all(settings)  # idempotent; the level is now the subject's own
    assert [(r.subject, r.schema_id) for r in again] == [(r.subject, r.schema_id) for r in rows]
    assert not any(r.compatibility_set for r in again)
    serde.configure(settings.registry)
    outcome = {"command_id": "cmd-1", "customer_id": "c1", "outcome": "sent", "message_id": "m-1",
               "flow": "abandoned_cart", "step": 1, "occurred_at": 5}
    record = serde.from_json("EmailOutcome", outcome)
    data = serde.encode("EmailOutcome", record, "email.outcomes")
    assert data[:1] == b"\x00"
    standard = AvroDeserializer(SchemaRegistryClient({"url": standin.url}))
    assert standard(data, SerializationContext("email.outcomes", MessageField.VALUE)) == record
    assert serde.decode(data, "EmailOutcome").record == record  # shopmail reads its own output too
    assert serde.encode("EmailOutcome", record)[:2] == serde.MAGIC  # no topic: internal, single-object



def test_the_schemas_register_command_prints_each_subject_and_exits_1_when_the_registry_is_down(standin):
    from typer.testing import CliRunner

    from streams.cli.main import app

    env = {"SHOPMAIL_REGISTRY__URL": standin.url, "SHOPMAIL_REGISTRY__MAX_RETRIES": "0"}
    done = CliRunner().invoke(app, ["schemas", "register"], env=env)
    assert done.exit_code == 0, done.output
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert {"subject": "email.commands-value", "schema": "shopmail.EmailCommand"} in [
        {k: r[k] for k in ("subject", "schema")} for r in rows]
    standin.stop()
    down = CliRunner().invoke(app, ["schemas", "register"], env=env)
    assert down.exit_code == 1 and "registration failed" in down.output
    assert CliRunner().invoke(app, ["schemas", "register"], env={"SHOPMAIL_REGISTRY__URL": ""}).exit_code == 2
