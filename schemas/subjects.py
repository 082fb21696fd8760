"""Which schema shopmail registers under which Schema Registry subject (TopicNameStrategy:
``<topic>-value``), and ``register_all`` behind ``shopmail schemas register``.

* Topics shopmail writes (commands, outcomes, feedback, coupons, audiences, the clock, every DLQ):
  the schema it writes, so Kafka Connect, ksqlDB or a Java consumer read them with the standard
  deserializers when ``registry.output_framing = "registry"``.
* Input topics only the shop writes: the v2 contract, so producers with
  ``auto.register.schemas=false`` find the schema they are asked to write.

The sink ledger is left out: it holds two record types (TopicNameStrategy allows one per subject)
and nothing outside shopmail reads it; it stays in single-object encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.serde import SchemaEntry, registry
from streams.config import Settings
from streams.kafka.topics import GLOBAL_INPUT_TOPICS, INPUT_TOPICS, VALUE_SCHEMA

WRITTEN_BY_SHOPMAIL = ("commands", "outcomes", "feedback", "coupons", "audiences", "clock")
COMPATIBILITY = "BACKWARD"


@dataclass(frozen=True)
class Subject:
    subject: str
    entry: SchemaEntry


def subjects(settings: Settings) -> list[Subject]:
    reg = registry()
    t = settings.topics
    out: list[Subject] = []
    for logical in (*INPUT_TOPICS, *GLOBAL_INPUT_TOPICS, "commands", "outcomes", "coupons", "audiences"):
        name = VALUE_SCHEMA[logical]
        entry = reg.current[name] if logical in WRITTEN_BY_SHOPMAIL or name not in reg.v2 else reg.v2[name]
        out.append(Subject(f"{t.name(logical)}-value", entry))
    dead_letter = reg.current["DeadLetter"]
    for logical in (*INPUT_TOPICS, *GLOBAL_INPUT_TOPICS, "commands"):
        out.append(Subject(f"{t.dlq(logical)}-value", dead_letter))
    return out


def register_all(settings: Settings) -> list[tuple[str, str, int]]:
    """Register every subject with BACKWARD compatibility; (subject, schema full name, id) each."""
    from schemas.registry_client import RegistryResolver

    resolver = RegistryResolver(settings.registry)
    return [(s.subject, s.entry.fullname, resolver.register(s.subject, s.entry, COMPATIBILITY))
            for s in subjects(settings)]
