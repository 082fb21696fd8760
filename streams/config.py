"""All shopmail configuration in one typed place.

Precedence (lowest → highest): the defaults below (documented in DESIGN.md and the README) → a TOML
config file (``--config FILE`` or ``SHOPMAIL_CONFIG``; sections match the dataclass names, e.g.
``[kafka]``, ``[topics]``, ``[flows.abandoned_cart]``) → environment variables
``SHOPMAIL_<SECTION>__<FIELD>`` (double underscore between levels, e.g.
``SHOPMAIL_TOPICS__PREFIX=replay.``).  ``KAFKA_BOOTSTRAP_SERVERS`` is honoured as well.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
MINUTE_MS = 60_000


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
OAUTH_PROVIDERS = ("aws-msk-iam",)
SECRET_MASK = "***"


@dataclass
class KafkaSecuritySettings:
    """How every Kafka client authenticates and encrypts (``[kafka.security]``,
    ``SHOPMAIL_KAFKA__SECURITY__<FIELD>``). Applied by ``streams.kafka_io.client_config`` to every
    client the project makes. Secrets come from a file (``*_file``: a mounted Secret) or from the
    environment (``SHOPMAIL_KAFKA__SECURITY__SASL_PASSWORD``); ``repr`` masks them."""

    protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL (librdkafka security.protocol)
    # TLS (protocol SSL or SASL_SSL). Empty CA → the system trust store.
    ssl_ca_location: str = ""  # PEM file of the CA(s) that signed the brokers' certificates
    ssl_certificate_location: str = ""  # client certificate (PEM) for mutual TLS
    ssl_key_location: str = ""  # its private key (PEM)
    ssl_key_password: str = ""  # secret; or ssl_key_password_file
    ssl_key_password_file: str = ""
    ssl_endpoint_identification: bool = True  # verify the broker's hostname against its certificate
    # SASL (protocol SASL_PLAINTEXT or SASL_SSL)
    sasl_mechanism: str = ""  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 | OAUTHBEARER
    sasl_username: str = ""
    sasl_password: str = ""  # secret; or sasl_password_file
    sasl_password_file: str = ""
    # OAUTHBEARER token source: "aws-msk-iam" signs tokens with the usual AWS credential chain
    # (IRSA web identity in EKS, instance profile, env); region empty → AWS_REGION / the chain's region.
    oauth_provider: str = ""
    aws_region: str = ""
    connect_timeout_s: float = 15.0  # start-up connectivity check: fail with the TLS/auth reason after this

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("sasl_password", "ssl_key_password") and value:
                value = SECRET_MASK
            parts.append(f"{f.name}={value!r}")
        return f"KafkaSecuritySettings({', '.join(parts)})"


@dataclass
class KafkaSettings:
    bootstrap_servers: str = ""  # empty → start the embedded Tansu broker (demo/tests)
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1500
    client_id: str = "shopmail"
    fetch_wait_max_ms: int = 50  # librdkafka default 500 ms adds that much latency per consumer hop when idle
    security: KafkaSecuritySettings = field(default_factory=KafkaSecuritySettings)
    # Any other librdkafka property, passed through to every client (``[kafka.librdkafka]`` table, or
    # ``SHOPMAIL_KAFKA__LIBRDKAFKA="socket.keepalive.enable=true,client.rack=euw1-az1"``). Properties
    # shopmail sets on a client itself (group.id, isolation.level, transactional.id, linger.ms, …) win.
    librdkafka: dict[str, str] = field(default_factory=dict)


@dataclass
class TopicSettings:
    prefix: str = ""  # prepended to every topic name, e.g. "replay-2026-11." for replays
    partitions: int = 6  # all input topics (and the clock topic) share this count
    replication_factor: int = 1
    retention_ms: int = 35 * DAY_MS  # inputs kept long enough to replay "last month"
    carts: str = "shop.carts"
    orders: str = "shop.orders"
    shipments: str = "shop.shipments"
    customers: str = "shop.customers"
    clock: str = "shop.clock"
    commands: str = "email.commands"
    outcomes: str = "email.outcomes"
    feedback: str = "email.feedback"
    sink_ledger: str = "email.sink-ledger"  # compacted: command_id → outcome (sink dedupe)

    def name(self, logical: str) -> str:
        return self.prefix + str(getattr(self, logical))

    def dlq(self, logical: str) -> str:
        return self.name(logical) + ".dlq"


@dataclass
class WorkerSettings:
    app_id: str = "shopmail-processors"
    store: str = "rocksdict://"  # faust table store; "memory://" allowed in tests
    data_dir: str = "./.shopmail-data"
    tick_interval_s: float = 30.0  # live clock ticks written into each partition
    late_grace_ms: int = 10 * MINUTE_MS
    web_port: int = 6066  # /healthz and /metrics
    processing_guarantee: str = "exactly_once"
    instance_id: str = ""  # stable per worker (transactional.id suffix); empty → hostname (pod name)
    transaction_timeout_ms: int = 15000  # a crashed worker's open transaction is aborted after this
    batch_size: int = 500  # records per transaction
    restore_timeout_s: float = 300.0
    max_idle_ms: int = 500  # wait this long for a co-partitioned topic with unfetched data before
    # processing the others anyway (event-time ordered merge, like Kafka Streams' max.task.idle.ms)
    max_lag_wait_ms: int = 5000  # …and up to this long when that topic is known to have unfetched records
    max_buffered: int = 5000  # records buffered per topic-partition before it is paused


@dataclass
class SesSettings:
    endpoint_url: str = ""  # empty → the AWS default endpoint for the region (real SES)
    region: str = "eu-west-1"
    from_address: str = "shop@example.com"
    configuration_set: str = "shopmail"
    max_send_rate: float = 14.0  # sends/s; the sink uses min(this, SES-reported rate) when readable
    max_concurrency: int = 8
    max_attempts: int = 6
    unsubscribe_base_url: str = "https://shop.example.com/unsubscribe"
    unsubscribe_mailto: str = "unsubscribe@example.com"
    rate_burst: float = 0.0  # token-bucket burst; 0 → max(1, rate / 10)
    use_account_rate: bool = True  # min(max_send_rate, SES GetAccount MaxSendRate) when readable
    # Sink replicas share the account's rate: each one's bucket gets rate × (its partitions of
    # email.commands ÷ all of them), so replicas together never exceed it (re-split on every
    # rebalance). false → every replica sends at the full rate (one replica per account only).
    share_rate_by_partitions: bool = True
    backoff_base_s: float = 0.2
    backoff_max_s: float = 20.0


@dataclass
class SinkSettings:
    group_id: str = "shopmail-sink"
    web_port: int = 6067
    instance_id: str = ""  # stable per sink replica (transactional.id suffix); empty → hostname
    batch_size: int = 200
    poll_timeout_s: float = 0.02  # longest wait to fill a batch (latency vs. batching)
    ambiguous_policy: str = "skip"  # a command found pending after a crash: "skip" (no duplicate) or "resend"
    pause_retry_s: float = 60.0  # how long sending stays paused after SendingPaused/AccountSuspended/quota


@dataclass
class AbandonedCartSettings:
    delays_ms: list[int] = field(default_factory=lambda: [1 * HOUR_MS, 24 * HOUR_MS, 72 * HOUR_MS])
    incentive: str = "coupon"  # "coupon" or "free_shipping"
    coupon_percent: int = 10
    no_respam_ms: int = 24 * HOUR_MS
    expires_after_ms: int = 24 * HOUR_MS  # a step not sendable this long after send_at is dropped


@dataclass
class WinBackSettings:
    lapse_days: dict[str, int] = field(default_factory=lambda: {"vip": 90, "repeat": 90, "one_time": 90})
    median_gap_multiple: float = 0.0  # >0: vip/repeat lapse at this multiple of their median gap
    delays_ms: list[int] = field(default_factory=lambda: [0, 7 * DAY_MS, 14 * DAY_MS])
    offers: dict[str, int] = field(default_factory=lambda: {"vip": 25, "repeat": 15, "one_time": 10})
    vip_percentile: float = 0.98
    expires_after_ms: int = 3 * DAY_MS


@dataclass
class TransactionalSettings:
    cross_sell_max: int = 3
    feedback_delay_ms: int = 3 * DAY_MS
    feedback_coupon_percent: int = 10
    expires_after_ms: int = 7 * DAY_MS


@dataclass
class GuardSettings:
    frequency_cap_ms: int = 20 * HOUR_MS
    quiet_start_hour: int = 22
    quiet_end_hour: int = 8


@dataclass
class Experiment:
    name: str = ""
    flow: str = ""
    step: int = 0
    variants: dict[str, float] = field(default_factory=dict)  # variant → weight
    holdout: float = 0.0  # share of customers that receive nothing (control)


@dataclass
class FlowSettings:
    abandoned_cart: AbandonedCartSettings = field(default_factory=AbandonedCartSettings)
    win_back: WinBackSettings = field(default_factory=WinBackSettings)
    transactional: TransactionalSettings = field(default_factory=TransactionalSettings)
    guards: GuardSettings = field(default_factory=GuardSettings)
    experiments: list[Experiment] = field(default_factory=list)
    shop_url: str = "https://shop.example.com"


@dataclass
class MetricsSettings:
    click_window_ms: int = 5 * DAY_MS
    open_window_ms: int = 1 * DAY_MS


@dataclass
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    ses: SesSettings = field(default_factory=SesSettings)
    sink: SinkSettings = field(default_factory=SinkSettings)
    flows: FlowSettings = field(default_factory=FlowSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)


class ConfigError(ValueError):
    pass


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table")
        return _build(tp, value, where)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if isinstance(value, str):  # "vip=25,repeat=15"
            value = dict(kv.split("=", 1) for kv in value.split(",") if kv)
        return {str(k): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if tp in (int, float, str):
        try:
            return tp(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {value!r} is not a {tp.__name__}") from exc
    return value


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown setting(s) {sorted(unknown)}")
    obj = cls()
    for key, value in data.items():
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            setattr(obj, key, _merge(current, value, f"{where}.{key}".lstrip(".")))
        else:
            setattr(obj, key, _coerce(value, hints[key], f"{where}.{key}".lstrip(".")))
    return obj


def _merge(obj: Any, data: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(type(obj))
    for key, value in data.items():
        if key not in hints:
            raise ConfigError(f"{where or 'config'}: unknown setting {key!r}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            _merge(current, value, f"{where}.{key}".lstrip("."))
        else:
            setattr(obj, key, _coerce(value, hints[key], f"{where}.{key}".lstrip(".")))
    return obj


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in env.items():
        if not key.startswith("SHOPMAIL_") or "__" not in key:
            continue
        parts = key[len("SHOPMAIL_"):].lower().split("__")
        node = tree
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    if env.get("KAFKA_BOOTSTRAP_SERVERS"):
        tree.setdefault("kafka", {})["bootstrap_servers"] = env["KAFKA_BOOTSTRAP_SERVERS"]
    return tree


def load_settings(config_file: str | Path | None = None, env: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Any] | None = None) -> Settings:
    """Defaults → config file → environment → explicit overrides (a nested dict)."""
    env = os.environ if env is None else env
    settings = Settings()
    path = config_file or env.get("SHOPMAIL_CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        _merge(settings, data, "")
    _merge(settings, _env_overrides(env), "")
    if overrides:
        _merge(settings, overrides, "")
    return settings


def settings_to_dict(settings: Settings) -> dict[str, Any]:
    return dataclasses.asdict(settings)
