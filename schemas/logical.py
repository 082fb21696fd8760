"""The logical-type view of a domain record, for files data teams read (``shopmail export``).

Domain records keep money as decimal strings and times as epoch-ms ``long``s (contract v1, the form
the engine works on). The export form annotates the same fields with Avro logical types — times
(``at`` and ``*_at`` longs) as ``timestamp-millis``, money (``price``, ``total``, ``subtotal``,
``shipping``, ``tax`` strings) as ``decimal(18, 4)`` like contract v2 — so a query engine reads
timestamps and decimals without re-parsing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import IO, Any

import fastavro

from schemas.entries import SerdeError, converter, decimal_text, registry

MONEY_FIELDS = frozenset({"price", "total", "subtotal", "shipping", "tax"})
SCALE = 4
DECIMAL = {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": SCALE}
TIMESTAMP = {"type": "long", "logicalType": "timestamp-millis"}
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MS = timedelta(milliseconds=1)


def _is_time(name: str, t: Any) -> bool:
    return t == "long" and (name == "at" or name.endswith("_at"))


def _annotate(t: Any, name: str) -> Any:
    if isinstance(t, list):
        return [_annotate(x, name) for x in t]
    if _is_time(name, t):
        return dict(TIMESTAMP)
    if t == "string" and name in MONEY_FIELDS:
        return dict(DECIMAL)
    if isinstance(t, dict):
        if t.get("type") == "record":
            return dict(t, fields=[_annotate_field(f) for f in t["fields"]])
        if t.get("type") == "array":
            return dict(t, items=_annotate(t["items"], name))
    return t


def _annotate_field(f: dict[str, Any]) -> dict[str, Any]:
    """A field with its logical type; a money field's doc says what it now is (not "as string")."""
    out = dict(f, type=_annotate(f["type"], f["name"]))
    if "doc" in f and out["type"] != f["type"] and "decimal as string" in f["doc"]:
        out["doc"] = f["doc"].replace("decimal as string", f"decimal({DECIMAL['precision']}, {SCALE})")
    return out


def export_schema(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` (a v1 contract) with its time and money fields carrying logical types; a string
    default of a money field (``"0"``) is dropped, since a decimal's default would be bytes."""
    out = _annotate(raw, "")
    out["fields"] = [{k: v for k, v in f.items() if not (k == "default" and f["name"] in MONEY_FIELDS
                                                          and isinstance(v, str))} for f in out["fields"]]
    return out


def _to_decimal(value: str) -> Decimal:
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise SerdeError("invalid", f"{value!r} is not a decimal") from None
    if not d.is_finite() or d.as_tuple().exponent < -SCALE:  # type: ignore[operator]
        raise SerdeError("invalid", f"{value!r} has more than {SCALE} decimal places")
    return d


def _export_leaf(schema: Any, name: str) -> Callable[[Any], Any] | None:
    if schema == "string" and name in MONEY_FIELDS:
        return _to_decimal
    return None  # times: fastavro writes epoch-ms ints as timestamp-millis as they are


def _domain_leaf(schema: Any, name: str) -> Callable[[Any], Any] | None:
    if _is_time(name, schema):
        return lambda v: (v - EPOCH) // MS if isinstance(v, datetime) else v
    if schema == "string" and name in MONEY_FIELDS:
        return lambda v: decimal_text(v, SCALE) if isinstance(v, Decimal) else v
    return None


def to_export(raw: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Domain record → the values ``export_schema(raw)`` writes (money strings → Decimal)."""
    return converter(raw, _export_leaf) or (lambda v: v)


def from_export(raw: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A record read from an export file → the domain record (datetimes → epoch ms, Decimals → text)."""
    return converter(raw, _domain_leaf) or (lambda v: v)


def read_export(f: IO[bytes]) -> list[dict[str, Any]]:
    """The domain records of one export file (older files without logical types read the same)."""
    reader = fastavro.reader(f)
    name = str(reader.writer_schema["name"]).split(".")[-1]  # type: ignore[index]
    convert = from_export(registry().get(name).raw) if name in registry().current else (lambda v: v)
    return [convert(rec) for rec in reader]  # type: ignore[arg-type]
