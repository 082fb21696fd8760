"""What the registry paths do when the registry, a producer or a registered schema is not what it
should be: an outage never crashes a write, a component resolves what it writes when it starts,
a writer whose values would be read with another meaning is refused, one unreadable version does
not hide the others, `shopmail schemas register` reports each subject. Against the registry
stand-in on a real socket (tests/support/registry_standin.py), the real broker where named."""

from __future__ import annotations

import ast
import copy
import io
import json
import os
import socket
import subprocess
import sys
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from prometheus_client import REGISTRY

from schemas import serde
from schemas.logical import export_schema
from schemas.registry_client import schema_text
from schemas import subjects as plan
from streams.config import SchemaRegistrySettings, Settings, load_settings
from tests.support.registry_standin import RegistryStandIn
from tests.test_registry_framing import standin  # noqa: F401 - the fixture: a stand-in this process uses

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "shop.orders"
AT = datetime(2026, 3, 1, 12, 30, tzinfo=timezone.utc)


def registry_output(reg: RegistryStandIn) -> Settings:
    settings = load_settings(env={}, overrides={"registry": {"url": reg.url, "output_framing": "registry",
                                                             "max_retries": 0, "timeout_s": 2.0}})
    serde.configure(settings.registry)
    return settings


def order_v2(**over: Any) -> dict[str, Any]:
    rec = {"event_id": "e1", "customer_id": "c1", "occurred_at": AT, "type": "placed", "order_id": "o1",
           "items": [{"sku": "MUG", "name": "Mug", "price": Decimal("12.50"), "quantity": 2}],
           "total": Decimal("25.00"), "currency": "EUR"}
    rec.update(over)
    return rec


def v2_with(name: str, field: str, field_type: Any) -> dict[str, Any]:
    raw = copy.deepcopy(serde.registry().v2[name].raw)
    raw["fields"] = [f if f["name"] != field else dict(f, type=field_type) for f in raw["fields"]]
    return raw


def confluent_bytes(reg: RegistryStandIn, raw: dict[str, Any], record: dict[str, Any], topic: str = TOPIC) -> bytes:
    ser = AvroSerializer(SchemaRegistryClient({"url": reg.url}), json.dumps(raw))
    return ser(record, SerializationContext(topic, MessageField.VALUE))


def single_object(raw: dict[str, Any], record: dict[str, Any]) -> bytes:
    entry = serde.make_entry(raw, Path("producer.avsc"))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, entry.parsed, record)
    return serde.MAGIC + entry.fingerprint_bytes + buf.getvalue()


def dead_letter() -> dict[str, Any]:
    return {"topic": TOPIC, "partition": 0, "offset": 7, "original_key": b"c1", "original_value": b"\x01",
            "error": "invalid", "detail": "x", "component": "test", "failed_at": 5}


def counter(name: str, subject: str) -> float:
    return REGISTRY.get_sample_value(name, {"subject": subject}) or 0.0


# ---- defect 1: the write path and start-up ------------------------------------------------------

def test_with_registry_output_a_registry_outage_never_crashes_a_write_it_is_written_single_object_and_counted(standin):
    registry_output(standin)
    standin.stop()  # down before this process resolved anything: a restart during an outage
    before = counter("shopmail_registry_single_object_writes_total", "shop.orders.dlq-value")
    data = serde.encode("DeadLetter", dead_letter(), "shop.orders.dlq")
    assert data[:2] == serde.MAGIC
    assert serde.decode(data, "DeadLetter").record["error"] == "invalid"  # nothing lost: shopmail reads it
    assert counter("shopmail_registry_single_object_writes_total", "shop.orders.dlq-value") == before + 1


def test_an_unregistered_output_subject_is_written_single_object_not_a_crash_on_the_first_command(standin):
    registry_output(standin)
    cmd = {"command_id": "cmd-1", "customer_id": "c1", "to": "c1@example.com", "flow": "order_confirmation",
           "step": 1, "template": "order_confirmation", "category": "transactional", "send_at": 5, "expires_at": 10,
           "context": "{}", "trigger_event_id": "e1", "created_at": 5}
    record = serde.from_json("EmailCommand", cmd)
    assert serde.encode("EmailCommand", record, "email.commands")[:2] == serde.MAGIC


def test_after_start_up_every_output_is_written_in_registry_framing_with_the_registry_down(standin):
    settings = registry_output(standin)
    assert not [r for r in plan.register_all(settings) if r.error]
    ids = {s: standin.subjects[s][-1] for s in standin.subjects}
    serde.prepare_output(settings)  # what every long-running component does before it starts
    standin.stop()
    for s in plan.written_subjects(settings):
        assert s.subject in ids
    data = serde.encode("DeadLetter", dead_letter(), "shop.orders.dlq")
    assert data[:1] == b"\x00" and int.from_bytes(data[1:5], "big") == ids["shop.orders.dlq-value"]
    tick = serde.encode("ClockTick", {"partition": 0, "tick_at": 5, "source": "w"}, "shop.clock")
    assert int.from_bytes(tick[1:5], "big") == ids["shop.clock-value"]
    assert serde.decode(tick, "ClockTick", "shop.clock").record["tick_at"] == 5  # read back without the registry
    shipment = {"event_id": "s1", "customer_id": "c1", "occurred_at": 5, "type": "in_transit", "shipment_id": "sh1",
                "order_id": "o1", "carrier": "dhl", "tracking_number": "T1", "tracking_url": None, "email": None}
    written = serde.encode("ShipmentEvent", serde.from_json("ShipmentEvent", shipment), "shop.shipments")
    assert int.from_bytes(written[1:5], "big") == ids["shop.shipments-value"]  # the subject's v2 contract
    assert serde.decode(written, "ShipmentEvent", "shop.shipments").record == serde.from_json("ShipmentEvent", shipment)


def test_a_missing_output_subject_stops_the_start_in_one_line_naming_it_and_the_registry(standin):
    settings = registry_output(standin)
    plan.register_all(settings)
    del standin.subjects["email.coupons-value"]
    with pytest.raises(serde.RegistryStartupError) as err:
        serde.prepare_output(settings)
    assert "email.coupons-value" in str(err.value) and standin.url in str(err.value) and "\n" not in str(err.value)
    assert err.value.exit_code == 2


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def test_the_worker_does_not_start_when_the_registry_is_down_one_line_naming_it_and_a_subject(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPMAIL_")}
    env.update({"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}", "SHOPMAIL_WORKER__STORE": "memory://",
                "SHOPMAIL_WORKER__DATA_DIR": str(tmp_path), "SHOPMAIL_REGISTRY__URL": url,
                "SHOPMAIL_REGISTRY__OUTPUT_FRAMING": "registry", "SHOPMAIL_REGISTRY__MAX_RETRIES": "0"})
    done = subprocess.run([sys.executable, "-m", "streams.cli", "worker"], capture_output=True, text=True, env=env,
                          timeout=60, cwd=tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.strip() and " INFO " not in line]
    assert done.returncode == 3, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert url in lines[0] and "-value" in lines[0] and "cannot be reached" in lines[0]


# ---- defects 2 and 3: values a reader would read with another meaning ----------------------------

@pytest.mark.parametrize("money", ["string", "bytes"], ids=["string", "plain-bytes"])
def test_a_v2_money_field_written_as_text_or_plain_bytes_is_incompatible_not_a_wrong_decimal(standin, money):
    raw = v2_with("OrderEvent", "total", money)
    value = "25.00" if money == "string" else b"25.00"
    with pytest.raises(serde.SerdeError) as err:
        serde.decode(confluent_bytes(standin, raw, order_v2(total=value)), "OrderEvent", TOPIC)
    assert err.value.reason == "incompatible_schema" and "field total is " + money in err.value.detail


def test_a_timestamp_in_microseconds_is_incompatible_not_read_as_milliseconds(standin):
    raw = v2_with("OrderEvent", "occurred_at", {"type": "long", "logicalType": "timestamp-micros"})
    with pytest.raises(serde.SerdeError) as err:
        serde.decode(confluent_bytes(standin, raw, order_v2()), "OrderEvent", TOPIC)
    assert err.value.reason == "incompatible_schema" and "timestamp-micros" in err.value.detail


def test_a_decimal_wider_than_precision_18_is_incompatible(standin):
    raw = v2_with("OrderEvent", "total", {"type": "bytes", "logicalType": "decimal", "precision": 38, "scale": 4})
    with pytest.raises(serde.SerdeError) as err:
        serde.decode(confluent_bytes(standin, raw, order_v2(total=Decimal("10") ** 20)), "OrderEvent", TOPIC)
    assert err.value.reason == "incompatible_schema" and "precision 38" in err.value.detail


def test_a_decimal_of_precision_18_or_less_and_scale_4_is_read(standin):
    raw = v2_with("OrderEvent", "total", {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 4})
    assert serde.decode(confluent_bytes(standin, raw, order_v2()), "OrderEvent", TOPIC).record["total"] == "25.00"


def test_a_v1_named_writer_with_a_decimal_money_field_is_incompatible_not_promoted_to_text(standin):
    raw = copy.deepcopy(serde.registry().get("OrderEvent").raw)
    raw["fields"] = [f if f["name"] != "total" else dict(f, type={"type": "bytes", "logicalType": "decimal",
                                                                   "precision": 18, "scale": 4}) for f in raw["fields"]]
    raw["fields"] = [{k: v for k, v in f.items() if not (f["name"] == "total" and k == "default")}
                     for f in raw["fields"]]
    rec = serde.from_json("OrderEvent", {"event_id": "e1", "customer_id": "c1", "occurred_at": 5, "type": "placed",
                                         "order_id": "o1"})
    with pytest.raises(serde.SerdeError) as err:
        serde.decode(confluent_bytes(standin, raw, dict(rec, total=Decimal("25.00"))), "OrderEvent", TOPIC)
    assert err.value.reason == "incompatible_schema"


# ---- defect 4: one unreadable version does not hide the others ----------------------------------

def test_unreadable_versions_are_skipped_a_registered_evolution_is_read_and_an_unregistered_one_is_unknown(standin):
    client = SchemaRegistryClient({"url": standin.url})
    subject = f"{TOPIC}-value"
    with_reference = v2_with("OrderEvent", "total", "shopmail.common.Money")
    client.register_schema(subject, Schema(json.dumps(with_reference), "AVRO",
                                           [SchemaReference("shopmail.common.Money", "money-value", 1)]))
    scale_2 = v2_with("OrderEvent", "total", {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2})
    # a field more: the Parsing Canonical Form (the fingerprint) drops logical types, so a writer that
    # differs from a shipped schema only in a decimal's scale has the shipped schema's fingerprint
    scale_2["fields"].append({"name": "channel", "type": ["null", "string"], "default": None, "doc": "new"})
    client.register_schema(subject, Schema(json.dumps(scale_2), "AVRO"))
    newer = copy.deepcopy(serde.registry().v2["OrderEvent"].raw)
    newer["fields"].append({"name": "gift_wrap", "type": "boolean", "default": False, "doc": "new"})
    client.register_schema(subject, Schema(json.dumps(newer), "AVRO"))
    skipped_before = counter("shopmail_registry_unreadable_versions_total", subject)

    decoded = serde.decode(single_object(newer, order_v2(gift_wrap=True)), "OrderEvent", TOPIC)
    assert decoded.record["total"] == "25.00" and "gift_wrap" not in decoded.record
    assert counter("shopmail_registry_unreadable_versions_total", subject) == skipped_before + 1
    with pytest.raises(serde.SerdeError) as err:
        serde.decode(single_object(scale_2, order_v2()), "OrderEvent", TOPIC)
    assert err.value.reason == "incompatible_schema" and "v2" in err.value.detail and "scale 2" in err.value.detail
    unregistered = copy.deepcopy(newer)
    unregistered["fields"].append({"name": "note", "type": ["null", "string"], "default": None, "doc": "new"})
    with pytest.raises(serde.SerdeError) as err:
        serde.decode(single_object(unregistered, order_v2(gift_wrap=False)), "OrderEvent", TOPIC)
    assert err.value.reason == "unknown_fingerprint" and "schema references" in err.value.detail


def test_a_refused_schema_id_is_looked_up_once_not_per_record(standin):
    data = confluent_bytes(standin, v2_with("OrderEvent", "total", "string"), order_v2(total="1.00"))
    for _ in range(20):
        with pytest.raises(serde.SerdeError):
            serde.decode(data, "OrderEvent", TOPIC)
    assert serde.resolver().lookups == 1  # type: ignore[union-attr]


# ---- defect 5: every output goes through the topic-aware path ------------------------------------

# serde.encode calls that write no output topic of a component, and why
NOT_AN_OUTPUT = {
    ("streams/kafka/io.py", None): "the demo's, bench's and tests' producer of shop input events",
    ("streams/tools/simulate.py", None): "the size of a record, in memory",
    ("sinks/ledger.py", "SinkParkedCommand"): "the sink ledger: two record types, single-object by design",
    ("sinks/ledger.py", "SinkLedgerEntry"): "the sink ledger: two record types, single-object by design",
}


def test_every_serde_encode_in_the_components_names_the_topic_it_writes():
    missing = []
    for path in sorted([*ROOT.glob("streams/**/*.py"), *ROOT.glob("sinks/**/*.py")]):
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "encode"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "serde"):
                continue
            if len(node.args) + len(node.keywords) >= 3:
                continue
            name = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
            if (rel, name) not in NOT_AN_OUTPUT:
                missing.append(f"{rel}:{node.lineno} {name}")
    assert missing == []


# ---- defect 6: `shopmail schemas register` --------------------------------------------------------

def test_schemas_register_reports_a_refused_subject_registers_the_others_and_keeps_a_level_the_shop_set(standin):
    from typer.testing import CliRunner

    from streams.cli.main import app

    SchemaRegistryClient({"url": standin.url}).register_schema(
        f"{TOPIC}-value", Schema(schema_text(serde.registry().get("OrderEvent")), "AVRO"))  # v1 there, BACKWARD
    standin.compatibility["shop.carts-value"] = "NONE"  # the shop's own level (a migration in progress)
    standin.compatibility["email.commands-value"] = "FULL"
    done = CliRunner().invoke(app, ["schemas", "register"], env={"SHOPMAIL_REGISTRY__URL": standin.url,
                                                                 "SHOPMAIL_REGISTRY__MAX_RETRIES": "0"})
    assert done.exit_code == 1, done.output
    rows = {r["subject"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert "409" in rows[f"{TOPIC}-value"]["error"]
    assert all("id" in r for s, r in rows.items() if s != f"{TOPIC}-value")  # every later subject registered
    assert rows["shop.carts-value"]["compatibility"] == "NONE" and not rows["shop.carts-value"]["compatibility_set"]
    assert standin.compatibility["shop.carts-value"] == "NONE"
    assert standin.compatibility["email.commands-value"] == "FULL"
    assert standin.compatibility["shop.customers-value"] == "BACKWARD" and rows["shop.customers-value"]["compatibility_set"]
    assert "registration failed for 1 of" in done.stderr and f"{TOPIC}-value" in done.stderr


def test_a_malformed_registry_url_is_one_line_not_a_traceback():
    from typer.testing import CliRunner

    from streams.cli.main import app

    done = CliRunner().invoke(app, ["schemas", "register"], env={"SHOPMAIL_REGISTRY__URL": "registry.internal:8081"})
    assert done.exit_code == 2 and not isinstance(done.exception, Exception) or isinstance(done.exception, SystemExit)
    lines = [line for line in done.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "registry.internal:8081" in lines[0] and "Traceback" not in done.output
    serde.configure(None)


# ---- defect 7: one money text for both contracts ----------------------------------------------

def test_zero_money_is_the_same_domain_record_from_v1_v2_and_the_json_form():
    serde.configure(None)
    v1 = {"event_id": "e1", "customer_id": "c1", "occurred_at": int(AT.timestamp() * 1000), "type": "cancelled",
          "order_id": "o1", "items": [], "total": "0", "currency": "EUR"}
    from_json = serde.from_json("OrderEvent", v1)
    from_v1 = serde.decode(serde.encode("OrderEvent", dict(from_json, total="0")), "OrderEvent").record
    from_v2 = serde.decode(single_object(serde.registry().v2["OrderEvent"].raw,
                                         order_v2(type="cancelled", items=[], total=Decimal(0))), "OrderEvent").record
    assert from_json["total"] == from_v1["total"] == from_v2["total"] == "0.00"
    assert from_v1 == from_v2 == from_json
    assert serde.from_json("OrderEvent", dict(v1, total="19.900"))["total"] == "19.90"
    assert serde.from_json("OrderEvent", dict(v1, total="0.125"))["total"] == "0.125"


def test_the_export_schema_says_decimal_where_the_field_is_one():
    exported = export_schema(serde.registry().get("OrderEvent").raw)
    total = next(f for f in exported["fields"] if f["name"] == "total")
    assert total["type"]["logicalType"] == "decimal" and "as string" not in total["doc"]
    assert "as string" not in json.dumps(exported)


@pytest.mark.integration
def test_export_counts_records_of_a_minority_schema_as_skipped(kafka, settings, tmp_path):
    from streams.kafka.io import producer_config
    from streams.kafka.topics import ensure_topics, topic_specs
    from streams.tools.export import export_topic

    serde.configure(None)
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    topic = settings.topics.name("orders")
    p = Producer(producer_config(settings, kafka))
    for i in range(3):
        p.produce(topic, key=b"c1", value=serde.encode("OrderEvent", serde.from_json("OrderEvent", {
            "event_id": f"e{i}", "customer_id": "c1", "occurred_at": 5 + i, "type": "placed", "order_id": f"o{i}"})))
    p.produce(topic, key=b"c1", value=serde.encode("CartEvent", serde.from_json("CartEvent", {
        "event_id": "c", "customer_id": "c1", "occurred_at": 5, "type": "item_added", "cart_id": "k"})))
    assert p.flush(10) == 0
    _, written, skipped = export_topic(kafka, topic, tmp_path)
    assert (written, skipped) == (3, 1)


# ---- item 8: the stand-in answers as the documented protocol does --------------------------------

def test_the_standin_refuses_unparseable_schema_text_with_422_and_has_no_subject_level_until_set(standin):
    client = SchemaRegistryClient({"url": standin.url})
    with pytest.raises(SchemaRegistryError) as err:
        client.register_schema("x-value", Schema("{\"type\": \"no-such-type\"}", "AVRO"))
    assert (err.value.http_status_code, err.value.error_code) == (422, 42201)
    with pytest.raises(SchemaRegistryError) as err:
        client.get_compatibility("x-value")
    assert err.value.error_code == 40408
    client.set_compatibility("x-value", "FULL")
    assert client.get_compatibility("x-value") == "FULL"
