"""`shopmail export`: a time range of topics → Avro object container files (fastavro, schema
embedded) or Parquet files (streams/tools/parquet.py), one per topic, for data teams. Times are
written as ``timestamp-millis`` and money as ``decimal`` (schemas/logical.py); a record whose amount
does not fit ``decimal(18, 4)`` is counted as skipped. The range filters on the records' event time
(``occurred_at``, ``send_at`` for commands, ``tick_at``, ``failed_at`` for dead letters) — Tansu
answers ``offsets_for_times`` with 0, so the export does not rely on it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro

from schemas import serde
from schemas.logical import export_schema, to_export
from streams.config import KafkaSettings
from streams.kafka.io import ConsumedRecord, read_topic

TIME_FIELDS = ("occurred_at", "send_at", "tick_at", "failed_at", "at")


def record_time(rec: dict[str, Any]) -> int | None:
    for f in TIME_FIELDS:
        if f in rec:
            return int(rec[f])
    return None


class ExportError(ValueError):
    """What was asked cannot be exported: an unknown topic, an empty time range, an unknown format."""


FORMATS = ("avro", "parquet")


def check_range(start_ms: int | None, end_ms: int | None) -> None:
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise ExportError("the time range is empty: --to is not after --from")


def out_dir_problem(out: Path) -> str | None:
    """Why ``out`` cannot take the export's files, or None: it must be a directory, or a path whose
    nearest existing ancestor is a directory the export may create it in (checked before any work)."""
    if out.exists():
        if not out.is_dir():
            return f"--out {out} is a file, not a directory (the export writes one file per topic into it)"
        return None if os.access(out, os.W_OK | os.X_OK) else f"--out {out}: cannot write into this directory"
    parent = next((p for p in out.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir():
        return f"--out {out}: {parent} is a file, not a directory"
    return None if os.access(parent, os.W_OK | os.X_OK) else f"--out {out}: cannot create it in {parent}"


def missing_topics(bootstrap: str, topics: list[str], kafka: KafkaSettings | None = None) -> list[str]:
    """The names in ``topics`` the cluster does not have."""
    from streams.kafka.topics import admin_client

    have = admin_client(bootstrap, kafka).list_topics(timeout=15).topics
    return [t for t in topics if t not in have]


def export_topic(bootstrap: str, topic: str, out_dir: Path, start_ms: int | None = None,
                 end_ms: int | None = None, kafka: KafkaSettings | None = None, fmt: str = "avro",
                 progress: Callable[[int, int], None] | None = None) -> tuple[Path | None, int, int]:
    """Returns (file, records written, records skipped as undecodable); no file is written (None) when no
    record of the topic is in the range, so an export never leaves an empty file; ``kafka``: the cluster's security;
    ``fmt``: ``avro`` (object container file) or ``parquet`` (with the records' Kafka partition,
    offset, key and timestamp as columns); ``progress(read, total)`` while the topic is read."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    check_range(start_ms, end_ms)
    by_schema: dict[str, list[tuple[ConsumedRecord, dict[str, Any]]]] = {}
    skipped = 0
    for r in read_topic(bootstrap, topic, idle_s=0, timeout_s=600, kafka=kafka, progress=progress):
        try:
            d = serde.decode(r.value, topic=r.topic)
        except serde.SerdeError:
            skipped += 1
            continue
        at = record_time(d.record)
        if at is not None and ((start_ms is not None and at < start_ms) or (end_ms is not None and at >= end_ms)):
            continue
        by_schema.setdefault(d.name, []).append((r, d.record))
    name = max(by_schema, key=lambda k: len(by_schema[k])) if by_schema else None
    skipped += sum(len(recs) for k, recs in by_schema.items() if k != name)  # one schema per file
    rows: list[tuple[ConsumedRecord, dict[str, Any]]] = []
    if name is None:
        return None, 0, skipped
    raw = serde.registry().get(name).raw
    schema, convert = export_schema(raw), to_export(raw)
    for consumed, rec in by_schema[name]:
        try:
            rows.append((consumed, convert(rec)))
        except serde.SerdeError:
            skipped += 1
    if not rows:
        return None, 0, skipped
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{topic}.{fmt}"
    if fmt == "parquet":
        from streams.tools.parquet import write_parquet

        write_parquet(path, schema, rows, topic)
    else:
        with open(path, "wb") as f:
            fastavro.writer(f, schema, [rec for _, rec in rows], metadata={"shopmail.topic": topic},
                            codec="deflate")
    return path, len(rows), skipped
