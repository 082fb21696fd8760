"""Partition tables not keyed by customer: a key → typed row map inside one partition engine.

Customer state is keyed by the input topics' key, so the changelog partition of a customer is the
input partition. State about something else (a SKU, a product, the whole shop) has no such home: a
``Table`` holds it inside every partition engine that needs it, fed by a *global* input topic whose
every record reaches every partition engine (Kafka Streams' ``GlobalKTable`` shape; see
``docs/decisions.md`` "State not keyed by customer").

A row is a msgspec struct (``streams/core/state.py``); a write marks it dirty and the engine's
``drain_changes`` turns it into one changelog record under ``TABLE_PREFIX + "<table>:<key>"`` (a
delete is a tombstone), so a table restores with the rest of the partition. Tables are created by
the flows that own them through ``FlowContext.table`` and are never shared by accident: one name, one
row type.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

from streams.core.state import TABLE_PREFIX, Record, encode

R = TypeVar("R", bound=Record)


class Table(Generic[R]):
    __slots__ = ("name", "prefix", "row_type", "rows", "_dirty", "_decoder")

    def __init__(self, name: str, row_type: type[R]) -> None:
        if ":" in name or not name:
            raise ValueError(f"table name {name!r}: non-empty, without ':'")
        self.name = name
        self.prefix = f"{TABLE_PREFIX}{name}:"
        self.row_type = row_type
        self.rows: dict[str, R] = {}
        self._dirty: set[str] = set()
        self._decoder = msgspec.json.Decoder(row_type)

    def get(self, key: str) -> R | None:
        return self.rows.get(key)

    def put(self, key: str, row: R) -> None:
        """Insert or replace a row (a row changed in place is ``put`` again to be persisted)."""
        self.rows[key] = row
        self._dirty.add(key)

    def delete(self, key: str) -> None:
        if self.rows.pop(key, None) is not None:
            self._dirty.add(key)

    def drain(self, out: dict[str, bytes | None]) -> None:
        """Changelog records of the rows written since the last drain."""
        rows = self.rows
        for key in sorted(self._dirty):
            row = rows.get(key)
            out[self.prefix + key] = None if row is None else encode(row)
        self._dirty.clear()

    def restore(self, key: str, value: bytes | None) -> None:
        """One changelog record, ``key`` without the table's prefix."""
        if value is None:
            self.rows.pop(key, None)
        else:
            self.rows[key] = self._decoder.decode(value)


def split_key(changelog_key: str) -> tuple[str, str] | None:
    """(table, row key) of a table's changelog key; ``None`` for any other key."""
    if not changelog_key.startswith(TABLE_PREFIX):
        return None
    name, sep, key = changelog_key[len(TABLE_PREFIX):].partition(":")
    return (name, key) if sep else None
