"""The compiled encoder generated from the current .avsc files (schemas/encodegen.py → schemas/_encode)
writes exactly the bytes fastavro writes: random valid records of every current contract; and a record
that is not exactly of the types its schema names is left to fastavro, with fastavro's result (bytes,
or the same SerdeError)."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import _encode, serde
from schemas.avsc import shipped, source_digest, strip_logical_types
from schemas.codegen import Names
from tests.test_compiled_decode import values

CURRENT = [s for s in shipped() if s.kind == "v1"]
NAMES = [s.raw["name"].split(".")[-1] for s in CURRENT]
EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference(name: str, record: dict[str, Any]) -> bytes:
    """What serde wrote before the compiled encoder: fastavro with the current parsed schema."""
    entry = serde.registry().get(name)
    buf = io.BytesIO()
    buf.write(serde.MAGIC + entry.fingerprint_bytes)
    fastavro.schemaless_writer(buf, entry.parsed, record, strict_allow_default=True)
    return buf.getvalue()


def fastavro_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """serde as it was before the compiled encoder: fastavro writes every record."""
    monkeypatch.setattr(serde.registry(), "encoders", {})


def outcome(name: str, record: Any) -> tuple[Any, ...]:
    try:
        return ("bytes", serde.encode(name, record))
    except serde.SerdeError as exc:
        return ("error", exc.reason, exc.detail)


def records(name: str) -> st.SearchStrategy[dict[str, Any]]:
    raw = next(s.raw for s in CURRENT if s.raw["name"].split(".")[-1] == name)
    plain = strip_logical_types(raw)
    names = Names()
    names.collect(plain)
    return values(plain, names)


def test_every_current_contract_has_a_compiled_encoder_built_from_these_files():
    assert sorted(_encode.ENCODERS) == sorted(s.key for s in CURRENT)
    assert _encode.SOURCE_DIGEST == source_digest()
    reg = serde.registry()
    assert {reg.get(n).fingerprint for n in NAMES} == set(reg.encoders)


@pytest.mark.parametrize("name", NAMES)
@EXAMPLES
@given(data=st.data())
def test_the_compiled_encoder_writes_the_bytes_fastavro_writes_for_any_valid_record(name, data):
    record = data.draw(records(name))
    entry = serde.registry().get(name)
    header = serde.MAGIC + entry.fingerprint_bytes
    direct = _encode.ENCODERS[entry.path.name](header, record)  # the compiled function itself, no fallback
    assert direct == reference(name, record)
    encoded = serde.encode(name, record)
    assert encoded == reference(name, record)
    assert serde.decode(encoded).record == serde.decode(reference(name, record)).record


def _command() -> dict[str, Any]:
    return {"command_id": "c" * 32, "customer_id": "c1", "to": "c1@example.com", "flow": "order_confirmation",
            "step": 1, "template": "order_confirmation/step1", "locale": "en", "variant": "control",
            "category": "transactional", "send_at": 1, "expires_at": 2, "context": json.dumps({"x": "é"}),
            "trigger_event_id": "e1", "created_at": 1}


MISFITS = {
    "a bool for an int": {"step": True},
    "an int past 32 bits": {"step": 2**40},
    "a long past 64 bits": {"send_at": 2**70},
    "a float for a long": {"send_at": 1.5},
    "an unknown enum symbol": {"category": "spam"},
    "bytes for a string": {"to": b"c1@example.com"},
    "a lone surrogate": {"context": "\ud800"},
    "None for a string": {"locale": None},
    "a missing field": {"locale": ...},
}


@pytest.mark.parametrize("case", sorted(MISFITS))
def test_a_record_not_exactly_of_its_schemas_types_is_left_to_fastavro_with_its_result(case, monkeypatch):
    record = {**_command(), **MISFITS[case]}
    record = {k: v for k, v in record.items() if v is not ...}
    header = serde.MAGIC + serde.registry().get("EmailCommand").fingerprint_bytes
    with pytest.raises(_encode.Unencodable):
        _encode.ENCODERS["EmailCommand.avsc"](header, record)
    compiled = outcome("EmailCommand", record)
    fastavro_only(monkeypatch)
    assert compiled == outcome("EmailCommand", record)


def test_a_missing_field_with_a_null_default_is_written_as_fastavro_writes_its_default():
    record = {"audience": "vip", "customer_id": "c1", "member": True, "reason": "spend", "changed_at": 5}
    assert serde.encode("AudienceMembership", record) == reference("AudienceMembership", record)
    assert serde.decode(serde.encode("AudienceMembership", record)).record["email_sha256"] is None


def test_a_key_the_schema_does_not_have_is_refused_as_fastavro_refuses_it(monkeypatch):
    record = {**_command(), "not_in_the_schema": 1}
    with pytest.raises(serde.SerdeError) as refused:
        serde.encode("EmailCommand", record)
    fastavro_only(monkeypatch)
    assert outcome("EmailCommand", record) == ("error", refused.value.reason, refused.value.detail)
