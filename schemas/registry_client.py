"""Writer schemas from a Confluent-compatible Schema Registry, through confluent-kafka's
``schema_registry`` client, cached per process.

* Registry framing: a schema id → its writer schema, fetched once and kept for the life of the
  process (ids are immutable), so a registry outage never stops records whose schemas are cached.
* Producer-first evolution with single-object encoding: an unshipped fingerprint → every version of
  the topic's subject is fetched once and indexed by fingerprint.
* Output: the id of what shopmail writes under each subject (``shopmail schemas register``
  registers them), resolved when a component starts (``prepare_output``); a write never raises.
* A registered writer whose values the reader would read with another meaning (a logical type on one
  side only, another time unit, a decimal's scale or a wider precision) is refused, once per schema.

A failed lookup (connection, timeout, HTTP 5xx, authentication) fails every *uncached* lookup at
once for ``registry.retry_after_s`` — the record is dead-lettered as ``registry_unavailable`` and a
re-drive reads it — so an outage costs one timeout per window, not one per record.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from fastavro.schema import fingerprint as avro_fingerprint
from fastavro.schema import to_parsing_canonical_form
from prometheus_client import Counter

from schemas.entries import (RegistryStartupError, SchemaEntry, SerdeError, Subject, logical_mismatches,
                             make_entry, registry)
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


UNREADABLE_VERSIONS = Counter("shopmail_registry_unreadable_versions_total",
                              "Registered versions shopmail skipped: not Avro it can read, or a schema reference",
                              ["subject"])
SINGLE_OBJECT_WRITES = Counter("shopmail_registry_single_object_writes_total",
                               "Records written single-object although registry.output_framing is registry: "
                               "the subject was not resolved at start-up and could not be looked up",
                               ["subject"])
NO_OWN_LEVEL_CODES = (40401, 40408)  # subject not found / no subject-level compatibility


class RegistryResolver:
    def __init__(self, settings: SchemaRegistrySettings) -> None:
        if settings.output_framing not in ("single_object", "registry"):
            raise ValueError(f"registry.output_framing must be single_object or registry, not {settings.output_framing!r}")
        self.settings = settings
        self.client = SchemaRegistryClient(client_config(settings))
        self.registry_output = settings.output_framing == "registry"
        self._by_id: dict[int, SchemaEntry | SerdeError] = {}  # a refused schema is refused once
        self._by_fp: dict[int, SchemaEntry | SerdeError] = {}
        self._output: dict[str, tuple[SchemaEntry, int]] = {}  # subject → what shopmail writes there, its id
        self._output_missed: dict[str, float] = {}  # subject → when a write-time lookup last failed
        self._subject_checked: dict[str, float] = {}  # subject → when its versions were last fetched
        self._skipped: dict[str, list[str]] = {}  # subject → its versions that cannot be read, and why
        self._down_until = 0.0
        self._down_reason = ""
        self._lock = threading.Lock()
        self.lookups = 0  # HTTP lookups made (the cache keeps this at one per schema)

    # ---- decode -------------------------------------------------------------------------------

    def writer_by_id(self, schema_id: int) -> SchemaEntry:
        entry = self._by_id.get(schema_id)
        if entry is None:
            with self._lock:
                entry = self._by_id.get(schema_id)
                if entry is None:
                    schema = self._call(f"schema id {schema_id}", self.client.get_schema, schema_id)
                    entry = self._by_id[schema_id] = self._readable(schema.schema_str, schema.schema_type,
                                                                    schema.references, f"registry-id-{schema_id}")
        if isinstance(entry, SerdeError):  # the one schema of this id: it cannot be resolved to the reader
            raise SerdeError("incompatible_schema", entry.detail)
        return entry

    def writer_by_fingerprint(self, subject: str, fp: int) -> SchemaEntry | None:
        """The registered version of ``subject`` with fingerprint ``fp``; None if there is none. A version
        shopmail cannot read is skipped (logged, counted): it does not stop the others from being found."""
        entry = self._by_fp.get(fp)
        if entry is None:
            with self._lock:
                entry = self._by_fp.get(fp)
                if entry is None:
                    self._index_subject(subject)
                    entry = self._by_fp.get(fp)
        if isinstance(entry, SerdeError):
            raise SerdeError(entry.reason, entry.detail)
        return entry

    def skipped_versions(self, subject: str) -> list[str]:
        return list(self._skipped.get(subject, ()))

    def _index_subject(self, subject: str) -> None:
        checked = self._subject_checked.get(subject)
        if checked is not None and time.monotonic() - checked < self.settings.retry_after_s:
            return  # fetched a moment ago: not per record
        try:
            versions = self._call(f"subject {subject}", self.client.get_versions, subject)
        except SerdeError as exc:
            if exc.reason == "unknown_schema_id":  # no such subject
                self._subject_checked[subject] = time.monotonic()
                return
            raise
        skipped = []
        for v in versions:
            reg = self._call(f"subject {subject} version {v}", self.client.get_version, subject, v)
            source = f"registry-{subject}-v{v}"
            found = self._readable(reg.schema.schema_str, reg.schema.schema_type, reg.schema.references, source)
            if isinstance(found, SerdeError) and found.reason == "unreadable_schema":
                skipped.append(f"version {v}: {found.detail}")
                if f"version {v}: {found.detail}" not in self._skipped.get(subject, []):
                    UNREADABLE_VERSIONS.labels(subject).inc()
                    log.warning("schema registry: %s version %d skipped: %s", subject, v, found.detail)
                continue
            fp = found.fingerprint if isinstance(found, SchemaEntry) else _fingerprint_of(reg.schema.schema_str)
            if fp is not None:
                self._by_fp.setdefault(fp, found)
            self._by_id.setdefault(reg.schema_id, found)
        self._skipped[subject] = skipped
        self._subject_checked[subject] = time.monotonic()

    def _readable(self, text: str, schema_type: str | None, references: Any, source: str) -> SchemaEntry | SerdeError:
        """The entry of a registered schema, or the error every record written with it gets:
        ``unreadable_schema`` (not Avro, a schema reference, not parseable) or ``incompatible_schema``
        (a logical type, decimal scale or precision the reader does not share)."""
        if schema_type not in (None, "AVRO"):
            return SerdeError("unreadable_schema", f"{source} is {schema_type}, not AVRO")
        if references:
            names = ", ".join(str(getattr(r, "name", r)) for r in references)
            return SerdeError("unreadable_schema", f"{source} uses schema references ({names}), which shopmail "
                                                   f"does not resolve: register the schema self-contained")
        try:
            entry = make_entry(json.loads(text), Path(source))
        except Exception as exc:  # noqa: BLE001 - a registered schema fastavro cannot parse
            return SerdeError("unreadable_schema", f"{source}: not an Avro schema shopmail can read ({exc})")
        reader = registry().readers.get(entry.fullname)
        mismatches = logical_mismatches(entry, reader) if reader is not None else []
        if mismatches:
            return SerdeError("incompatible_schema", f"{source} ({entry.fullname}): {'; '.join(mismatches)}")
        return entry

    # ---- encode / register ----------------------------------------------------------------------

    def prepare_output(self, subjects: Iterable[Subject]) -> None:
        """Resolve the id of what shopmail writes under each subject (``prepare_output`` in serde)."""
        missing = []
        for s in subjects:
            try:
                reg = self.client.lookup_schema(s.subject, Schema(schema_text(s.entry), "AVRO"))
            except SchemaRegistryError as exc:
                if exc.http_status_code == 404:
                    missing.append(s.subject)
                    continue
                raise RegistryStartupError(f"the Schema Registry at {self.settings.url} answered HTTP "
                                           f"{exc.http_status_code} ({exc.error_message}) for subject "
                                           f"{s.subject}", 3) from None
            except Exception as exc:  # noqa: BLE001 - refused, timeout, TLS, a bad URL: httpx's own types
                raise RegistryStartupError(f"the Schema Registry at {self.settings.url} cannot be reached "
                                           f"({type(exc).__name__}: {exc}) to resolve subject {s.subject}; "
                                           f"registry.output_framing = registry needs it at start-up", 3) from None
            self._output[s.subject] = (s.entry, reg.schema_id)
            self._by_id.setdefault(reg.schema_id, s.entry)  # what shopmail writes, it reads without a lookup
        if missing:
            raise RegistryStartupError(f"not registered in the Schema Registry at {self.settings.url}: "
                                       f"{', '.join(missing)} (run `shopmail schemas register`)", 2)

    def output_writer(self, subject: str, name: str) -> tuple[SchemaEntry, int] | None:
        """(schema, id) to write a ``name`` record under ``subject`` in registry framing; None → write
        it single-object. Never raises: a subject not resolved at start-up is looked up once (not
        again for ``retry_after_s`` after a miss), and a failure is logged and counted."""
        found = self._output.get(subject)
        if found is None or found[0].name != name:
            found = self._lookup_output(subject, name)
        if found is None:
            SINGLE_OBJECT_WRITES.labels(subject).inc()
        return found

    def _lookup_output(self, subject: str, name: str) -> tuple[SchemaEntry, int] | None:
        missed = self._output_missed.get(subject)
        if missed is not None and time.monotonic() - missed < self.settings.retry_after_s:
            return None
        reg = registry()
        candidates = [e for e in (reg.current.get(name), reg.v2.get(name)) if e is not None]
        with self._lock:
            for entry in candidates:
                try:
                    found = self._call(f"subject {subject}", self.client.lookup_schema, subject,
                                       Schema(schema_text(entry), "AVRO"))
                except SerdeError as exc:
                    if exc.reason == "unknown_schema_id":
                        continue
                    break
                self._output[subject] = (entry, found.schema_id)
                return self._output[subject]
            self._output_missed[subject] = time.monotonic()
        log.warning("schema registry: no id for %s under %s (not resolved at start-up, not found now); written "
                    "single-object for %.0f s", name, subject, self.settings.retry_after_s)
        return None

    def register(self, subject: str, entry: SchemaEntry, compatibility: str = "BACKWARD") -> tuple[int, str, bool]:
        """Register ``entry`` under ``subject`` (idempotent). ``compatibility`` is set only on a subject
        without a level of its own (a level the shop set, NONE during a migration included, is kept).
        Returns (id, the subject's level, whether it was set now)."""
        try:
            level, set_now = str(self.client.get_compatibility(subject)), False
        except SchemaRegistryError as exc:
            if exc.error_code not in NO_OWN_LEVEL_CODES and exc.http_status_code != 404:
                raise
            self.client.set_compatibility(subject, compatibility)
            level, set_now = compatibility, True
        schema_id = self.client.register_schema(subject, Schema(schema_text(entry), "AVRO"))
        return schema_id, level, set_now
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



def _fingerprint_of(text: str) -> int | None:
    """The single-object fingerprint of a schema text fastavro can parse (None if it cannot)."""
    try:
        import fastavro

        return int(avro_fingerprint(to_parsing_canonical_form(fastavro.parse_schema(json.loads(text))),
                                    "CRC-64-AVRO"), 16)
    except Exception:  # noqa: BLE001
        return None
