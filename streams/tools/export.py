"""`shopmail export`: a time range of topics → Avro object container files (fastavro, schema embedded),
one per topic, for data teams. Times are written as ``timestamp-millis`` and money as ``decimal``
(schemas/logical.py); a record whose amount does not fit ``decimal(18, 4)`` is counted as skipped.
The range filters on the records' event time (``occurred_at``, ``send_at`` for commands,
``tick_at``, ``failed_at`` for dead letters) — Tansu answers ``offsets_for_times`` with 0, so the
export does not rely on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastavro

from schemas import serde
from schemas.logical import export_schema, to_export
from streams.config import KafkaSettings
from streams.kafka.io import read_topic

TIME_FIELDS = ("occurred_at", "send_at", "tick_at", "failed_at", "at")


def record_time(rec: dict[str, Any]) -> int | None:
    for f in TIME_FIELDS:
        if f in rec:
            return int(rec[f])
    return None


def export_topic(bootstrap: str, topic: str, out_dir: Path, start_ms: int | None = None,
                 end_ms: int | None = None, kafka: KafkaSettings | None = None) -> tuple[Path, int, int]:
    """Returns (file, records written, records skipped as undecodable); ``kafka``: the cluster's security."""
    by_schema: dict[str, list[dict[str, Any]]] = {}
    skipped = 0
    for r in read_topic(bootstrap, topic, idle_s=0.5, timeout_s=600, kafka=kafka):
        try:
            d = serde.decode(r.value, topic=r.topic)
        except serde.SerdeError:
            skipped += 1
            continue
        at = record_time(d.record)
        if at is not None and ((start_ms is not None and at < start_ms) or (end_ms is not None and at >= end_ms)):
            continue
        by_schema.setdefault(d.name, []).append(d.record)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{topic}.avro"
    name = max(by_schema, key=lambda k: len(by_schema[k])) if by_schema else None
    skipped += sum(len(recs) for k, recs in by_schema.items() if k != name)  # one schema per file
    records: list[dict[str, Any]] = []
    schema: dict[str, Any] = {"type": "record", "name": "Empty", "fields": []}
    if name:
        raw = serde.registry().get(name).raw
        schema, convert = export_schema(raw), to_export(raw)
        for rec in by_schema[name]:
            try:
                records.append(convert(rec))
            except serde.SerdeError:
                skipped += 1
    with open(path, "wb") as f:
        fastavro.writer(f, schema, records, metadata={"shopmail.topic": topic}, codec="deflate")
    return path, len(records), skipped
