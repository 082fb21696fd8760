"""Avro encoding of every shopmail topic value, in either of the two framings Kafka shops use.

*Single-object encoding* (Avro spec): ``C3 01`` + the 8-byte little-endian CRC-64-AVRO fingerprint of
the writer schema's Parsing Canonical Form + the Avro binary body. *Registry framing* (Confluent's
serializers, ``KafkaAvroSerializer``): byte ``00`` + the 4-byte big-endian schema id + the Avro body.
The framing is read from each record's first byte. A writer schema is found by fingerprint among the
``.avsc`` files shipped in this package (current schemas at the top level, older versions under
``history/``, contract v2 under ``v2/``) or, when a Schema Registry is configured, through it (by
id, or by fingerprint among the versions of the topic's subject: producer-first evolution). It is
resolved against the current reader schema of the same full name (Avro's resolution rules).

Contract v1 (namespace ``shopmail``) and contract v2 (a namespace per domain, ``decimal`` money,
``timestamp-millis`` times, ``unknown`` as every enum's default) both decode to the same *domain
record*: money as decimal strings, times as epoch ms.

The *JSON form* of a record is the plain JSON object (no union wrappers, optional fields absent or
null, decimals as strings, times as epoch ms, ``bytes`` as base64).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastavro
import orjson
from fastavro.schema import fingerprint as avro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from schemas import _decode
from schemas.avsc import SCHEMA_DIR, shipped, source_digest, strip_logical_types
from schemas.avsc import fullname as _fullname

if TYPE_CHECKING:
    from schemas.registry_client import RegistryResolver
    from streams.config import SchemaRegistrySettings, Settings

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


# ---- the Schema Registry (registry framing, producer-first evolution) ---------------------------

_resolver: RegistryResolver | None = None
_configured = False


def configure(settings: SchemaRegistrySettings | None) -> None:
    """Use this Schema Registry (``[registry]`` settings) for this process; None → none. Without a
    call, the settings are read from the environment (``SHOPMAIL_REGISTRY__URL``) on first need."""
    global _resolver, _configured
    _resolver = None
    if settings is not None and settings.url:
        from schemas.registry_client import RegistryResolver  # the HTTP client only when a registry is used
        from streams.config import ConfigError

        try:
            _resolver = RegistryResolver(settings)
        except (ValueError, TypeError) as exc:  # "Invalid url …", an unknown output_framing
            raise ConfigError(f"registry: {exc}") from None
    _configured = True


def resolver() -> RegistryResolver | None:
    if not _configured:
        from streams.config import ConfigError, load_settings

        try:
            configure(load_settings().registry)
        except ConfigError as exc:
            raise SerdeError("registry_not_configured", f"the settings cannot be read: {exc}") from exc
    return _resolver


def _topic_subject(topic: str) -> str:
    return f"{topic}-value"  # TopicNameStrategy


def encode(name: str, record: dict[str, Any], topic: str | None = None) -> bytes:
    """Encode ``record`` with the current schema ``name``; raises SerdeError(invalid) if it does not fit.

    ``topic``: the topic it is written to (every output passes it; tests/test_registry_output.py checks
    each call). With ``registry.output_framing = "registry"`` it is written in registry framing with
    the schema registered under ``<topic>-value`` (resolved when the process started: ``prepare_output``),
    a v2 contract there included. Never a registry error here: a topic whose subject is not resolved
    and cannot be looked up now is written single-object, logged and counted."""
    res = resolver() if topic is not None else None
    if res is not None and res.registry_output:
        found = res.output_writer(_topic_subject(topic), name)  # type: ignore[arg-type]
        if found is not None:
            writer, schema_id = found
            if writer.from_domain is not None:
                record = writer.from_domain(record)
            return _write(REGISTRY_MAGIC + schema_id.to_bytes(4, "big"), writer, record)
    entry = registry().get(name)
    return _write(MAGIC + entry.fingerprint_bytes, entry, record)


def _write(header: bytes, entry: SchemaEntry, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(header)
    try:
        fastavro.schemaless_writer(buf, entry.parsed, record, strict_allow_default=True)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, ArithmeticError) as exc:
        raise SerdeError("invalid", f"{entry.name}: {exc}") from exc
    return buf.getvalue()


def prepare_output(settings: Settings) -> None:
    """At the start of a long-running component, with registry output framing: the schema id of every
    subject shopmail writes, resolved now, so no write needs the registry later. Raises
    ``RegistryStartupError`` (one line: the registry and the subject) when it is down or a subject is
    not registered. Without registry output framing: nothing."""
    res = resolver()
    if res is None or not res.registry_output:
        return
    from schemas.subjects import written_subjects

    res.prepare_output(written_subjects(settings))


@dataclass(frozen=True)
class Decoded:
    name: str
    record: dict[str, Any]
    writer_fingerprint: int


def decode(data: bytes | None, expected: str | tuple[str, ...] | None = None, topic: str | None = None) -> Decoded:
    """Decode a value in either framing into the domain record of its contract.

    ``expected`` restricts which schema names are acceptable on this topic; ``topic`` names the
    registry subject (``<topic>-value``) where a single-object writer schema shopmail does not ship
    is looked up.
    """
    if data is None:
        raise SerdeError("truncated", "value is null (tombstone)")
    if data[:2] == MAGIC:
        if len(data) < HEADER_LEN:
            raise SerdeError("truncated", f"{len(data)} bytes is shorter than the 10-byte header")
        fp = int.from_bytes(data[2:10], "little")
        writer = registry().by_fingerprint.get(fp)
        if writer is None:
            writer = _writer_by_fingerprint(fp, topic)
        return _read(data, HEADER_LEN, writer, expected)
    if data[:1] == REGISTRY_MAGIC:
        if len(data) < REGISTRY_HEADER_LEN:
            raise SerdeError("truncated", f"{len(data)} bytes is shorter than the 5-byte registry header")
        schema_id = int.from_bytes(data[1:5], "big")
        res = resolver()
        if res is None:
            raise SerdeError("registry_not_configured", f"registry framing (schema id {schema_id}) but no "
                                                        f"registry.url is set")
        return _read(data, REGISTRY_HEADER_LEN, res.writer_by_id(schema_id), expected)
    raise SerdeError("unknown_framing", f"neither single-object (C3 01) nor registry framing (00): first bytes "
                                        f"{data[:8].hex(' ').upper() or '(empty)'}")


def _writer_by_fingerprint(fp: int, topic: str | None) -> SchemaEntry:
    res = resolver() if topic is not None else None
    if res is None:
        raise SerdeError("unknown_fingerprint", f"no schema with fingerprint {fp:016x}")
    subject = _topic_subject(topic)  # type: ignore[arg-type]
    writer = res.writer_by_fingerprint(subject, fp)
    if writer is None:
        skipped = res.skipped_versions(subject)
        unread = f"; {len(skipped)} version(s) there cannot be read: {'; '.join(skipped)}" if skipped else ""
        raise SerdeError("unknown_fingerprint", f"no schema with fingerprint {fp:016x}, neither shipped nor "
                                                f"registered under subject {subject}{unread}")
    return writer


def _read(data: bytes, offset: int, writer: SchemaEntry, expected: str | tuple[str, ...] | None) -> Decoded:
    if expected is not None:
        allowed = (expected,) if isinstance(expected, str) else expected
        if writer.name not in allowed:
            raise SerdeError("unexpected_schema", f"got {writer.name}, expected one of {', '.join(allowed)}")
    reader = registry().readers.get(writer.fullname)
    if reader is None:
        raise SerdeError("incompatible_schema", f"writer schema {writer.fullname} has no reader schema of that "
                                                f"full name (known: shopmail.<Name> and the v2 namespaces)")
    compiled = registry().compiled.get((writer.fingerprint, reader.fingerprint))
    if compiled is not None:  # a schema pair known at build time: the generated decoder reads it
        try:
            record = compiled(data if type(data) is bytes else bytes(data), offset)
        except _decode.Unreadable:
            pass  # not a plain valid body: fastavro below gives the verdict (a record, or the reason)
        else:
            return Decoded(writer.name, reader.to_domain(record) if reader.to_domain is not None else record,
                           writer.fingerprint)
    buf = io.BytesIO(data)
    buf.seek(offset)
    try:
        if reader.fingerprint == writer.fingerprint:
            record = fastavro.schemaless_reader(buf, reader.plain)
        else:
            record = fastavro.schemaless_reader(buf, writer.plain, reader.plain)
    except EOFError as exc:
        raise SerdeError("truncated", f"{writer.name}: body ends early ({exc})") from exc
    except Exception as exc:  # fastavro raises assorted errors on corrupt bodies
        explained = _explain(data, offset, writer, reader)  # this record's values, not the schemas
        if explained is None and type(exc).__name__ == "SchemaResolutionError":
            raise SerdeError("incompatible_schema", f"{writer.fullname} (writer {writer.path.name}): {exc}") from exc
        raise SerdeError("invalid", f"{writer.name}: {explained or f'{type(exc).__name__}: {exc}'}") from exc
    if buf.tell() != len(data):
        raise SerdeError("invalid", f"{writer.name}: {len(data) - buf.tell()} trailing bytes after the body")
    if reader.to_domain is not None:
        record = reader.to_domain(record)
    return Decoded(writer.name, record, writer.fingerprint)


def _explain(data: bytes, offset: int, writer: SchemaEntry, reader: SchemaEntry) -> str | None:
    """Name the required reader fields a writer-version record leaves missing or null."""
    if reader.fingerprint == writer.fingerprint:
        return None
    try:
        record = fastavro.schemaless_reader(io.BytesIO(data[offset:]), writer.plain)
    except Exception:
        return None
    missing = []
    for f in reader.raw["fields"]:
        nullable = isinstance(f["type"], list) and "null" in f["type"]
        if "default" not in f and not nullable and record.get(f["name"]) is None:
            missing.append(f["name"])
    if not missing:
        return None
    return f"required field(s) {', '.join(missing)} missing or null (writer {writer.path.name})"


# ---- JSON form -------------------------------------------------------------------------------

def _named_types(schema: Any, acc: dict[str, Any]) -> dict[str, Any]:
    if isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed") and "name" in schema:
            acc[schema["name"]] = schema
            acc[schema["name"].split(".")[-1]] = schema
        for f in schema.get("fields", []):
            _named_types(f["type"], acc)
        if schema.get("type") == "array":
            _named_types(schema["items"], acc)
        if schema.get("type") == "map":
            _named_types(schema["values"], acc)
    elif isinstance(schema, list):
        for s in schema:
            _named_types(s, acc)
    return acc


def _convert(value: Any, schema: Any, names: dict[str, Any], to_json: bool, path: str) -> Any:
    if isinstance(schema, str) and schema in names:
        schema = names[schema]
    if isinstance(schema, list):  # union: plain value, pick the branch that fits
        if value is None:
            if "null" in schema:
                return None
            raise SerdeError("invalid", f"{path}: null is not allowed")
        errors = []
        for branch in schema:
            if branch == "null":
                continue
            try:
                return _convert(value, branch, names, to_json, path)
            except SerdeError as exc:
                errors.append(exc.detail)
        raise SerdeError("invalid", "; ".join(errors) or f"{path}: no union branch fits")
    t = schema["type"] if isinstance(schema, dict) else schema
    if t == "record":
        if not isinstance(value, dict):
            raise SerdeError("invalid", f"{path}: expected an object, got {type(value).__name__}")
        out: dict[str, Any] = {}
        known = set()
        for f in schema["fields"]:
            known.add(f["name"])
            fpath = f"{path}.{f['name']}" if path else f["name"]
            if f["name"] in value:
                out[f["name"]] = _convert(value[f["name"]], f["type"], names, to_json, fpath)
            elif "default" in f:
                out[f["name"]] = f["default"]
            else:
                raise SerdeError("invalid", f"{fpath}: required field is missing")
        extra = set(value) - known
        if extra and not to_json:
            raise SerdeError("invalid", f"{path or schema['name']}: unknown field(s) {sorted(extra)}")
        return out
    if t == "enum":
        if value not in schema["symbols"]:
            raise SerdeError("invalid", f"{path}: {value!r} is not one of {schema['symbols']}")
        return value
    if t == "array":
        if not isinstance(value, list):
            raise SerdeError("invalid", f"{path}: expected an array")
        return [_convert(v, schema["items"], names, to_json, f"{path}[{i}]") for i, v in enumerate(value)]
    if t == "map":
        if not isinstance(value, dict):
            raise SerdeError("invalid", f"{path}: expected an object")
        return {k: _convert(v, schema["values"], names, to_json, f"{path}.{k}") for k, v in value.items()}
    if t == "bytes":
        if to_json:
            return base64.b64encode(value).decode("ascii")
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if not isinstance(value, str):
            raise SerdeError("invalid", f"{path}: expected base64 text")
        try:
            return base64.b64decode(value, validate=True)
        except ValueError as exc:
            raise SerdeError("invalid", f"{path}: not base64 ({exc})") from exc
    checks: dict[str, tuple[type, ...]] = {
        "string": (str,), "long": (int,), "int": (int,), "boolean": (bool,),
        "double": (int, float), "float": (int, float), "null": (type(None),),
    }
    if t in checks:
        if not isinstance(value, checks[t]) or (t in ("long", "int") and isinstance(value, bool)):
            raise SerdeError("invalid", f"{path}: expected {t}, got {type(value).__name__} {value!r}")
        return value
    raise SerdeError("invalid", f"{path}: unsupported schema type {t!r}")


_SIMPLE_TYPES: dict[str, type] = {"string": str, "long": int, "int": int, "boolean": bool}


def _compile(schema: Any, names: dict[str, Any], lenient: bool = False) -> Any:
    """A fast validating converter for one schema (JSON form → record; with ``lenient`` record →
    JSON form, where unknown fields are left out as ``_convert`` does); raises ``_Slow`` — take
    ``_convert``, which also words the precise error — whenever a value does not fit."""
    if isinstance(schema, str) and schema in names:
        schema = names[schema]
    t = schema["type"] if isinstance(schema, dict) else schema
    simple = _SIMPLE_TYPES
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        if len(branches) == 1:
            inner = _compile(branches[0], names, lenient)
            nullable = "null" in schema

            def union(value: Any) -> Any:
                if value is None:
                    if nullable:
                        return None
                    raise _Slow
                return inner(value)
            return union
    elif t in simple:
        py = simple[t]

        def scalar(value: Any) -> Any:
            if type(value) is not py:
                raise _Slow
            return value
        return scalar
    elif t == "enum":
        symbols = frozenset(schema["symbols"])

        def enum(value: Any) -> Any:
            if value not in symbols:
                raise _Slow
            return value
        return enum
    elif t == "array":
        item = _compile(schema["items"], names, lenient)

        def array(value: Any) -> Any:
            if type(value) is not list:
                raise _Slow
            return [item(v) for v in value]
        return array
    elif t == "record":
        fields = [(f["name"], *_field_check(f["type"], names), _compile(f["type"], names, lenient),
                   "default" in f, f.get("default")) for f in schema["fields"]]
        known = frozenset(f[0] for f in fields)

        def record(value: Any) -> Any:
            if type(value) is not dict or not (lenient or known.issuperset(value)):
                raise _Slow
            out = {}
            for fname, kind, py, conv, has_default, default in fields:
                if fname in value:
                    v = value[fname]
                    if kind == 1:  # a plain scalar, checked inline (the hot path of every record)
                        if type(v) is not py:
                            raise _Slow
                    elif kind == 2:  # a nullable scalar
                        if v is not None and type(v) is not py:
                            raise _Slow
                    else:
                        v = conv(v)
                    out[fname] = v
                elif has_default:
                    out[fname] = default
                else:
                    raise _Slow
            return out
        return record

    def slow(value: Any) -> Any:
        raise _Slow
    return slow


def _field_check(schema: Any, names: dict[str, Any]) -> tuple[int, type | None]:
    """(1, type) for a plain scalar field, (2, type) for a nullable one, (0, None) otherwise."""
    simple = _SIMPLE_TYPES
    if isinstance(schema, str) and schema in simple:
        return 1, simple[schema]
    if isinstance(schema, list) and len(schema) == 2 and "null" in schema:
        other = schema[1] if schema[0] == "null" else schema[0]
        if isinstance(other, str) and other in simple:
            return 2, simple[other]
    return 0, None


class _Slow(Exception):
    """The fast path cannot decide: take the precise path (and its error message)."""


@lru_cache(maxsize=128)
def _json_converter(name: str, lenient: bool = False) -> tuple[Any, dict[str, Any]]:
    """The compiled converter of schema ``name`` (``lenient``: the record → JSON-form direction)."""
    entry = registry().get(name)
    names = _named_types(entry.raw, {})
    return _compile(entry.raw, names, lenient), names


def from_json(name: str, obj: Any) -> dict[str, Any]:
    """JSON form → record of the current schema ``name``: validated, defaults filled."""
    fast, names = _json_converter(name)
    try:
        record: dict[str, Any] = fast(obj)
    except _Slow:
        record = _convert(obj, registry().get(name).raw, names, to_json=False, path="")
    normalise = registry().current[name].to_domain  # money text as v2's decimals read
    return record if normalise is None else normalise(record)


def to_json(name: str, record: dict[str, Any]) -> dict[str, Any]:
    """Record → JSON form (plain object; bytes as base64)."""
    fast, names = _json_converter(name, lenient=True)
    try:
        return fast(record)  # type: ignore[no-any-return]
    except _Slow:
        return _convert(record, registry().get(name).raw, names, to_json=True, path="")


def canonical_json_bytes(obj: Any, newline: bool = False) -> bytes:
    """One line, sorted keys, no spaces, ASCII only (what ``json.dumps(obj, sort_keys=True,
    separators=(",", ":"))`` writes), made by orjson when its output is ASCII (≈5× faster). One
    difference is accepted: floats below 1e-4 are written as orjson writes them (``1e-6``, not
    ``1e-06``) — shopmail never puts such numbers in a record; ids never depend on this text."""
    option = orjson.OPT_SORT_KEYS | (orjson.OPT_APPEND_NEWLINE if newline else 0)
    try:
        out = orjson.dumps(obj, option=option)
    except TypeError:  # non-str keys, ints beyond 64 bits, …: the standard library decides
        out = b"\x80"
    if out.isascii() and b"\x7f" not in out:  # json.dumps escapes non-ASCII and DEL
        return out
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return (text + "\n" if newline else text).encode()


def canonical_json(obj: Any) -> str:
    """``canonical_json_bytes`` as text."""
    return canonical_json_bytes(obj).decode()


def dumps_json(name: str, record: dict[str, Any]) -> str:
    """Canonical one-line JSON form (sorted keys) – stable for diffs and files."""
    return canonical_json(to_json(name, record))
