"""The compiled decoder generated from the .avsc files (schemas/codegen.py → schemas/_decode) reads
exactly what fastavro reads: random valid records of every shipped writer schema, in both framings,
and truncated or corrupt bytes end with the same dead-letter reason, never another exception.
Registry framing runs against the registry stand-in on a real socket."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import _decode, serde
from schemas.avsc import SCHEMA_DIR, fullname, readers, shipped, source_digest
from schemas.codegen import Names, generate
from streams.config import SchemaRegistrySettings
from tests.support.registry_standin import RegistryStandIn

SHIPPED = shipped()
KEYS = [s.key for s in SHIPPED]
BY_KEY = {s.key: s for s in SHIPPED}
TOPIC = "compiled.decode"
EXAMPLES = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                            HealthCheck.function_scoped_fixture])


@lru_cache(maxsize=None)
def writer_entry(key: str) -> serde.SchemaEntry:
    return serde.make_entry(BY_KEY[key].raw, BY_KEY[key].path)


def values(schema: Any, names: Names) -> st.SearchStrategy[Any]:
    """Every value a writer may put in a field of ``schema`` (the plain schema: no logical types)."""
    schema = names.resolve(schema)
    if isinstance(schema, list):
        return st.one_of([values(b, names) for b in schema])
    t = schema if isinstance(schema, str) else schema["type"]
    simple: dict[str, st.SearchStrategy[Any]] = {
        "null": st.none(), "boolean": st.booleans(), "int": st.integers(-2**31, 2**31 - 1),
        "long": st.integers(-2**63, 2**63 - 1), "string": st.text(max_size=12), "bytes": st.binary(max_size=12),
        "double": st.floats(allow_nan=False), "float": st.floats(width=32, allow_nan=False)}
    if t in simple:
        return simple[t]
    if t == "enum":
        return st.sampled_from(schema["symbols"])
    if t == "array":
        return st.lists(values(schema["items"], names), max_size=4)
    if t == "map":
        return st.dictionaries(st.text(max_size=6), values(schema["values"], names), max_size=4)
    if t == "record":
        return st.fixed_dictionaries({f["name"]: values(f["type"], names) for f in schema["fields"]})
    raise AssertionError(f"no strategy for {t!r}")


@lru_cache(maxsize=None)
def records(key: str) -> st.SearchStrategy[dict[str, Any]]:
    plain = serde.strip_logical_types(BY_KEY[key].raw)
    names = Names()
    names.collect(plain)
    return values(plain, names)


def body(key: str, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, writer_entry(key).plain, record)
    return buf.getvalue()


def single_object(key: str, record: dict[str, Any]) -> bytes:
    return serde.MAGIC + writer_entry(key).fingerprint_bytes + body(key, record)


@contextmanager
def fastavro_only() -> Iterator[None]:
    """Today's path: no compiled decoder in the dispatch table."""
    table = serde.registry().compiled
    saved = dict(table)
    table.clear()
    try:
        yield
    finally:
        table.update(saved)


def outcome(data: bytes, topic: str | None = None) -> tuple[Any, ...]:
    """What a worker does with a value: a domain record, or the dead-letter reason and detail."""
    try:
        decoded = serde.decode(data, topic=topic)
    except serde.SerdeError as exc:
        return ("dead-letter", exc.reason, exc.detail)
    return ("record", decoded.name, decoded.writer_fingerprint, decoded.record, list(decoded.record))


def both_paths(data: bytes, topic: str | None = None) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    compiled = outcome(data, topic)
    with fastavro_only():
        reference = outcome(data, topic)
    return compiled, reference


@pytest.fixture(scope="module")
def standin() -> Iterator[tuple[RegistryStandIn, dict[str, int]]]:
    """The stand-in registry with every shipped writer schema registered: key → schema id."""
    reg = RegistryStandIn().start()
    client = SchemaRegistryClient({"url": reg.url})
    ids = {key: client.register_schema(f"{TOPIC}-{i}-value", Schema(json.dumps(writer_entry(key).raw), "AVRO"))
           for i, key in enumerate(KEYS)}
    serde.configure(SchemaRegistrySettings(url=reg.url, retry_after_s=30.0, timeout_s=2.0, max_retries=0))
    try:
        yield reg, ids
    finally:
        serde.configure(None)
        reg.stop()


def test_every_shipped_writer_schema_has_a_compiled_decoder_in_the_dispatch_table():
    assert sorted(_decode.DECODERS) == sorted(KEYS)
    assert _decode.SOURCE_DIGEST == source_digest()
    reader_of = readers(SHIPPED)
    for key in KEYS:
        reader = serde.registry().readers[fullname(reader_of[fullname(BY_KEY[key].raw)].raw)]
        pair = (writer_entry(key).fingerprint, reader.fingerprint)
        assert serde.registry().compiled[pair] is _decode.DECODERS[key], key


@pytest.mark.parametrize("key", KEYS, ids=KEYS)
@EXAMPLES
@given(data=st.data())
def test_a_random_valid_record_of_every_schema_decodes_exactly_as_fastavro_decodes_it(key, data):
    record = data.draw(records(key))
    raw = body(key, record)
    writer = writer_entry(key)
    reader = serde.registry().readers[writer.fullname]
    try:
        expected = (fastavro.schemaless_reader(io.BytesIO(raw), writer.plain)
                    if writer.fingerprint == reader.fingerprint
                    else fastavro.schemaless_reader(io.BytesIO(raw), writer.plain, reader.plain))
    except Exception:  # noqa: BLE001 - a writer record the reader cannot take (a required field left null)
        with pytest.raises(_decode.Unreadable):
            _decode.DECODERS[key](raw, 0)
    else:
        got = _decode.DECODERS[key](b"\x01\x02" + raw, 2)  # a valid body is read here, not handed on
        assert got == expected and list(got) == list(expected)
        assert [type(v) for v in got.values()] == [type(v) for v in expected.values()]
    compiled, reference = both_paths(single_object(key, record))
    assert compiled == reference


@pytest.mark.integration
@pytest.mark.parametrize("key", KEYS, ids=KEYS)
@EXAMPLES
@given(data=st.data())
def test_registry_framing_decodes_every_schema_as_fastavro_does(standin, key, data):
    _, ids = standin
    record = data.draw(records(key))
    framed = serde.REGISTRY_MAGIC + ids[key].to_bytes(4, "big") + body(key, record)
    compiled, reference = both_paths(framed, TOPIC)
    assert compiled == reference


def corrupt(data: st.DataObject, raw: bytes, keep: int) -> bytes:
    """``raw`` truncated, with bytes flipped, inserted or appended (the first ``keep`` bytes kept)."""
    how = data.draw(st.sampled_from(["truncate", "flip", "insert", "append", "overwrite"]))
    at = data.draw(st.integers(keep, max(keep, len(raw))))
    if how == "truncate":
        return raw[:at]
    if how == "flip":
        at = min(at, len(raw) - 1)
        return raw[:at] + bytes([raw[at] ^ data.draw(st.integers(1, 255))]) + raw[at + 1:]
    extra = data.draw(st.binary(min_size=1, max_size=12))
    if how == "insert":
        return raw[:at] + extra + raw[at:]
    if how == "append":
        return raw + extra
    return raw[:at] + extra + raw[at + len(extra):]


@pytest.mark.parametrize("key", KEYS, ids=KEYS)
@EXAMPLES
@given(data=st.data())
def test_truncated_or_corrupt_bytes_give_the_dead_letter_reason_fastavro_gives_never_a_crash(key, data):
    framed = single_object(key, data.draw(records(key)))
    bad = corrupt(data, framed, keep=data.draw(st.sampled_from([0, serde.HEADER_LEN])))
    compiled, reference = both_paths(bad)  # outcome() lets anything but a SerdeError through: a crash fails
    assert compiled == reference



def test_a_truncated_body_gives_the_same_dead_letter_reason_every_time_with_no_object_address():
    record = {"event_id": "e1", "customer_id": "c1", "occurred_at": 1, "type": "upserted", "email": "a@example.com",
              "first_name": None, "locale": "en", "timezone": "UTC", "marketing_opt_in": True}
    framed = single_object("CustomerEvent.avsc", record)
    details = set()
    for _ in range(3):
        for result in both_paths(framed[:-1]):
            assert result[:2] == ("dead-letter", "truncated")
            details.add(result[2])
    assert len(details) == 1, details  # the same bytes read the same, whichever buffer object read them
    assert "0x" not in details.pop()

@pytest.mark.integration
@pytest.mark.parametrize("key", ["OrderEvent.avsc", "history/OrderEvent.v0.avsc",
                                 "v2/shopmail.orders.OrderEvent.avsc"], ids=["v1", "history", "v2"])
@EXAMPLES
@given(data=st.data())
def test_a_corrupt_body_in_registry_framing_gives_the_same_reason_as_fastavro(standin, key, data):
    _, ids = standin
    framed = serde.REGISTRY_MAGIC + ids[key].to_bytes(4, "big") + body(key, data.draw(records(key)))
    compiled, reference = both_paths(corrupt(data, framed, keep=serde.REGISTRY_HEADER_LEN), TOPIC)
    assert compiled == reference


@pytest.mark.integration
def test_a_writer_schema_only_the_registry_knows_is_read_by_fastavro_and_a_shipped_one_by_the_compiled_decoder(
        standin):
    reg, ids = standin
    raw = json.loads(json.dumps(serde.registry().v2["EmailFeedback"].raw))
    raw["fields"].append({"name": "campaign", "type": ["null", "string"], "default": None})
    new_id = SchemaRegistryClient({"url": reg.url}).register_schema(f"{TOPIC}-new-value", Schema(json.dumps(raw), "AVRO"))
    resolver = serde.resolver()
    assert resolver is not None
    new_writer = resolver.writer_by_id(new_id)
    reader = serde.registry().readers[new_writer.fullname]
    assert (new_writer.fingerprint, reader.fingerprint) not in serde.registry().compiled
    rec = {"event_id": "f1", "customer_id": "c1", "occurred_at": 1, "type": "opened", "campaign": "spring"}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, new_writer.plain, rec)
    decoded = serde.decode(serde.REGISTRY_MAGIC + new_id.to_bytes(4, "big") + buf.getvalue(), topic=TOPIC)
    assert decoded.record["type"] == "opened" and "campaign" not in decoded.record

    shipped_writer = resolver.writer_by_id(ids["v2/shopmail.email.EmailFeedback.avsc"])
    assert serde.registry().compiled[(shipped_writer.fingerprint, reader.fingerprint)] is \
        _decode.DECODERS["v2/shopmail.email.EmailFeedback.avsc"]


def test_a_schema_directory_the_build_did_not_know_is_read_by_fastavro(tmp_path: Path):
    copy = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, copy, ignore=shutil.ignore_patterns("*.py", "*.pyx", "*.pyi", "*.c", "*.so"))
    order = json.loads((copy / "OrderEvent.avsc").read_text())
    order["fields"].append({"name": "channel", "type": ["null", "string"], "default": None})
    (copy / "OrderEvent.avsc").write_text(json.dumps(order))
    assert serde.SchemaRegistry(copy).compiled == {}


def test_a_changed_avsc_changes_the_generated_decoder(tmp_path: Path):
    copy = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, copy, ignore=shutil.ignore_patterns("*.py", "*.pyx", "*.pyi", "*.c", "*.so"))
    before = generate(copy)
    cart = json.loads((copy / "CartEvent.avsc").read_text())
    cart["fields"].append({"name": "gift_note", "type": ["null", "string"], "default": None})
    (copy / "CartEvent.avsc").write_text(json.dumps(cart))
    after = generate(copy)
    assert "rec['gift_note']" in after and "rec['gift_note']" not in before
    assert source_digest(copy) != source_digest(SCHEMA_DIR)


def test_every_shipped_schema_is_known_to_the_generator():
    assert {s.kind for s in SHIPPED} == {"v1", "v2", "history"}
    assert all(f"'{key}': d_" in generate() for key in KEYS)
