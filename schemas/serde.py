"""Avro single-object encoding for every shopmail topic value.

Wire format (Avro spec, "Single object encoding"): ``C3 01`` + the 8-byte little-endian CRC-64-AVRO
fingerprint of the writer schema's Parsing Canonical Form + the Avro binary body.  Readers look the
writer schema up by fingerprint among the ``.avsc`` files shipped in this package (current schemas at
the top level, older versions under ``history/``) and resolve it against the current reader schema of
the same name, so schema evolution follows Avro's resolution rules.

The *JSON form* of a record is the plain JSON object (no union wrappers, optional fields absent or
null, decimals as strings, times as epoch ms, ``bytes`` as base64).
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
import orjson
from fastavro.schema import fingerprint as avro_fingerprint
from fastavro.schema import to_parsing_canonical_form

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
SCHEMA_DIR = Path(__file__).resolve().parent


class SerdeError(ValueError):
    """A value that cannot be encoded or decoded.  ``reason`` is a stable code for DLQ records:
    ``bad_magic``, ``truncated``, ``unknown_fingerprint``, ``unexpected_schema``, ``invalid``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SchemaEntry:
    name: str  # short name, e.g. "CartEvent"
    fingerprint: int
    parsed: dict[str, Any]
    raw: dict[str, Any]
    path: Path

    @property
    def fingerprint_bytes(self) -> bytes:
        return self.fingerprint.to_bytes(8, "little")


class SchemaRegistry:
    """All schemas shipped in ``schemas/``: current ones by name, every version by fingerprint."""

    def __init__(self, directory: Path = SCHEMA_DIR) -> None:
        self.current: dict[str, SchemaEntry] = {}
        self.by_fingerprint: dict[int, SchemaEntry] = {}
        for path in sorted(directory.glob("*.avsc")):
            entry = self._load(path)
            self.current[entry.name] = entry
            self.by_fingerprint[entry.fingerprint] = entry
        for path in sorted((directory / "history").glob("*.avsc")):
            entry = self._load(path)
            self.by_fingerprint.setdefault(entry.fingerprint, entry)

    @staticmethod
    def _load(path: Path) -> SchemaEntry:
        raw = json.loads(path.read_text())
        # parsed once, with fastavro's "already parsed" mark: without it every schemaless_reader and
        # schemaless_writer call parses the schema again (about half of decode and encode time)
        parsed = fastavro.parse_schema(raw)
        canonical = to_parsing_canonical_form(parsed)
        fp = int(avro_fingerprint(canonical, "CRC-64-AVRO"), 16)
        return SchemaEntry(name=raw["name"], fingerprint=fp, parsed=parsed, raw=raw, path=path)

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


def encode(name: str, record: dict[str, Any]) -> bytes:
    """Encode ``record`` with the current schema ``name``; raises SerdeError(invalid) if it does not fit."""
    entry = registry().get(name)
    buf = io.BytesIO()
    buf.write(MAGIC)
    buf.write(entry.fingerprint_bytes)
    try:
        fastavro.schemaless_writer(buf, entry.parsed, record, strict_allow_default=True)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise SerdeError("invalid", f"{name}: {exc}") from exc
    return buf.getvalue()


@dataclass(frozen=True)
class Decoded:
    name: str
    record: dict[str, Any]
    writer_fingerprint: int


def decode(data: bytes | None, expected: str | tuple[str, ...] | None = None) -> Decoded:
    """Decode a single-object-encoded value into the current reader schema of the writer's name.

    ``expected`` restricts which schema names are acceptable on this topic.
    """
    if data is None:
        raise SerdeError("truncated", "value is null (tombstone)")
    if len(data) < HEADER_LEN:
        raise SerdeError("truncated", f"{len(data)} bytes is shorter than the 10-byte header")
    if data[:2] != MAGIC:
        raise SerdeError("bad_magic", f"expected C3 01, got {data[:2].hex(' ').upper()}")
    fp = int.from_bytes(data[2:10], "little")
    reg = registry()
    writer = reg.by_fingerprint.get(fp)
    if writer is None:
        raise SerdeError("unknown_fingerprint", f"no schema with fingerprint {fp:016x}")
    if expected is not None:
        allowed = (expected,) if isinstance(expected, str) else expected
        if writer.name not in allowed:
            raise SerdeError("unexpected_schema", f"got {writer.name}, expected one of {', '.join(allowed)}")
    reader = reg.current.get(writer.name, writer)
    buf = io.BytesIO(data)
    buf.seek(HEADER_LEN)
    try:
        if reader is writer:
            record = fastavro.schemaless_reader(buf, writer.parsed)
        else:
            record = fastavro.schemaless_reader(buf, writer.parsed, reader.parsed)
    except EOFError as exc:
        raise SerdeError("truncated", f"{writer.name}: body ends early ({exc})") from exc
    except Exception as exc:  # fastavro raises assorted errors on corrupt bodies
        raise SerdeError("invalid", f"{writer.name}: {_explain(data, writer, reader) or f'{type(exc).__name__}: {exc}'}") from exc
    if buf.tell() != len(data):
        raise SerdeError("invalid", f"{writer.name}: {len(data) - buf.tell()} trailing bytes after the body")
    return Decoded(writer.name, record, fp)


def _explain(data: bytes, writer: SchemaEntry, reader: SchemaEntry) -> str | None:
    """Name the required reader fields a writer-version record leaves missing or null."""
    if reader is writer:
        return None
    try:
        record = fastavro.schemaless_reader(io.BytesIO(data[HEADER_LEN:]), writer.parsed)
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
        return fast(obj)  # type: ignore[no-any-return]
    except _Slow:
        return _convert(obj, registry().get(name).raw, names, to_json=False, path="")


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
