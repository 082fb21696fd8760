"""The one list of shopmail topics and what each carries, which component reads and writes which: a
contract like the schemas, so it lives beside them. ``shopmail topics`` (streams/kafka/topics.py), the
workers, the registry subjects (schemas/subjects.py) and deploy/ generation (streams/kafka/strimzi.py) all
read it.

Input topics (and the clock topic) share one partition count so one customer's state lives in one
partition.  Compaction where a topic is a table (customer profiles, the sink ledger, changelogs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streams.config import Settings

INPUT_TOPICS = ("carts", "orders", "shipments", "customers", "feedback", "clock", "product_views")  # keyed by customer (or partition)
# input topics not keyed by customer (a global table): every worker reads all of their partitions and
# feeds every record to every partition task it runs (streams/core/engine.py GLOBAL_TOPICS)
GLOBAL_INPUT_TOPICS = ("inventory",)
# value schema per logical topic (the DLQ value is always DeadLetter)
VALUE_SCHEMA = {
    "carts": "CartEvent", "orders": "OrderEvent", "shipments": "ShipmentEvent",
    "customers": "CustomerEvent", "feedback": "EmailFeedback", "clock": "ClockTick", "inventory": "InventoryEvent",
    "product_views": "ProductViewed",
    "commands": "EmailCommand", "outcomes": "EmailOutcome", "sink_ledger": "SinkLedgerEntry",
    "coupons": "CouponIssued", "audiences": "AudienceMembership",
}
# faust tables of the processor app; their changelog topics are provisioned here too so that
# deploy/ (Strimzi) and `shopmail topics` agree on them.
PROCESSOR_TABLES = ("state",)  # one compacted changelog: key customer_id (or "\\x00…" partition keys)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    logical: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)
    role: str = "input"  # input | output | dlq | changelog | ledger

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "logical": self.logical, "partitions": self.partitions,
                "replication_factor": self.replication_factor, "config": dict(self.config), "role": self.role}


def changelog_topic(settings: Settings, table: str) -> str:
    """Faust's changelog naming: ``<app_id>-<table>-changelog``."""
    return f"{settings.topics.prefix}{settings.worker.app_id}-{table}-changelog"


def topic_specs(settings: Settings) -> list[TopicSpec]:
    t = settings.topics
    p, rf = t.partitions, t.replication_factor
    delete = {"cleanup.policy": "delete", "retention.ms": str(t.retention_ms)}
    compact = {"cleanup.policy": "compact"}
    specs: list[TopicSpec] = []
    for logical in INPUT_TOPICS + GLOBAL_INPUT_TOPICS:
        cfg = compact if logical in ("customers", "inventory") else delete
        specs.append(TopicSpec(t.name(logical), logical, p, rf, dict(cfg), "input"))
    for logical in ("commands", "outcomes"):
        specs.append(TopicSpec(t.name(logical), logical, p, rf, dict(delete), "output"))
    specs.append(TopicSpec(t.name("sink_ledger"), "sink_ledger", p, rf, dict(compact), "ledger"))
    specs.append(TopicSpec(t.name("coupons"), "coupons", p, rf, dict(compact), "output"))
    specs.append(TopicSpec(t.name("audiences"), "audiences", p, rf, dict(compact), "output"))
    for logical in INPUT_TOPICS + GLOBAL_INPUT_TOPICS + ("commands", "outcomes"):
        specs.append(TopicSpec(t.dlq(logical), f"{logical}.dlq", p, rf, dict(delete), "dlq"))
    for table in PROCESSOR_TABLES:
        specs.append(TopicSpec(changelog_topic(settings, table), f"changelog.{table}", p, rf, dict(compact), "changelog"))
    # the tracking page's per-order view (key order_id); partition p is written by input partition p's owner
    specs.append(TopicSpec(settings.tracking.view_topic_name(t.prefix), "tracking_view", p, rf, dict(compact), "changelog"))
    return specs


@dataclass(frozen=True)
class ComponentAccess:
    """What one component does on the cluster: the single source of its Kafka ACLs (deploy/ KafkaUsers,
    ``streams.kafka.strimzi``), checked against the component's code by tests/test_deploy_security.py."""

    component: str
    reads: tuple[str, ...]  # logical topics it consumes (``TopicSpec.logical``)
    writes: tuple[str, ...]  # logical topics it produces to
    group_prefix: str = ""  # its consumer groups start with this ("" → none)
    transactional_prefix: str = ""  # its transactional.ids start with this ("" → not transactional)
    idempotent: bool = False  # idempotent (or transactional) producer
    verifies_topics: bool = False  # checks every shopmail topic at start-up (Describe, DescribeConfigs)
    topic_prefix: str = ""  # owns every topic under this prefix (replay's own topics: create, read, write)


DEFAULT_REPLAY_PREFIX = "replay."  # `shopmail replay --prefix` values start with it where ACLs are enforced


def component_access(settings: Settings, replay_prefix: str = DEFAULT_REPLAY_PREFIX) -> list[ComponentAccess]:
    """Per component, the topics it reads and writes, its groups and transactional ids."""
    w, sink = settings.worker, settings.sink
    dlqs = tuple(f"{lt}.dlq" for lt in INPUT_TOPICS + GLOBAL_INPUT_TOPICS)
    changelogs = tuple(f"changelog.{table}" for table in PROCESSOR_TABLES)
    return [
        ComponentAccess("processors", reads=INPUT_TOPICS + GLOBAL_INPUT_TOPICS + changelogs + ("commands",),
                        writes=("commands", "clock", "audiences") + changelogs + dlqs,
                        group_prefix=w.app_id, transactional_prefix=w.app_id, idempotent=True,
                        verifies_topics=True),
        ComponentAccess("sink", reads=("commands", "sink_ledger", "customers", "feedback", "outcomes"),
                        writes=("outcomes", "sink_ledger", "coupons", "commands.dlq"),
                        group_prefix=sink.group_id, transactional_prefix=sink.group_id, idempotent=True,
                        verifies_topics=True),
        ComponentAccess("ses-bridge", reads=(), writes=("feedback", "feedback.dlq"), idempotent=True),
        ComponentAccess("tracking", reads=("orders", "shipments", "commands", "tracking_view"),
                        writes=("tracking_view", "shipments", "shipments.dlq"),
                        group_prefix=settings.tracking.group_id, idempotent=True, verifies_topics=True),
        ComponentAccess("unsubscribe", reads=(), writes=("feedback",), idempotent=True),
        ComponentAccess("replay", reads=INPUT_TOPICS + GLOBAL_INPUT_TOPICS + ("commands",), writes=(),
                        group_prefix=f"{w.app_id}-replay-", transactional_prefix=f"{w.app_id}-replay-",
                        idempotent=True, topic_prefix=replay_prefix),
    ]
