"""The schemas shipped in this package as entries a reader or writer uses: each ``.avsc`` loaded once,
parsed once, with its fingerprint and its converters between the wire form and the domain record
(money as decimal strings, times as epoch ms), plus the errors every decoder raises. ``schemas/serde.py``
encodes and decodes with them; ``schemas/registry_client.py`` adds the writers a Schema Registry knows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint as avro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from schemas import _decode, _encode
from schemas.avsc import SCHEMA_DIR, shipped, source_digest, strip_logical_types
from schemas.avsc import fullname as _fullname


MAGIC = b"\xc3\x01"
HEADER_LEN = 10
REGISTRY_MAGIC = b"\x00"
REGISTRY_HEADER_LEN = 5
UNKNOWN_SYMBOL = "unknown"  # every v2 enum's default: a symbol from a newer writer reads as this


class RegistryStartupError(RuntimeError):
    """The registry cannot give a component the schema ids of what it writes (down, or a subject not
    registered): the component does not start. ``exit_code`` for the command line."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class SerdeError(ValueError):
    """A value that cannot be encoded or decoded.  ``reason`` is a stable code for DLQ records:
    ``unknown_framing``, ``truncated``, ``unknown_fingerprint``, ``unexpected_schema``, ``invalid``,
    ``incompatible_schema``, ``unknown_kind`` and, for registry lookups, ``unknown_schema_id``,
    ``registry_unavailable``, ``registry_not_configured``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SchemaEntry:
    name: str  # short name, e.g. "CartEvent"
    fingerprint: int
    parsed: dict[str, Any]  # what encode writes with (logical types included)
    raw: dict[str, Any]  # the JSON schema, named types expanded
    path: Path
    fullname: str = ""  # e.g. "shopmail.CartEvent" (v1) or "shopmail.carts.CartEvent" (v2)
    # what decode reads with: ``parsed`` without logical types, so times stay epoch ms and decimals
    # stay bytes (the domain form; the binary encoding does not depend on logical types)
    plain: dict[str, Any] = field(default_factory=dict)
    # a v2 reader's mapping of a decoded record to the domain record (decimals → strings)
    to_domain: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # a v2 writer's mapping of a domain record to the values its schema takes (money text → Decimal)
    from_domain: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    leaves: dict[str, frozenset[Leaf]] = field(default_factory=dict)  # field path → its scalar types

    @property
    def fingerprint_bytes(self) -> bytes:
        return self.fingerprint.to_bytes(8, "little")


# logical types whose meaning a reader cannot guess from the binary encoding: a writer and a reader
# must agree on them (Avro resolution only looks at the underlying types)
MEANINGFUL_LOGICAL = frozenset({"decimal", "date", "time-millis", "time-micros", "timestamp-millis",
                                "timestamp-micros", "timestamp-nanos", "local-timestamp-millis",
                                "local-timestamp-micros", "local-timestamp-nanos"})


@dataclass(frozen=True)
class Leaf:
    """One scalar type a field can hold: its Avro type and the logical type that gives it a meaning."""
    type: str
    logical: str | None = None
    precision: int | None = None
    scale: int | None = None

    def __str__(self) -> str:
        if self.logical == "decimal":
            return f"{self.type} decimal(precision {self.precision}, scale {self.scale})"
        return f"{self.type} {self.logical}" if self.logical else self.type


def _leaves(schema: Any, path: str, names: dict[str, Any], acc: dict[str, set[Leaf]]) -> dict[str, set[Leaf]]:
    """Every scalar (non-null) type of ``schema`` by field path (``items[].price``); named types
    referenced by name are followed."""
    if isinstance(schema, str):
        if schema in names:
            return _leaves(names[schema], path, {k: v for k, v in names.items() if k != schema}, acc)
        if schema != "null":
            acc.setdefault(path, set()).add(Leaf(schema))
        return acc
    if isinstance(schema, list):
        for s in schema:
            _leaves(s, path, names, acc)
        return acc
    if not isinstance(schema, dict):
        return acc
    t = schema.get("type")
    if isinstance(t, (dict, list)):
        return _leaves(t, path, names, acc)
    if t in ("record", "enum", "fixed") and "name" in schema:
        names = dict(names)
        names[schema["name"]] = schema
        if schema.get("namespace"):
            names[f"{schema['namespace']}.{schema['name']}"] = schema
    if t == "record":
        for f in schema.get("fields", []):
            _leaves(f["type"], f"{path}.{f['name']}".lstrip("."), names, acc)
    elif t == "array":
        _leaves(schema["items"], path + "[]", names, acc)
    elif t == "map":
        _leaves(schema["values"], path + "{}", names, acc)
    elif t == "enum":
        acc.setdefault(path, set()).add(Leaf("enum"))
    else:
        logical = schema.get("logicalType")
        if logical in MEANINGFUL_LOGICAL:
            precision = schema.get("precision") if logical == "decimal" else None
            scale = int(schema.get("scale", 0)) if logical == "decimal" else None
            acc.setdefault(path, set()).add(Leaf(str(t), logical, precision, scale))
        else:
            acc.setdefault(path, set()).add(Leaf(str(t)))
    return acc


def schema_leaves(raw: Any) -> dict[str, frozenset[Leaf]]:
    return {path: frozenset(leaves) for path, leaves in _leaves(raw, "", {}, {}).items()}


def _fits(w: Leaf, r: Leaf) -> bool:
    if w.logical != r.logical:
        return False
    if w.logical != "decimal":
        return True
    return (w.type == r.type and w.scale == r.scale and w.precision is not None and r.precision is not None
            and w.precision <= r.precision)


def logical_mismatches(writer: SchemaEntry, reader: SchemaEntry) -> list[str]:
    """Where ``writer``'s values would be read with another meaning by ``reader``: a logical type
    (decimal, a time unit) on one side and not the same on the other, a decimal of another scale or of
    a wider precision. Avro's resolution rules do not look at logical types, and promote ``string`` to
    ``bytes``: without this check such values are read, wrongly."""
    out = []
    for path, wleaves in writer.leaves.items():
        rleaves = reader.leaves.get(path)
        if rleaves is None:
            continue  # a field the reader does not have: skipped
        if not any(x.logical for x in wleaves | rleaves):
            continue  # no meaning beyond the Avro types: resolution decides
        for w in wleaves:
            if not any(_fits(w, r) for r in rleaves):
                rtext = " or ".join(sorted(str(r) for r in rleaves))
                out.append(f"field {path} is {w} in the writer, {rtext} in the reader")
    return out


def decimal_text(value: bytes | Decimal, scale: int) -> str:
    """A decimal as the domain writes money: plain digits, at least two decimal places, no trailing
    zeros beyond them (``Decimal("19.9900")`` → ``"19.99"``, ``20`` → ``"20.00"``)."""
    d = value if isinstance(value, Decimal) else Decimal(int.from_bytes(value, "big", signed=True)).scaleb(-scale)
    text = format(d, "f")
    if "." not in text:
        return text + ".00"
    whole, frac = text.split(".")
    frac = frac.rstrip("0")
    return f"{whole}.{frac.ljust(2, '0')}"


@lru_cache(maxsize=4096)
def money_text(value: str) -> str:
    """Money text as the domain writes it (``decimal_text``): ``"0"`` → ``"0.00"``, ``"19.900"`` →
    ``"19.90"``; text that is not a finite number is left as it is (the engine judges it)."""
    try:
        d = Decimal(value)
    except ArithmeticError:
        return value
    return decimal_text(d, 0) if d.is_finite() else value


Converter = Callable[[Any], Any]


def converter(schema: Any, leaf: Callable[[Any, str], Converter | None], name: str = "") -> Converter | None:
    """A function applying ``leaf``'s conversions throughout a value of ``schema`` (through unions,
    arrays and records; records are copied), or None when ``leaf`` converts nothing in it.
    ``leaf(schema, field_name)`` returns the conversion of one value of that schema, or None."""
    own = leaf(schema, name)
    if own is not None:
        return own
    if isinstance(schema, list):
        inner = [c for c in (converter(s, leaf, name) for s in schema if s != "null") if c is not None]
        if not inner:
            return None
        conv = inner[0]
        return lambda v: None if v is None else conv(v)
    if not isinstance(schema, dict):
        return None
    if schema.get("type") == "array":
        item = converter(schema["items"], leaf, name)
        return None if item is None else (lambda v: [item(x) for x in v])
    if isinstance(schema.get("type"), (dict, list)):
        return converter(schema["type"], leaf, name)
    if schema.get("type") == "record":
        convs = [(f["name"], c) for f in schema["fields"] if (c := converter(f["type"], leaf, f["name"])) is not None]
        if not convs:
            return None

        def record(v: dict[str, Any]) -> dict[str, Any]:
            out = dict(v)
            for fname, conv in convs:
                if fname in out:
                    out[fname] = conv(out[fname])
            return out
        return record
    return None


def _decimal_leaf(schema: Any, name: str) -> Converter | None:
    """Decoded with the plain schema, a decimal is its two's-complement bytes: → domain text."""
    if isinstance(schema, dict) and schema.get("logicalType") == "decimal":
        scale = int(schema.get("scale", 0))
        return lambda v: decimal_text(v, scale)
    return None


def _to_decimal_leaf(schema: Any, name: str) -> Converter | None:
    """Domain money text → the Decimal a v2 writer takes."""
    if isinstance(schema, dict) and schema.get("logicalType") == "decimal":
        return lambda v: v if isinstance(v, Decimal) else Decimal(v)
    return None


def _money_leaf(money: frozenset[str]) -> Callable[[Any, str], Converter | None]:
    """A v1 money field (a string where v2 has a decimal) → its text normalised like v2's."""
    def leaf(schema: Any, name: str) -> Converter | None:
        if schema == "string" and name in money:
            return lambda v: money_text(v) if isinstance(v, str) else v
        return None
    return leaf


def _kind_enum(raw: dict[str, Any]) -> bool:
    """Whether the record's ``type`` (the event kind) is an enum with the ``unknown`` default."""
    for f in raw.get("fields", []):
        if f["name"] == "type" and isinstance(f["type"], dict):
            return UNKNOWN_SYMBOL in f["type"].get("symbols", ())
    return False


def make_entry(raw: dict[str, Any], path: Path, domain: bool = False,
               money: frozenset[str] = frozenset()) -> SchemaEntry:
    """One schema, parsed once (with fastavro's "already parsed" mark: without it every
    schemaless_reader and schemaless_writer call parses it again, about half of decode time).
    ``domain``: a v2 reader, whose decoded records are mapped to the domain form; ``money``: the
    names of a v1 reader's money fields, whose text is normalised as v2's decimals are."""
    parsed = fastavro.parse_schema(raw)
    canonical = to_parsing_canonical_form(parsed)
    fp = int(avro_fingerprint(canonical, "CRC-64-AVRO"), 16)
    plain = fastavro.parse_schema(strip_logical_types(raw))
    to_domain: Converter | None = converter(raw, _money_leaf(money)) if money else None
    from_domain: Converter | None = None
    if domain:
        from_domain = converter(raw, _to_decimal_leaf)
        conv = converter(raw, _decimal_leaf)
        kind = _kind_enum(raw)
        fullname = _fullname(raw)

        def v2_to_domain(record: dict[str, Any]) -> dict[str, Any]:
            if kind and record.get("type") == UNKNOWN_SYMBOL:
                raise SerdeError("unknown_kind", f"{fullname}: an event kind this version of shopmail does not "
                                                 f"know (read as the enum default {UNKNOWN_SYMBOL!r}); re-drive it "
                                                 f"after an upgrade that knows it")
            return conv(record) if conv is not None else record
        to_domain = v2_to_domain
    return SchemaEntry(name=raw["name"].split(".")[-1], fingerprint=fp, parsed=parsed, raw=raw, path=path,
                       fullname=_fullname(raw), plain=plain, to_domain=to_domain, from_domain=from_domain,
                       leaves=schema_leaves(raw))


class SchemaRegistry:
    """All schemas shipped in ``schemas/``: current ones by name (contract v1, what shopmail writes)
    and by full name (v1 and v2: the readers), every version by fingerprint."""

    def __init__(self, directory: Path = SCHEMA_DIR) -> None:
        self.current: dict[str, SchemaEntry] = {}
        self.v2: dict[str, SchemaEntry] = {}
        self.readers: dict[str, SchemaEntry] = {}
        self.by_fingerprint: dict[int, SchemaEntry] = {}
        # (writer fingerprint, reader fingerprint) → the decoder compiled from these very files
        self.compiled: dict[tuple[int, int], Callable[[bytes, int], dict[str, Any]]] = {}
        # writer fingerprint of a current contract → the encoder compiled from it (header, record → bytes)
        self.encoders: dict[int, Callable[[bytes, dict[str, Any]], bytes]] = {}
        files = shipped(directory)
        writers = []
        def add(entry: SchemaEntry, key: str, table: dict[str, SchemaEntry] | None) -> None:
            writers.append((key, entry))
            if table is None:  # an older writer version: read, never a reader
                self.by_fingerprint.setdefault(entry.fingerprint, entry)
                return
            table[entry.name] = entry
            self.readers[entry.fullname] = entry
            self.by_fingerprint[entry.fingerprint] = entry

        for s in files:  # v2 first: a v1 reader's money fields are the fields v2 declares decimal
            if s.kind == "v2":
                add(make_entry(s.raw, s.path, domain=True), s.key, self.v2)
        for s in files:
            if s.kind == "v1":
                v2 = self.v2.get(s.raw["name"].split(".")[-1])
                money = frozenset(p.rsplit(".", 1)[-1] for p, leaves in (v2.leaves if v2 else {}).items()
                                  if any(x.logical == "decimal" for x in leaves))
                add(make_entry(s.raw, s.path, money=money), s.key, self.current)
        for s in files:
            if s.kind == "history":
                add(make_entry(s.raw, s.path), s.key, None)
        digest = source_digest(directory)
        if digest != _decode.SOURCE_DIGEST:
            if directory.resolve() == SCHEMA_DIR:
                raise RuntimeError(f"the compiled decoder (schemas/_decode) was built from other .avsc files than "
                                   f"those in {SCHEMA_DIR}: reinstall the package (pip install -e . / make venv)")
            return  # schemas the build did not know: fastavro reads them all
        for key, writer in writers:
            reader = self.readers.get(writer.fullname)
            if reader is not None:
                self.compiled[(writer.fingerprint, reader.fingerprint)] = _decode.DECODERS[key]
        if _encode.SOURCE_DIGEST == digest:
            for key, writer in writers:
                if key in _encode.ENCODERS:
                    self.encoders[writer.fingerprint] = _encode.ENCODERS[key]

    def get(self, name: str) -> SchemaEntry:
        try:
            return self.current[name]
        except KeyError:
            raise SerdeError("unknown_schema", f"no schema named {name!r} in {SCHEMA_DIR}") from None

    def names(self) -> list[str]:
        return sorted(self.current)


@lru_cache(maxsize=1)
def registry() -> SchemaRegistry:
    return SchemaRegistry()


@dataclass(frozen=True)
class Subject:
    """A Schema Registry subject shopmail reads or writes, with the schema it holds there."""

    subject: str
    entry: SchemaEntry
    topic: str = ""
