"""``shopmail topics``: create or verify every topic of the table in :mod:`schemas.topics` on the cluster."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from streams.config import KafkaSettings
from streams.kafka.io import client_config

from schemas.topics import (  # noqa: F401 - the topic table, for the callers that take it from here
    DEFAULT_REPLAY_PREFIX, GLOBAL_INPUT_TOPICS, INPUT_TOPICS, PROCESSOR_TABLES, VALUE_SCHEMA, ComponentAccess,
    TopicSpec, changelog_topic, component_access, topic_specs)


@dataclass
class TopicReport:
    created: list[str] = field(default_factory=list)
    ok: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.mismatches


def admin_client(bootstrap: str, kafka: KafkaSettings | None = None) -> AdminClient:
    return AdminClient(client_config(kafka or KafkaSettings(), bootstrap))


def ensure_topics(bootstrap: str, specs: list[TopicSpec], create: bool = True, timeout_s: float = 15.0,
                  kafka: KafkaSettings | None = None) -> TopicReport:
    """Create missing topics (when ``create``) and verify partitions and configs of existing ones
    (``kafka``: the cluster's security settings; plaintext defaults when omitted)."""
    admin = admin_client(bootstrap, kafka)
    report = TopicReport()
    existing = admin.list_topics(timeout=timeout_s).topics
    missing = [s for s in specs if s.name not in existing]
    if missing and create:
        futures = admin.create_topics(
            [NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor, config=s.config)
             for s in missing], request_timeout=timeout_s)
        for name, fut in futures.items():
            try:
                fut.result(timeout_s)
                report.created.append(name)
            except Exception as exc:  # TOPIC_ALREADY_EXISTS from a concurrent creator is fine
                if "already exists" in str(exc).lower() or "TOPIC_ALREADY_EXISTS" in str(exc):
                    report.ok.append(name)
                else:
                    report.mismatches.append(f"{name}: could not create ({exc})")
    elif missing:
        report.mismatches.extend(f"{s.name}: missing" for s in missing)
    present = [s for s in specs if s.name in existing]
    if present:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, s.name) for s in present]
        try:
            configs = {r.name: f.result(timeout_s) for r, f in admin.describe_configs(resources).items()}
        except Exception:  # brokers without DescribeConfigs: verify partitions only
            configs = {}
        for s in present:
            problems = []
            have = len(existing[s.name].partitions)
            if have != s.partitions:
                problems.append(f"partitions {have} != {s.partitions}")
            cfg = configs.get(s.name, {})
            for key in ("cleanup.policy",):
                if key in cfg and cfg[key].value is not None and s.config.get(key) and cfg[key].value != s.config[key]:
                    problems.append(f"{key} {cfg[key].value} != {s.config[key]}")
            if problems:
                report.mismatches.append(f"{s.name}: " + "; ".join(problems))
            else:
                report.ok.append(s.name)
    return report


def delete_topics(bootstrap: str, names: list[str], kafka: KafkaSettings | None = None,
                  timeout_s: float = 30.0) -> dict[str, str | None]:
    """Delete ``names``; returns each name with None (deleted) or why the broker refused."""
    if not names:
        return {}
    admin = admin_client(bootstrap, kafka)  # kept until the futures resolve: a destroyed client fails them
    futures = admin.delete_topics(names, operation_timeout=timeout_s, request_timeout=timeout_s)
    out: dict[str, str | None] = {}
    for name, fut in futures.items():
        try:
            fut.result(timeout_s)
            out[name] = None
        except Exception as exc:  # noqa: BLE001 - each refusal is reported by name
            out[name] = str(exc)
    return dict(sorted(out.items()))
