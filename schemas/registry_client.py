"""Writer schemas from a Confluent-compatible Schema Registry, through confluent-kafka's
``schema_registry`` client, cached per process.

* Registry framing: a schema id → its writer schema, fetched once and kept for the life of the
  process (ids are immutable), so a registry outage never stops records whose schemas are cached.
* Producer-first evolution with single-object encoding: an unshipped fingerprint → every version of
  the topic's subject is fetched once and indexed by fingerprint.
* Output: the id of one of shopmail's schemas under a subject (``shopmail schemas register``).

A failed lookup (connection, timeout, HTTP 5xx, authentication) fails every *uncached* lookup at
once for ``registry.retry_after_s`` — the record is dead-lettered as ``registry_unavailable`` and a
re-drive reads it — so an outage costs one timeout per window, not one per record.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from schemas.serde import SchemaEntry, SerdeError, make_entry, registry
from streams.config import SchemaRegistrySettings

log = logging.getLogger(__name__)

NOT_FOUND_CODES = (40401, 40402, 40403)  # subject, version, schema not found


def client_config(settings: SchemaRegistrySettings) -> dict[str, Any]:
    """The confluent-kafka ``SchemaRegistryClient`` configuration of ``[registry]``."""
    conf: dict[str, Any] = {"url": settings.url, "timeout": settings.timeout_s,
                            "max.retries": settings.max_retries, "retries.wait.ms": 200,
                            "retries.max.wait.ms": 1000}
    if settings.basic_auth_user:
        conf["basic.auth.user.info"] = f"{settings.basic_auth_user}:{settings.password()}"
    if settings.ssl_ca_location:
        conf["ssl.ca.location"] = settings.ssl_ca_location
    if settings.ssl_certificate_location:
        conf["ssl.certificate.location"] = settings.ssl_certificate_location
        conf["ssl.key.location"] = settings.ssl_key_location
    return conf


def schema_text(entry: SchemaEntry) -> str:
    """The schema as registered: the shipped JSON (docs, defaults and logical types kept)."""
    return json.dumps(entry.raw, separators=(",", ":"))


class RegistryResolver:
    def __init__(self, settings: SchemaRegistrySettings) -> None:
        if settings.output_framing not in ("single_object", "registry"):
            raise ValueError(f"registry.output_framing must be single_object or registry, not {settings.output_framing!r}")
        self.settings = settings
        self.client = SchemaRegistryClient(client_config(settings))
        self.registry_output = settings.output_framing == "registry"
        self._by_id: dict[int, SchemaEntry] = {}
        self._by_fp: dict[int, SchemaEntry] = {}
        self._ids: dict[tuple[str, int], int] = {}
        self._subject_checked: dict[str, float] = {}  # subject → when its versions were last fetched
        self._down_until = 0.0
        self._down_reason = ""
        self._lock = threading.Lock()
        self.lookups = 0  # HTTP lookups made (the cache keeps this at one per schema)

    # ---- decode -------------------------------------------------------------------------------

    def writer_by_id(self, schema_id: int) -> SchemaEntry:
        entry = self._by_id.get(schema_id)
        if entry is not None:
            return entry
        with self._lock:
            entry = self._by_id.get(schema_id)
            if entry is None:
                schema = self._call(f"schema id {schema_id}", self.client.get_schema, schema_id)
                if schema.schema_type not in (None, "AVRO"):
                    raise SerdeError("incompatible_schema", f"schema id {schema_id} is {schema.schema_type}, not AVRO")
                entry = self._entry(schema.schema_str, f"registry-id-{schema_id}")
                self._by_id[schema_id] = entry
        return entry

    def writer_by_fingerprint(self, subject: str, fp: int) -> SchemaEntry | None:
        entry = self._by_fp.get(fp)
        if entry is not None:
            return entry
        with self._lock:
            entry = self._by_fp.get(fp)
            if entry is not None:
                return entry
            checked = self._subject_checked.get(subject)
            if checked is not None and time.monotonic() - checked < self.settings.retry_after_s:
                return None  # fetched a moment ago and not there: not per record
            try:
                versions = self._call(f"subject {subject}", self.client.get_versions, subject)
            except SerdeError as exc:
                if exc.reason == "unknown_schema_id":  # no such subject
                    self._subject_checked[subject] = time.monotonic()
                    return None
                raise
            for v in versions:
                reg = self._call(f"subject {subject} version {v}", self.client.get_version, subject, v)
                if reg.schema.schema_type in (None, "AVRO"):
                    e = self._entry(reg.schema.schema_str, f"registry-{subject}-v{v}")
                    self._by_fp.setdefault(e.fingerprint, e)
                    self._by_id.setdefault(reg.schema_id, e)
            self._subject_checked[subject] = time.monotonic()
            return self._by_fp.get(fp)

    def _entry(self, text: str, source: str) -> SchemaEntry:
        try:
            raw = json.loads(text)
            entry = make_entry(raw, Path(source))
        except Exception as exc:  # noqa: BLE001 - a registered schema fastavro cannot parse
            raise SerdeError("incompatible_schema", f"{source}: not an Avro schema shopmail can read ({exc})") from exc
        reader = registry().readers.get(entry.fullname)
        reader_scales = dict(reader.decimal_scales) if reader is not None else {}
        for path, scale in entry.decimal_scales:  # decimals are read with the reader's scale: they must agree
            if path in reader_scales and reader_scales[path] != scale:
                raise SerdeError("incompatible_schema", f"{source}: decimal {path} has scale {scale}, the "
                                                        f"reader's is {reader_scales[path]}")
        return entry

    # ---- encode / register ----------------------------------------------------------------------

    def id_for(self, subject: str, entry: SchemaEntry) -> int:
        key = (subject, entry.fingerprint)
        schema_id = self._ids.get(key)
        if schema_id is None:
            try:
                reg = self.client.lookup_schema(subject, Schema(schema_text(entry), "AVRO"))
            except SchemaRegistryError as exc:
                raise SerdeError("unregistered_schema", f"{entry.fullname} is not registered under {subject} "
                                                        f"(run `shopmail schemas register`): {exc}") from exc
            schema_id = self._ids[key] = reg.schema_id
        return schema_id

    def register(self, subject: str, entry: SchemaEntry, compatibility: str = "BACKWARD") -> int:
        """Register ``entry`` under ``subject`` with ``compatibility`` (idempotent)."""
        self.client.set_compatibility(subject, compatibility)
        schema_id = self.client.register_schema(subject, Schema(schema_text(entry), "AVRO"))
        self._ids[(subject, entry.fingerprint)] = schema_id
        return schema_id

    # ---- one guarded call -------------------------------------------------------------------------

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        now = time.monotonic()
        if now < self._down_until:
            raise SerdeError("registry_unavailable", f"{what} not cached and the registry failed "
                                                     f"{self.settings.retry_after_s - (self._down_until - now):.0f} s "
                                                     f"ago ({self._down_reason}); re-drive after it is back")
        self.lookups += 1
        try:
            return fn(*args)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404 or exc.error_code in NOT_FOUND_CODES:
                raise SerdeError("unknown_schema_id", f"{what} is not in the registry ({exc.error_message})") from exc
            self._failed(f"HTTP {exc.http_status_code}: {exc.error_message}")
            raise SerdeError("registry_unavailable", f"{what}: the registry answered HTTP {exc.http_status_code} "
                                                     f"({exc.error_message}); re-drive after it is fixed") from exc
        except Exception as exc:  # noqa: BLE001 - connection refused, timeout, TLS: httpx raises its own types
            self._failed(f"{type(exc).__name__}: {exc}")
            raise SerdeError("registry_unavailable", f"{what}: registry unreachable ({type(exc).__name__}: {exc}); "
                                                     f"re-drive after it is back") from exc

    def _failed(self, reason: str) -> None:
        self._down_until = time.monotonic() + self.settings.retry_after_s
        self._down_reason = reason
        log.warning("schema registry lookup failed (%s); uncached schemas are dead-lettered for %.0f s",
                    reason, self.settings.retry_after_s)

