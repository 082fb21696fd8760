"""Small confluent-kafka helpers shared by the processors, the sink, the CLI and the tests.

``client_config`` is the one place a client's configuration is built (bootstrap, TLS/SASL/OAUTHBEARER
from ``KafkaSettings.security``, the librdkafka pass-through): every Consumer, Producer and AdminClient
the project makes goes through it (a test scans the sources for clients built any other way).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from schemas import serde
from streams.kafka.log_reader import ONE_OFF_READ_CONFIG
from streams.config import (
    OAUTH_PROVIDERS,
    SASL_MECHANISMS,
    SECURITY_PROTOCOLS,
    ConfigError,
    KafkaSecuritySettings,
    KafkaSettings,
    Settings,
)
from schemas.topics import VALUE_SCHEMA

# librdkafka properties whose values are secrets: never log a built config without masking these
SECRET_PROPERTIES = frozenset({"sasl.password", "ssl.key.password", "oauth_cb"})


def _secret(value: str, path: str, what: str) -> str:
    """A secret given inline (env/TOML) or in a file (a mounted Secret); the file wins when both are set."""
    if not path:
        return value
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"kafka.security: cannot read {what} from {path}: {exc.strerror}") from None


def _existing_file(path: str, what: str) -> str:
    if not Path(path).is_file():
        raise ConfigError(f"kafka.security.{what}: no such file {path}")
    return path


def msk_iam_oauth_cb(region: str) -> Callable[[str | None], tuple[str, float]]:
    """OAUTHBEARER token callback for Amazon MSK IAM: a SigV4-signed token from the usual AWS credential
    chain (IRSA / instance profile / env), refreshed by librdkafka before it expires."""
    from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

    def oauth_cb(_config: str | None) -> tuple[str, float]:
        token, expiry_ms = MSKAuthTokenProvider.generate_auth_token(region)
        return token, expiry_ms / 1000.0

    return oauth_cb


def _aws_region(sec: KafkaSecuritySettings) -> str:
    region = sec.aws_region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""
    if not region:
        import boto3

        region = boto3.session.Session().region_name or ""
    if not region:
        raise ConfigError("kafka.security.aws_region: empty and no AWS region in the environment or profile "
                          "(MSK IAM tokens are signed for the cluster's region)")
    return region


def security_config(sec: KafkaSecuritySettings) -> dict[str, Any]:
    """librdkafka properties for ``sec`` (validated; secrets resolved from files/env)."""
    protocol = sec.protocol.upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise ConfigError(f"kafka.security.protocol: {sec.protocol!r} is not one of {', '.join(SECURITY_PROTOCOLS)}")
    cfg: dict[str, Any] = {"security.protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        if sec.ssl_ca_location:
            cfg["ssl.ca.location"] = _existing_file(sec.ssl_ca_location, "ssl_ca_location")
        if bool(sec.ssl_certificate_location) != bool(sec.ssl_key_location):
            raise ConfigError("kafka.security: mutual TLS needs both ssl_certificate_location and ssl_key_location")
        if sec.ssl_certificate_location:
            cfg["ssl.certificate.location"] = _existing_file(sec.ssl_certificate_location, "ssl_certificate_location")
            cfg["ssl.key.location"] = _existing_file(sec.ssl_key_location, "ssl_key_location")
            key_password = _secret(sec.ssl_key_password, sec.ssl_key_password_file, "ssl_key_password")
            if key_password:
                cfg["ssl.key.password"] = key_password
        cfg["ssl.endpoint.identification.algorithm"] = "https" if sec.ssl_endpoint_identification else "none"
    if protocol.startswith("SASL_"):
        mechanism = sec.sasl_mechanism.upper()
        if mechanism not in SASL_MECHANISMS:
            raise ConfigError(f"kafka.security.sasl_mechanism: {sec.sasl_mechanism!r} is not one of "
                              f"{', '.join(SASL_MECHANISMS)} (protocol {protocol} needs one)")
        cfg["sasl.mechanism"] = mechanism
        if mechanism == "OAUTHBEARER":
            if sec.oauth_provider not in OAUTH_PROVIDERS:
                raise ConfigError(f"kafka.security.oauth_provider: {sec.oauth_provider!r} is not one of "
                                  f"{', '.join(OAUTH_PROVIDERS)} (OAUTHBEARER needs a token source)")
            cfg["oauth_cb"] = msk_iam_oauth_cb(_aws_region(sec))
        else:
            password = _secret(sec.sasl_password, sec.sasl_password_file, "sasl_password")
            if not sec.sasl_username or not password:
                raise ConfigError(f"kafka.security: SASL {mechanism} needs sasl_username and sasl_password "
                                  "(or sasl_password_file)")
            cfg["sasl.username"] = sec.sasl_username
            cfg["sasl.password"] = password
    elif sec.sasl_mechanism:
        raise ConfigError(f"kafka.security: sasl_mechanism {sec.sasl_mechanism} is set but protocol {protocol} "
                          "does not use SASL (SASL_PLAINTEXT or SASL_SSL)")
    return cfg


def client_config(kafka: KafkaSettings, bootstrap: str | None = None, **extra: Any) -> dict[str, Any]:
    """THE configuration of every Kafka client: bootstrap + client id, security, the librdkafka
    pass-through (``kafka.librdkafka``), then the caller's own properties (which win)."""
    cfg: dict[str, Any] = {"bootstrap.servers": bootstrap or kafka.bootstrap_servers, "client.id": kafka.client_id}
    cfg.update(security_config(kafka.security))
    cfg.update(kafka.librdkafka)
    cfg.update(extra)
    return cfg


def masked(cfg: dict[str, Any]) -> dict[str, Any]:
    """A client config safe to log: secret values replaced."""
    return {k: ("***" if k in SECRET_PROPERTIES else v) for k, v in cfg.items()}


class KafkaConnectError(RuntimeError):
    """The cluster could not be reached or refused us. ``reason`` is "authentication", "tls" or
    "unreachable"; ``cause`` says which: "authentication", "tls", "connection refused", "unknown host"
    or "timeout" (a TCP connection but no Kafka answer, e.g. a firewall that drops packets). The message
    is one line naming the bootstrap servers and the cause."""

    def __init__(self, reason: str, message: str, cause: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.cause = cause or reason


_FATAL = {KafkaError._AUTHENTICATION: "authentication", KafkaError._SSL: "tls"}
# librdkafka's words for why a connection failed (error_cb / log strings), most specific first
_UNREACHABLE_CAUSES = (("connection refused", "connection refused"), ("failed to resolve", "unknown host"),
                       ("name or service not known", "unknown host"), ("no route to host", "no route to host"),
                       ("network is unreachable", "no route to host"))


def unreachable_cause(detail: str) -> str:
    """The cause a librdkafka connection error names ("timeout" when it names none we know)."""
    lowered = detail.lower()
    return next((cause for words, cause in _UNREACHABLE_CAUSES if words in lowered), "timeout")


def check_connection(kafka: KafkaSettings, bootstrap: str | None = None, timeout_s: float | None = None) -> None:
    """Start-up connectivity check: return once the cluster answers a metadata request with our
    credentials, raise ``KafkaConnectError`` at the first TLS or authentication failure (librdkafka
    would otherwise retry them forever) or when nothing answered within ``timeout_s``
    (``kafka.security.connect_timeout_s``), naming the last cause seen (refused, unknown host, timeout)."""
    from confluent_kafka.admin import AdminClient

    timeout_s = kafka.security.connect_timeout_s if timeout_s is None else timeout_s
    target = bootstrap or kafka.bootstrap_servers
    errors: list[KafkaError] = []
    admin = AdminClient(client_config(kafka, target, **{"socket.timeout.ms": 2000, "log_level": 0,
                                                          "error_cb": errors.append}))
    sec = kafka.security
    who = {"tls": f"TLS to {target} (CA {sec.ssl_ca_location or 'system trust store'}, hostname verification "
                  f"{'on' if sec.ssl_endpoint_identification else 'off'})",
           "authentication": f"SASL {sec.sasl_mechanism} authentication at {target} as "
                             f"{sec.sasl_username or sec.oauth_provider or '?'}"}
    deadline = time.monotonic() + timeout_s
    causes: list[str] = []
    while True:
        try:
            if admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic()))).brokers:
                return
        except Exception:  # noqa: BLE001 - KafkaException while connecting; the cause arrives through error_cb
            pass
        admin.poll(0)
        for err in errors:
            reason = _FATAL.get(err.code())
            if reason:
                raise KafkaConnectError(reason, f"{who[reason]} failed: {err.str()}", reason)
            causes.append(err.str())
        errors.clear()
        if time.monotonic() >= deadline:
            detail = next((c for c in reversed(causes) if unreachable_cause(c) != "timeout"), causes[-1] if causes else "")
            cause = unreachable_cause(detail)
            if cause == "timeout":
                message = (f"cannot reach Kafka at {target}: timeout (no answer to a metadata request within "
                           f"{timeout_s:g}s; a plaintext client on a TLS listener, or TLS on a plaintext one, "
                           f"looks like this too: check kafka.security.protocol)")
            else:
                message = f"cannot reach Kafka at {target}: {cause} ({detail}); gave up after {timeout_s:g}s"
            raise KafkaConnectError("unreachable", message, cause)


def producer_config(settings: Settings, bootstrap: str, **extra: Any) -> dict[str, Any]:
    # murmur2 = the Java client's default partitioner, so every producer (and `simulate`) agrees on
    # which partition a customer's events live in.
    return client_config(settings.kafka, bootstrap, **{"partitioner": "murmur2_random", "linger.ms": 5, **extra})


def consumer_config(settings: Settings, bootstrap: str, group_id: str, **extra: Any) -> dict[str, Any]:
    return client_config(settings.kafka, bootstrap, **{
        "group.id": group_id, "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "isolation.level": "read_committed",
        "session.timeout.ms": settings.kafka.session_timeout_ms,
        "heartbeat.interval.ms": settings.kafka.heartbeat_interval_ms,
        "partition.assignment.strategy": "range",
        "fetch.wait.max.ms": settings.kafka.fetch_wait_max_ms, **extra})


def produce_records(settings: Settings, bootstrap: str, topic: str, schema: str,
                    records: Iterable[dict[str, Any]], key_field: str = "customer_id") -> int:
    """Encode and produce records of one topic (keyed by ``key_field``); returns the count. Flushes."""
    return _produce(settings, bootstrap, ((topic, schema, rec, key_field) for rec in records))


def produce_events(settings: Settings, bootstrap: str, events: Iterable[tuple[str, dict[str, Any]]],
                   on_delivery: Callable[[Any], None] | None = None, **producer_extra: Any) -> int:
    """Encode and produce shop events given as (logical topic, record) to their topics, keyed by
    customer; returns the count. Flushes, and raises if any record was not delivered. ``on_delivery``
    gets each delivered message (e.g. to see the partition it landed in). The one producer helper of
    the demo, the bench and tests."""
    names = {lt: settings.topics.name(lt) for lt in VALUE_SCHEMA}
    return _produce(settings, bootstrap, ((names[lt], VALUE_SCHEMA[lt], rec, "customer_id") for lt, rec in events),
                    on_delivery, **producer_extra)


def _produce(settings: Settings, bootstrap: str, rows: Iterable[tuple[str, str, dict[str, Any], str]],
             on_delivery: Callable[[Any], None] | None = None, **producer_extra: Any) -> int:
    encoded = ((topic, str(rec[key_field]).encode(), serde.encode(schema, rec)) for topic, schema, rec, key_field in rows)
    return produce_encoded(settings, bootstrap, encoded, on_delivery, **producer_extra)


def produce_encoded(settings: Settings, bootstrap: str, rows: Iterable[tuple[str, bytes, bytes]],
                    on_delivery: Callable[[Any], None] | None = None, **producer_extra: Any) -> int:
    """Produce (topic, key, value) rows whose values are already encoded; every one delivered or an error."""
    p = Producer(producer_config(settings, bootstrap, **producer_extra))
    failed: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            failed.append(f"{msg.topic()}: {err}")
        elif on_delivery is not None:
            on_delivery(msg)

    n = 0
    for topic, key, value in rows:
        while True:
            try:
                p.produce(topic, key=key, value=value, on_delivery=delivered)
                break
            except BufferError:  # local queue full: let deliveries drain
                p.poll(0.1)
        n += 1
        if n % 10000 == 0:
            p.poll(0)
    if p.flush(60):
        raise RuntimeError(f"{len(p)} records were not delivered within 60 s")
    if failed:
        raise RuntimeError(f"{len(failed)} of {n} records were not delivered, e.g. {failed[0]}")
    return n


@dataclass
class ConsumedRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int

    def decoded(self) -> serde.Decoded:
        return serde.decode(self.value, topic=self.topic)


class TopicReadTimeout(RuntimeError):
    """A whole-topic read did not reach the end of every partition in its time."""


def read_topic(bootstrap: str, topic: str, *, expect: int | None = None, timeout_s: float = 30.0,
               idle_s: float = 1.0, read_committed: bool = True,
               kafka: KafkaSettings | None = None,
               progress: Callable[[int, int], None] | None = None) -> list[ConsumedRecord]:
    """Read a whole topic from the beginning without a consumer group (assign + high watermarks).

    Returns when ``expect`` records were read, or (when ``expect`` is None) once every partition has
    reported its end in a fetch (``_PARTITION_EOF``: the end the broker had, not a ListOffsets answer,
    which can lag the log, nor a pause between fetches, so a slow first fetch does not end the read) and
    ``idle_s`` more has passed; records that keep arriving on a busy topic do not hold the read open
    past that. At ``timeout_s`` without every end reached it raises ``TopicReadTimeout``.
    ``kafka``: the cluster's security settings (plaintext defaults when omitted). ``progress(read,
    total)`` is called after each batch, ``total`` being the records between the partitions' low and
    high watermarks when the read began.
    """
    c = Consumer(client_config(kafka or KafkaSettings(), bootstrap, **{
        "group.id": "shopmail-reader", "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "isolation.level": "read_committed" if read_committed else "read_uncommitted", **ONE_OFF_READ_CONFIG}))
    try:
        md = c.list_topics(topic, timeout=10)
        if topic not in md.topics or md.topics[topic].error is not None:
            return []
        parts = sorted(md.topics[topic].partitions)
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        total = sum(hi - lo for lo, hi in (c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                                           for p in parts)) if progress else 0
        out: list[ConsumedRecord] = []
        deadline = time.monotonic() + timeout_s
        unfinished = set(parts)  # partitions whose end no fetch has reported yet
        ended_at: float | None = None  # when the last of them did
        while time.monotonic() < deadline:
            if expect is not None and len(out) >= expect:
                break
            if ended_at is not None and time.monotonic() - ended_at >= idle_s:
                break
            msgs = c.consume(1000, 0.05)  # returns at the timeout unless 1000 are ready: short, so a small topic
            for m in msgs:                # read ends soon after its last partition's end is reported
                if m.error():
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(str(m.error()))
                    unfinished.discard(m.partition())
                    continue
                out.append(ConsumedRecord(m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1]))
            if msgs and progress:
                progress(len(out), max(total, len(out)))
            if ended_at is None and not unfinished and expect is None:
                ended_at = time.monotonic()
        else:
            if expect is None and unfinished:
                raise TopicReadTimeout(f"reading {topic}: the end of partition(s) {sorted(unfinished)} was not "
                                       f"reached within {timeout_s:g} s ({len(out)} records read)")
        return out
    finally:
        c.close()


def holds_records(bootstrap: str, topic: str, kafka: KafkaSettings | None = None) -> bool:
    """Whether any partition of ``topic`` holds a record: its high watermark above its low one (False for a
    topic that does not exist). An answer from the broker's offsets, not from how soon a fetch returns
    (a read that gives up after a short idle time says "empty" whenever the first fetch is slow)."""
    c = Consumer(client_config(kafka or KafkaSettings(), bootstrap, **{"group.id": "shopmail-reader",
                                                                       "enable.auto.commit": False}))
    try:
        md = c.list_topics(topic, timeout=10)
        if topic not in md.topics or md.topics[topic].error is not None:
            return False
        return any(hi > lo for lo, hi in (c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                                          for p in md.topics[topic].partitions))
    finally:
        c.close()
