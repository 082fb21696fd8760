"""`shopmail export --format parquet`: one Parquet file per topic that DuckDB, pandas and Spark read
without extensions. The Arrow schema follows the export's Avro schema (schemas/logical.py): times as
``timestamp[ms, UTC]``, money as ``decimal128(18, 4)``, enums as strings, nested records as structs,
arrays as lists. Each row also carries where it came from: ``kafka_partition``, ``kafka_offset``,
``kafka_key`` (UTF-8 text) and ``kafka_timestamp`` (the record's Kafka timestamp) — prefixed, since
domain records have fields of their own called ``partition`` (clock ticks) or ``timestamp``.

pyarrow is an optional extra (``pip install 'shopmail[parquet]'``); without it the command says so."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streams.extras import require

KAFKA_COLUMNS = ("kafka_partition", "kafka_offset", "kafka_key", "kafka_timestamp")
PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")


def _pa() -> Any:
    return require("pyarrow", "Parquet export")


class ArrowSchema:
    """Avro schema (with logical types) → Arrow types, plus a converter for the values whose Arrow
    form differs (a union of several non-null types is written as its JSON text)."""

    def __init__(self) -> None:
        self.named: dict[str, Any] = {}

    def type_of(self, t: Any) -> tuple[Any, Callable[[Any], Any] | None]:
        pa = _pa()
        if isinstance(t, str):
            simple = {"null": pa.null(), "boolean": pa.bool_(), "int": pa.int32(), "long": pa.int64(),
                      "float": pa.float32(), "double": pa.float64(), "bytes": pa.binary(), "string": pa.string()}
            if t in simple:
                return simple[t], None
            return self.named[t.split(".")[-1]]
        if isinstance(t, list):
            members = [m for m in t if m != "null"]
            if len(members) == 1:
                return self.type_of(members[0])
            return pa.string(), lambda v: None if v is None else json.dumps(v, default=str, sort_keys=True)
        logical = t.get("logicalType")
        if logical == "timestamp-millis":
            return pa.timestamp("ms", tz="UTC"), None
        if logical == "decimal":
            return pa.decimal128(int(t["precision"]), int(t.get("scale", 0))), None
        kind = t["type"]
        if kind == "record":
            fields, converters = [], {}
            for f in t["fields"]:
                ftype, conv = self.type_of(f["type"])
                fields.append(pa.field(f["name"], ftype, nullable=_nullable(f["type"])))
                if conv:
                    converters[f["name"]] = conv
            result = (pa.struct(fields), _record_converter(converters))
        elif kind == "enum":
            result = (pa.string(), None)
        elif kind == "array":
            item, conv = self.type_of(t["items"])
            result = (pa.list_(item), (lambda v, c=conv: None if v is None else [c(x) for x in v]) if conv else None)
        elif kind == "map":
            value, conv = self.type_of(t["values"])
            result = (pa.map_(pa.string(), value),
                      (lambda v, c=conv: None if v is None else [(k, c(x)) for k, x in v.items()]) if conv
                      else (lambda v: None if v is None else list(v.items())))
        elif kind == "fixed":
            result = (pa.binary(int(t["size"])), None)
        elif kind in PRIMITIVES:
            result = self.type_of(kind)
        else:
            raise ValueError(f"no Arrow type for Avro type {kind!r}")
        if "name" in t:
            self.named[str(t["name"]).split(".")[-1]] = result
        return result


def _nullable(t: Any) -> bool:
    return t == "null" or (isinstance(t, list) and "null" in t)


def _record_converter(converters: dict[str, Callable[[Any], Any]]) -> Callable[[Any], Any] | None:
    if not converters:
        return None

    def convert(rec: Any) -> Any:
        if rec is None:
            return None
        return {k: (converters[k](v) if k in converters else v) for k, v in rec.items()}

    return convert


def key_text(key: bytes | None) -> str | None:
    return None if key is None else key.decode("utf-8", errors="backslashreplace")


def write_parquet(path: Path, avro_schema: dict[str, Any], rows: list[tuple[Any, dict[str, Any]]],
                  topic: str) -> None:
    """``rows``: (consumed record with partition/offset/key/timestamp_ms, export-form value) pairs."""
    pa = _pa()
    pq = require("pyarrow.parquet", "Parquet export")
    arrow = ArrowSchema()
    struct, convert = arrow.type_of(avro_schema)
    meta = [pa.field("kafka_partition", pa.int32(), nullable=False),
            pa.field("kafka_offset", pa.int64(), nullable=False), pa.field("kafka_key", pa.string()), pa.field("kafka_timestamp", pa.timestamp("ms", tz="UTC"))]
    schema = pa.schema(meta + list(struct), metadata={
        "shopmail.topic": topic, "shopmail.schema": str(avro_schema.get("name", "")),
        "avro.schema": json.dumps(avro_schema, sort_keys=True)})
    values = [convert(v) for _, v in rows] if convert else [v for _, v in rows]
    columns: dict[str, list[Any]] = {
        "kafka_partition": [r.partition for r, _ in rows], "kafka_offset": [r.offset for r, _ in rows],
        "kafka_key": [key_text(r.key) for r, _ in rows],
        "kafka_timestamp": [r.timestamp_ms if r.timestamp_ms and r.timestamp_ms > 0 else None for r, _ in rows]}
    for f in struct:
        columns[f.name] = [v.get(f.name) for v in values]
    table = pa.Table.from_pydict(columns, schema=schema)
    pq.write_table(table, path, compression="zstd")
