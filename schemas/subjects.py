"""Which schema shopmail registers under which Schema Registry subject (TopicNameStrategy:
``<topic>-value``), and ``register_all`` behind ``shopmail schemas register``.

* Topics shopmail writes (commands, outcomes, feedback, coupons, audiences, the clock, every DLQ):
  the schema it writes, so Kafka Connect, ksqlDB or a Java consumer read them with the standard
  deserializers when ``registry.output_framing = "registry"``.
* Input topics only the shop writes: the v2 contract, so producers with
  ``auto.register.schemas=false`` find the schema they are asked to write (``shop.shipments`` too,
  where shopmail's carrier webhooks write v2 in registry framing).

The sink ledger is left out: it holds two record types (TopicNameStrategy allows one per subject)
and nothing outside shopmail reads it; it stays in single-object encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.entries import Subject, registry
from streams.config import Settings
from schemas.topics import GLOBAL_INPUT_TOPICS, INPUT_TOPICS, VALUE_SCHEMA, component_access, topic_specs

WRITTEN_BY_SHOPMAIL = ("commands", "outcomes", "feedback", "coupons", "audiences", "clock")
COMPATIBILITY = "BACKWARD"


def subjects(settings: Settings) -> list[Subject]:
    reg = registry()
    t = settings.topics
    out: list[Subject] = []
    for logical in (*INPUT_TOPICS, *GLOBAL_INPUT_TOPICS, "commands", "outcomes", "coupons", "audiences"):
        name = VALUE_SCHEMA[logical]
        entry = reg.current[name] if logical in WRITTEN_BY_SHOPMAIL or name not in reg.v2 else reg.v2[name]
        out.append(Subject(f"{t.name(logical)}-value", entry, t.name(logical)))
    dead_letter = reg.current["DeadLetter"]
    for logical in (*INPUT_TOPICS, *GLOBAL_INPUT_TOPICS, "commands"):
        out.append(Subject(f"{t.dlq(logical)}-value", dead_letter, t.dlq(logical)))
    return out


def written_subjects(settings: Settings) -> list[Subject]:
    """The subjects of every topic a shopmail component writes (``component_access``), all
    components together: a component also reads what others write (the sink reads the commands, the
    processors the clock and feedback), and an id resolved at start-up is read without the registry."""
    names = {spec.logical: spec.name for spec in topic_specs(settings)}
    written = {names[lt] for c in component_access(settings) for lt in c.writes if lt in names}
    return [s for s in subjects(settings) if s.topic in written]


@dataclass(frozen=True)
class Registered:
    subject: str
    schema: str  # full name
    schema_id: int | None = None
    compatibility: str = ""  # the subject's level after the run
    compatibility_set: bool = False  # set by this run (the subject had no level of its own)
    error: str = ""


def register_all(settings: Settings) -> list[Registered]:
    """Register every subject; BACKWARD only where a subject has no compatibility level of its own.
    A refused subject is reported and the others are still registered; an unreachable registry stops
    the run (every later subject is reported as not attempted)."""
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    from schemas.registry_client import RegistryResolver

    resolver = RegistryResolver(settings.registry)
    out: list[Registered] = []
    unreachable = ""
    for s in subjects(settings):
        if unreachable:
            out.append(Registered(s.subject, s.entry.fullname, error=f"not attempted: {unreachable}"))
            continue
        try:
            schema_id, level, set_now = resolver.register(s.subject, s.entry, COMPATIBILITY)
        except SchemaRegistryError as exc:
            out.append(Registered(s.subject, s.entry.fullname,
                                  error=f"HTTP {exc.http_status_code} ({exc.error_code}): {exc.error_message}"))
            continue
        except Exception as exc:  # noqa: BLE001 - refused connection, timeout, TLS: httpx's own types
            unreachable = f"the registry at {settings.registry.url} cannot be reached ({type(exc).__name__}: {exc})"
            out.append(Registered(s.subject, s.entry.fullname, error=unreachable))
            continue
        out.append(Registered(s.subject, s.entry.fullname, schema_id, level, set_now))
    return out
