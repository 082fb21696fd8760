"""Contracts: every topic value schema, single-object encoding, evolution, JSON form, typed errors."""

from __future__ import annotations

import io
import json

import fastavro
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from schemas import serde
from streams.kafka.io import produce_records, read_topic

SAMPLES: dict[str, dict] = {
    "CartEvent": {"event_id": "e1", "customer_id": "c1", "occurred_at": 1_700_000_000_000, "type": "item_added",
                  "cart_id": "cart-1", "email": "a@example.com", "currency": "EUR", "cart_url": "https://s/c/1",
                  "items": [{"sku": "S1", "name": "Mug", "price": "9.90", "quantity": 2,
                             "image_url": "https://s/i.png", "url": "https://s/p/S1"}]},
    "OrderEvent": {"event_id": "e2", "customer_id": "c1", "occurred_at": 1_700_000_100_000, "type": "placed",
                   "order_id": "o1", "cart_id": "cart-1", "email": "a@example.com", "total": "19.80",
                   "currency": "EUR", "items": [{"sku": "S1", "name": "Mug", "price": "9.90", "quantity": 2}],
                   "attributed_command_id": "cmd-1"},
    "ShipmentEvent": {"event_id": "e3", "customer_id": "c1", "occurred_at": 1_700_000_200_000, "type": "in_transit",
                      "shipment_id": "s1", "order_id": "o1", "carrier": "DHL", "tracking_number": "123",
                      "tracking_url": "https://t/123"},
    "CustomerEvent": {"event_id": "e4", "customer_id": "c1", "occurred_at": 1_700_000_000_000, "type": "upserted",
                      "email": "a@example.com", "first_name": "Ada", "locale": "de", "timezone": "Europe/Berlin",
                      "marketing_opt_in": True},
    "EmailFeedback": {"event_id": "e5", "customer_id": "c1", "occurred_at": 1_700_000_300_000, "type": "bounced",
                      "command_id": "cmd-1", "message_id": "m-1", "bounce_type": "permanent"},
    "EmailCommand": {"command_id": "cmd-1", "customer_id": "c1", "to": "a@example.com", "flow": "abandoned_cart",
                     "step": 1, "template": "abandoned_cart/step1", "locale": "de", "variant": "A",
                     "category": "marketing", "send_at": 1, "expires_at": 2, "context": "{}",
                     "trigger_event_id": "e1", "created_at": 1},
    "EmailOutcome": {"command_id": "cmd-1", "customer_id": "c1", "outcome": "sent", "message_id": "m-1",
                     "flow": "abandoned_cart", "step": 1, "occurred_at": 5},
    "DeadLetter": {"original_value": b"\x00\x01", "original_key": b"c1", "topic": "shop.carts", "partition": 0,
                   "offset": 7, "error": "bad_magic", "detail": "expected C3 01", "failed_at": 9},
    "SinkLedgerEntry": {"command_id": "cmd-1", "state": "pending", "at": 5},
    "InventoryEvent": {"event_id": "i1", "sku": "MUG", "occurred_at": 1_700_000_400_000, "type": "restocked",
                       "quantity": 12, "price": "14.00", "name": "Enamel mug"},
    "ProductViewed": {"event_id": "v1", "customer_id": "c1", "occurred_at": 1_700_000_050_000, "type": "viewed",
                      "sku": "S1", "name": "Mug", "price": "9.90", "currency": "EUR", "image_url": "https://s/i.png",
                      "url": "https://s/p/S1", "email": "a@example.com"},
    "CouponIssued": {"code": "CART-1", "customer_id": "c1", "command_id": "cmd-1", "flow": "abandoned_cart",
                     "step": 3, "kind": "percent_off", "value": 10, "issued_at": 5, "expires_at": 9, "sent_at": 6},
    "SinkParkedCommand": {"command_id": "cmd-1", "state": "parked", "command": b"\xc3\x01", "commands_partition": 0,
                          "commands_offset": 7, "send_at": 9, "at": 5},
    "ClockTick": {"partition": 3, "tick_at": 1_700_000_000_000, "source": "worker-0"},
    "AudienceMembership": {"audience": "abandoned_cart_open", "customer_id": "c1", "member": True, "reason": "joined",
                           "email_sha256": "ab" * 32, "changed_at": 1_700_000_000_000},
}


def test_every_schema_has_a_sample():
    assert sorted(SAMPLES) == serde.registry().names()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_single_object_encoding_round_trips(name):
    record = serde.from_json(name, json.loads(json.dumps(serde.to_json(name, serde.from_json(name, SAMPLES[name])))))
    data = serde.encode(name, record)
    entry = serde.registry().get(name)
    assert data[:2] == b"\xc3\x01" and data[2:10] == entry.fingerprint_bytes
    decoded = serde.decode(data, name)
    assert decoded.name == name and decoded.record == record


def test_any_avro_library_can_read_the_body_with_the_published_schema():
    rec = serde.from_json("CartEvent", SAMPLES["CartEvent"])
    data = serde.encode("CartEvent", rec)
    schema = fastavro.parse_schema(json.loads(serde.registry().get("CartEvent").path.read_text()))
    assert fastavro.schemaless_reader(io.BytesIO(data[10:]), schema) == rec


@pytest.mark.integration
def test_every_schema_round_trips_through_a_real_topic(kafka, settings):
    topic = settings.topics.prefix + "roundtrip"
    for name in sorted(SAMPLES):
        key = {"DeadLetter": "original_key", "ClockTick": "partition", "SinkLedgerEntry": "command_id",
               "SinkParkedCommand": "command_id", "CouponIssued": "code", "InventoryEvent": "sku"}.get(name, "customer_id")
        rec = serde.from_json(name, SAMPLES[name])
        produce_records(settings, kafka, topic, name, [rec], key_field=key)
    got = read_topic(kafka, topic, expect=len(SAMPLES), timeout_s=20)
    decoded = {r.decoded().name: r.decoded().record for r in got}
    assert decoded == {n: serde.from_json(n, SAMPLES[n]) for n in SAMPLES}


def test_truncated_bytes_are_a_typed_error():
    data = serde.encode("OrderEvent", serde.from_json("OrderEvent", SAMPLES["OrderEvent"]))
    with pytest.raises(serde.SerdeError) as err:
        serde.decode(data[:-5])
    assert err.value.reason == "truncated"
    with pytest.raises(serde.SerdeError) as err:
        serde.decode(data[:6])
    assert err.value.reason == "truncated"


def test_unknown_fingerprint_and_unknown_framing_are_typed_errors():
    with pytest.raises(serde.SerdeError) as err:
        serde.decode(b"\xc3\x01" + b"\x00" * 8 + b"\x02")
    assert err.value.reason == "unknown_fingerprint"
    with pytest.raises(serde.SerdeError) as err:
        serde.decode(b"{\"json\": true}")
    assert err.value.reason == "unknown_framing"
    assert "7B 22 6A 73 6F 6E 22 3A" in err.value.detail  # the first bytes, in hex


def test_wrong_types_are_rejected_on_encode_and_from_json():
    bad = dict(SAMPLES["CartEvent"], occurred_at="yesterday")
    with pytest.raises(serde.SerdeError) as err:
        serde.from_json("CartEvent", bad)
    assert err.value.reason == "invalid" and "occurred_at" in err.value.detail
    with pytest.raises(serde.SerdeError):
        serde.encode("CartEvent", dict(serde.from_json("CartEvent", SAMPLES["CartEvent"]), occurred_at="x"))
    with pytest.raises(serde.SerdeError) as err:
        serde.from_json("CartEvent", dict(SAMPLES["CartEvent"], type="teleported"))
    assert "teleported" in err.value.detail


def test_json_form_fills_defaults_and_rejects_missing_required_fields():
    minimal = {"event_id": "e", "customer_id": "c", "occurred_at": 1, "type": "item_added", "cart_id": "k"}
    rec = serde.from_json("CartEvent", minimal)
    assert rec["items"] == [] and rec["email"] is None and rec["currency"] == "USD"
    with pytest.raises(serde.SerdeError) as err:
        serde.from_json("CartEvent", {k: v for k, v in minimal.items() if k != "customer_id"})
    assert "customer_id: required field is missing" in err.value.detail


def test_json_form_is_plain_json_without_union_wrappers():
    rec = serde.from_json("EmailFeedback", SAMPLES["EmailFeedback"])
    assert serde.to_json("EmailFeedback", rec)["bounce_type"] == "permanent"
    dl = serde.to_json("DeadLetter", serde.from_json("DeadLetter", SAMPLES["DeadLetter"]))
    assert dl["original_value"] == "AAE="  # bytes as base64


def test_old_writer_versions_resolve_into_the_current_reader_schema():
    v0 = next(e for e in serde.registry().by_fingerprint.values() if e.path.name == "OrderEvent.v0.avsc")
    rec = {k: v for k, v in serde.from_json("OrderEvent", SAMPLES["OrderEvent"]).items() if k != "attributed_command_id"}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, v0.parsed, rec)
    decoded = serde.decode(serde.MAGIC + v0.fingerprint_bytes + buf.getvalue())
    assert decoded.record["attributed_command_id"] is None and decoded.record["order_id"] == "o1"


@hsettings(max_examples=60, deadline=None)
@given(name=st.text(min_size=0, max_size=30), qty=st.integers(min_value=-2**31, max_value=2**31 - 1),
       at=st.integers(min_value=-2**63, max_value=2**63 - 1))
def test_cart_events_round_trip_for_any_field_values(name, qty, at):
    rec = serde.from_json("CartEvent", dict(SAMPLES["CartEvent"], occurred_at=at,
                                            items=[{"sku": "s", "name": name, "price": "1", "quantity": qty}]))
    assert serde.decode(serde.encode("CartEvent", rec)).record == rec


@hsettings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_never_crash_the_decoder(data):
    try:
        serde.decode(data)
    except serde.SerdeError as exc:
        assert exc.reason in {"unknown_framing", "truncated", "unknown_fingerprint", "invalid",
                              "registry_not_configured"}


_json_scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=20)
                 | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f == 0 or abs(f) >= 1e-4))
_json_values = st.recursive(_json_scalars, lambda inner: st.lists(inner, max_size=4)
                            | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@hsettings(max_examples=300, deadline=None)
@given(_json_values)
def test_canonical_json_writes_exactly_what_the_standard_library_writes(value):
    assert serde.canonical_json(value) == json.dumps(value, sort_keys=True, separators=(",", ":"))


def test_canonical_json_escapes_non_ascii_and_del_like_the_standard_library():
    for value in ({"name": "Müller", "a": 1}, {"x": "\x7f"}, {1: "int key"}, {"big": 10**30},
                  {"th": "เทียนหอม", "emoji": "\U0001f56f\ufe0f", "pl": "Świeca", "ü": "key beyond ASCII"},
                  {"lone": "\ud800"}, {"mixed": "a\x7fé\u2028\n\x00\U0010ffff"}):
        assert serde.canonical_json(value) == json.dumps(value, sort_keys=True, separators=(",", ":"))
        assert serde.canonical_json_bytes(value, newline=True) == (
            json.dumps(value, sort_keys=True, separators=(",", ":")) + "\n").encode()


# text that names products and customers in the shops' languages: beyond ASCII, astral, DEL, controls
_any_text = st.text(st.characters(codec="utf-8") | st.sampled_from("\x7f\x00\n\"\\éŚ€เ\u2028\U0001f56f"),
                    max_size=12)
_texts_json = st.recursive(_any_text | st.integers(-2**63, 2**63 - 1) | st.none(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_any_text, inner, max_size=4),
                           max_leaves=20)


@hsettings(max_examples=400, deadline=None)
@given(_texts_json)
def test_canonical_json_of_text_in_any_language_is_what_the_standard_library_writes(value):
    assert serde.canonical_json(value) == json.dumps(value, sort_keys=True, separators=(",", ":"))


def test_to_json_fast_path_equals_the_validating_path_and_still_rejects_bad_records():
    cmd = serde.from_json("EmailCommand", SAMPLES["EmailCommand"])
    fast = serde.to_json("EmailCommand", dict(cmd, extra_field="dropped"))
    assert fast == serde._convert(cmd, serde.registry().get("EmailCommand").raw,
                                  serde._json_converter("EmailCommand")[1], to_json=True, path="")
    with pytest.raises(serde.SerdeError, match="step"):
        serde.to_json("EmailCommand", dict(cmd, step="one"))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_the_export_form_carries_logical_types_and_reads_back_into_the_domain_record(name):
    from schemas.logical import export_schema, read_export, to_export

    raw = serde.registry().get(name).raw
    record = serde.from_json(name, SAMPLES[name])
    buf = io.BytesIO()
    fastavro.writer(buf, export_schema(raw), [to_export(raw)(record)])
    buf.seek(0)
    typed = next(fastavro.reader(io.BytesIO(buf.getvalue())))
    for field in ("occurred_at", "send_at", "issued_at", "changed_at", "tick_at", "failed_at", "at"):
        if field in record:
            assert typed[field].tzinfo is not None  # a timestamp, not an int64
    if name in ("OrderEvent", "CartEvent"):
        assert str(typed["items"][0]["price"]) == "9.9000"  # a decimal, not a string
    assert read_export(buf) == [record]


def test_an_amount_the_export_decimal_cannot_hold_is_refused_not_rounded():
    from schemas.logical import to_export

    raw = serde.registry().get("OrderEvent").raw
    record = serde.from_json("OrderEvent", dict(SAMPLES["OrderEvent"], total="19.801234"))
    with pytest.raises(serde.SerdeError) as err:
        to_export(raw)(record)
    assert err.value.reason == "invalid" and "decimal places" in err.value.detail


def test_every_v2_contract_field_is_documented_every_enum_has_a_default_and_line_item_is_defined_once():
    import pathlib

    def walk(t, found):
        if isinstance(t, list):
            for x in t:
                walk(x, found)
        elif isinstance(t, dict):
            if t.get("type") == "enum":
                found["enums"].append(t)
            for f in t.get("fields", []):
                found["fields"].append(f)
                walk(f["type"], found)
            walk(t.get("items"), found)
            walk(t.get("type"), found)
        return found

    v2 = serde.registry().v2
    assert sorted(v2) == ["CartEvent", "CustomerEvent", "EmailFeedback", "InventoryEvent", "OrderEvent",
                          "ProductViewed", "ShipmentEvent"]
    for entry in v2.values():
        found = walk(entry.raw, {"enums": [], "fields": []})
        assert [f["name"] for f in found["fields"] if not f.get("doc")] == []
        assert [e["name"] for e in found["enums"] if e.get("default") not in e["symbols"]] == []
        assert entry.fullname.count(".") == 2  # shopmail.<domain>.<Name>
    sources = [p.read_text() for p in pathlib.Path(serde.SCHEMA_DIR, "v2").rglob("*.avsc")]
    assert sum('"name": "LineItem"' in s for s in sources) == 1


@pytest.mark.parametrize("name", ["OrderEvent", "CartEvent", "InventoryEvent", "ProductViewed", "ShipmentEvent",
                                  "CustomerEvent", "EmailFeedback"])
def test_contract_v2_and_v1_of_the_same_event_decode_to_the_same_domain_record(name):
    from schemas.logical import to_export

    v1 = serde.from_json(name, SAMPLES[name])
    v2 = serde.registry().v2[name]
    as_v2 = {k: v for k, v in to_export(serde.registry().get(name).raw)(v1).items()}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, v2.parsed, as_v2)
    assert serde.decode(serde.MAGIC + v2.fingerprint_bytes + buf.getvalue(), name).record == v1


def test_every_field_of_every_current_contract_is_documented_for_producers_and_consumers():
    missing = {name: [f["name"] for f in serde.registry().get(name).raw["fields"] if not f.get("doc")]
               for name in serde.registry().names()}
    assert {k: v for k, v in missing.items() if v} == {}
