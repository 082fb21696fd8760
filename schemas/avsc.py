"""The shipped ``.avsc`` files as plain JSON, with the standard library only (the build of the compiled
decoder reads them before any dependency is installed).

Which files are writers and which are readers: the top-level files (contract v1) and ``v2/`` (contract
v2, the shared named types of ``v2/common`` expanded at first use) are both writers and the readers of
their full name; ``history/`` holds older writer versions, read with the reader of the same full name.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent


def fullname(raw: dict[str, Any]) -> str:
    name: str = raw["name"]
    return name if "." in name or not raw.get("namespace") else f"{raw['namespace']}.{name}"


def expand(schema: Any, named: dict[str, Any], seen: set[str]) -> Any:
    """``schema`` with references to the shared named types (``v2/common``) replaced by their
    definition at first use, so every contract is one self-contained schema (fingerprint, registry)."""
    if isinstance(schema, str):
        if schema in named and schema not in seen:
            seen.add(schema)
            return expand(named[schema], named, seen)
        return schema
    if isinstance(schema, list):
        return [expand(s, named, seen) for s in schema]
    if isinstance(schema, dict):
        out = dict(schema)
        if "fields" in out:
            out["fields"] = [dict(f, type=expand(f["type"], named, seen)) for f in out["fields"]]
        for key in ("items", "values"):
            if key in out:
                out[key] = expand(out[key], named, seen)
        return out
    return schema


def strip_logical_types(schema: Any) -> Any:
    """The same schema without ``logicalType`` annotations (same binary encoding, same fingerprint)."""
    if isinstance(schema, list):
        return [strip_logical_types(s) for s in schema]
    if isinstance(schema, dict):
        out = {k: v for k, v in schema.items() if k not in ("logicalType", "precision", "scale")}
        if "fields" in out:
            out["fields"] = [dict(f, type=strip_logical_types(f["type"])) for f in out["fields"]]
        for key in ("items", "values"):
            if key in out:
                out[key] = strip_logical_types(out[key])
        if isinstance(out.get("type"), (dict, list)):
            out["type"] = strip_logical_types(out["type"])
        if set(out) == {"type"} and isinstance(out["type"], str):
            return out["type"]
        return out
    return schema


@dataclass(frozen=True)
class ShippedSchema:
    raw: dict[str, Any]  # the JSON schema, named types expanded
    path: Path
    kind: str  # "v1" (top level), "v2" or "history"

    @property
    def key(self) -> str:
        """The file's path below ``schemas/`` (``OrderEvent.avsc``, ``history/OrderEvent.v0.avsc``)."""
        return self.path.name if self.kind == "v1" else f"{self.kind}/{self.path.name}"


def shipped(directory: Path = SCHEMA_DIR) -> list[ShippedSchema]:
    """Every shipped writer schema, in the order the schema registry loads them (v1, v2, history)."""
    out = [ShippedSchema(json.loads(p.read_text()), p, "v1") for p in sorted(directory.glob("*.avsc"))]
    named = {}
    for path in sorted((directory / "v2" / "common").glob("*.avsc")):
        raw = json.loads(path.read_text())
        named[fullname(raw)] = raw
    out += [ShippedSchema(expand(json.loads(p.read_text()), named, set()), p, "v2")
            for p in sorted((directory / "v2").glob("*.avsc"))]
    out += [ShippedSchema(json.loads(p.read_text()), p, "history")
            for p in sorted((directory / "history").glob("*.avsc"))]
    return out


def readers(schemas: list[ShippedSchema]) -> dict[str, ShippedSchema]:
    """The reader schema of each full name: the v1 and v2 files (history files only write)."""
    return {fullname(s.raw): s for s in schemas if s.kind != "history"}


def source_digest(directory: Path = SCHEMA_DIR) -> str:
    """SHA-256 over every ``.avsc`` below ``directory`` (path and bytes): what the compiled decoder
    was generated from."""
    h = hashlib.sha256()
    for path in sorted(directory.rglob("*.avsc")):
        h.update(path.relative_to(directory).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()
