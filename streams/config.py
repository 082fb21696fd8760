"""All shopmail configuration in one typed place.

Precedence (lowest → highest): the defaults below (documented in docs/architecture.md and the README) → a TOML
config file (``--config FILE`` or ``SHOPMAIL_CONFIG``; sections match the dataclass names, e.g.
``[kafka]``, ``[topics]``, ``[flows.abandoned_cart]``) → environment variables
``SHOPMAIL_<SECTION>__<FIELD>`` (double underscore between levels, e.g.
``SHOPMAIL_TOPICS__PREFIX=replay.``).  ``KAFKA_BOOTSTRAP_SERVERS`` is honoured as well.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("shopmail.config")

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
    ``SHOPMAIL_KAFKA__SECURITY__<FIELD>``). Applied by ``streams.kafka.io.client_config`` to every
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
    # start-up connectivity check: TLS/auth failures are reported at once; refused, unknown host or no
    # answer after this many seconds (every command that needs the broker fails within it, exit code 3)
    connect_timeout_s: float = 6.0

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
    inventory: str = "shop.inventory"  # keyed by sku: a global table every worker reads in full
    product_views: str = "shop.product_views"  # ProductViewed, keyed by customer (browse abandonment)
    commands: str = "email.commands"
    outcomes: str = "email.outcomes"
    feedback: str = "email.feedback"
    sink_ledger: str = "email.sink-ledger"  # compacted: command_id → outcome (sink dedupe)
    coupons: str = "email.coupons"  # compacted: coupon code → CouponIssued (the shop's checkout reads it)
    audiences: str = "audience.memberships"  # compacted: "<audience>:<customer_id>" → AudienceMembership

    def name(self, logical: str) -> str:
        return self.prefix + str(getattr(self, logical))

    def dlq(self, logical: str) -> str:
        return self.name(logical) + ".dlq"


MAX_BATCH_SIZE = 1_000_000  # records one consume() call of the Kafka client takes at most


@dataclass
class WorkerSettings:
    app_id: str = "shopmail-processors"
    store: str = "rocksdict://"  # faust table store; "memory://" allowed in tests
    data_dir: str = "./.shopmail-data"
    tick_interval_s: float = 30.0  # live clock ticks written into each partition
    late_grace_ms: int = 10 * MINUTE_MS  # events within it settle in event-time order; later ones still apply
    # an event more than this ahead of its partition's clock is set aside (DLQ reason ``future``) so a
    # wrong timestamp cannot move the clock; a clock tick finding the clock this far ahead sets it back
    max_future_skew_ms: int = DAY_MS
    web_port: int = 6066  # /healthz and /metrics
    processing_guarantee: str = "exactly_once"
    instance_id: str = ""  # stable per worker (transactional.id suffix); empty → hostname (pod name)
    transaction_timeout_ms: int = 15000  # a crashed worker's open transaction is aborted after this
    # A transaction holds at most ``batch_size`` records, and under backlog stops taking records once
    # ``commit_interval_ms`` has passed since the previous commit (Kafka Streams' commit.interval.ms under
    # exactly-once: 100 ms); a record's commands reach the sink when its transaction commits. 0: only
    # batch_size ends it.
    batch_size: int = 2000
    commit_interval_ms: int = 100
    restore_timeout_s: float = 300.0
    max_idle_ms: int = 500  # wait this long for a co-partitioned topic with unfetched data before
    # processing the others anyway (event-time ordered merge, like Kafka Streams' max.task.idle.ms)
    max_lag_wait_ms: int = 5000  # …and up to this long when that topic is known to have unfetched records
    max_buffered: int = 5000  # records buffered per topic-partition before it is paused
    # the order the co-partitioned topics are merged in: "event_time" (the records' event times), or
    # "arrival" (their Kafka timestamps — when they reached the log — where a record has one; what
    # ``replay`` uses so a fact that reached production late is applied late again, as production did)
    merge_order: str = "event_time"
    health_stall_s: float = 60.0  # /healthz fails (the pod restarts) when the loop has not turned this long
    # allocations before Python's youngest generation is collected, in `worker`, `simulate` and `replay`
    # (streams/runtime/gc_policy.py: a buffered record is released before it is promoted and sets off
    # full collections of the whole state); 0 → Python's default (700)
    gc_young_threshold: int = 50_000

    def check_transactions(self) -> None:
        """A ConfigError unless ``batch_size`` and ``commit_interval_ms`` are values the worker can run with
        (the Kafka client fetches at most 1,000,000 records in one call)."""
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ConfigError(f"worker.batch_size is {self.batch_size}: give 1 to {MAX_BATCH_SIZE:,}")
        if self.commit_interval_ms < 0:
            raise ConfigError(f"worker.commit_interval_ms is {self.commit_interval_ms}: give 0 (off) or more")


@dataclass
class SesSettings:
    endpoint_url: str = ""  # empty → the AWS default endpoint for the region (real SES)
    region: str = "eu-west-1"
    # Sender identity (docs/mail.md): transactional mail from ``from_address`` through
    # ``configuration_set``; marketing from ``marketing_from_address`` (empty → from_address; a sending
    # subdomain such as news.example.com keeps its reputation apart) through
    # ``marketing_configuration_set`` (empty → configuration_set, so an upgrade never points marketing mail
    # at a configuration set that does not exist). An address may carry a display name
    # ("Nordwax & Co <shop@example.com>"): it is split off and used where ``from_names`` has none.
    from_address: str = "shop@example.com"
    configuration_set: str = "shopmail"
    marketing_from_address: str = ""
    marketing_configuration_set: str = ""
    # display name of From per language ("de" → "Nordwax & Co"); a language without one → brand.shop_name
    from_names: dict[str, str] = field(default_factory=dict)
    reply_to: str = ""  # a monitored mailbox for replies; empty → brand.support_email (none when both are empty)
    max_send_rate: float = 14.0  # sends/s; the sink uses min(this, SES-reported rate) when readable
    # SES calls in flight per sink replica (threads); also the crash bound: a SIGKILL leaves at most this many
    # commands ambiguous. The send rate is the token bucket's; 32 keeps a replica off its per-step ceiling.
    max_concurrency: int = 32
    max_attempts: int = 6
    unsubscribe_base_url: str = "https://shop.example.com/unsubscribe"
    # Advertised in List-Unsubscribe only when set. shopmail does not read that mailbox (the bridge refuses
    # SES inbound notifications: they carry no customer tag), so the sink refuses to start with it set unless
    # unsubscribe_mailto_read_externally says another process reads it and unsubscribes (docs/mail.md).
    unsubscribe_mailto: str = ""
    unsubscribe_mailto_read_externally: bool = False
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
    # Shortest time between two of the sink's transactions while sends are in flight or queued: the
    # outcomes of the sends that finish meanwhile and the pending entries of the next ones gather and
    # commit together (a transaction whenever a send finished cost the broker twice the CPU at 250
    # sends/s). Otherwise it commits at once. 0 to 1000; 0: a transaction at every loop step with something
    # to commit. ``ses.rate_burst``, when set, must hold at least an interval's tokens.
    min_commit_interval_ms: int = 25
    ambiguous_policy: str = "skip"  # a command found pending after a crash: "skip" (no duplicate) or "resend"
    pause_retry_s: float = 60.0  # how long sending stays paused after SendingPaused/AccountSuspended/quota
    # Dedupe ledger bound: an entry is dropped (memory) and tombstoned (topic) this long after it was
    # written, and the sink never sends a command later than this after its send_at (it is suppressed
    # as expired), so a dropped entry can never let a command go out twice. Default: the longest flow
    # expiry (transactional, 7 d) + 1 d for clock skew; must be ≥ every flows.*.expires_after_ms.
    ledger_retention_ms: int = 8 * DAY_MS
    ledger_sweep_interval_s: float = 60.0  # how often expired ledger entries are tombstoned
    max_command_bytes: int = 512 * 1024  # a larger email.commands value → failed/command_too_large + DLQ
    # A command due further ahead than this → failed/far_future + DLQ instead of being held (unseen) for years.
    # Default: the longest flow delay (win-back's last step, 14 d) + 7 d.
    max_send_ahead_ms: int = 21 * DAY_MS
    record_max_attempts: int = 3  # a retryable per-command error (e.g. OSError) is retried this often, then failed
    health_stall_s: float = 60.0  # /healthz not ready when the loop has not advanced this long
    health_ses_failure_s: float = 120.0  # …or SES calls have failed (pause, 5xx, connection) this long with no success


@dataclass
class OpsSettings:
    # Address the /healthz + /metrics listeners of worker, sink and ses-bridge bind. Loopback for local
    # runs; the deploy manifests set 0.0.0.0 (SHOPMAIL_OPS__BIND_HOST) so probes and Prometheus reach pods.
    bind_host: str = "127.0.0.1"


@dataclass
class HttpSettings:
    """Every HTTP listener (ops, ses-bridge, unsubscribe-server, tracking; streams/web.py)."""

    header_timeout_s: float = 10.0  # a connection sends a complete request head this soon after opening/idling
    body_timeout_s: float = 10.0  # a request body arrives within this, else 408
    max_connections: int = 256  # open connections per listener; one more → 503 and closed
    max_header_bytes: int = 8190  # the request line and each header line; longer → 400
    handler_threads: int = 8  # per listener: handlers that write to Kafka or render pages run here
    max_connections_per_client: int = 32  # open connections from one peer address; one more → 503 and closed


@dataclass
class BridgeSettings:
    """`shopmail ses-bridge --http-port`: the SNS HTTPS-subscription endpoint."""

    bind_host: str = "127.0.0.1"  # the SNS listener; the manifests set 0.0.0.0 (SHOPMAIL_BRIDGE__BIND_HOST)
    web_port: int = 6069  # /healthz and /metrics (kept off the SNS port, which faces the ingress)
    # SigningCertURL and SubscribeURL must be https on port 443 and their host must fully match this
    # pattern: sns.<region>.amazonaws.com, the China (….amazonaws.com.cn) and GovCloud (us-gov-…) forms.
    cert_host_pattern: str = (r"^sns\.(?:[a-z]{2}(?:-gov)?-[a-z]+-[0-9]+\.amazonaws\.com"
                              r"|cn-[a-z]+-[0-9]+\.amazonaws\.com\.cn)$")
    # Accepted TopicArns (required for --http-port: the bridge refuses to start without them). SNS signs any
    # account's topic, so a message from a topic not listed here is refused (403), whoever signed it.
    topic_arns: list[str] = field(default_factory=list)
    max_message_age_s: float = 3600.0  # a message whose signed Timestamp is older → 403 (replays)
    cert_cache_ttl_s: float = 3600.0  # signing certificates cached per URL this long
    http_timeout_s: float = 5.0  # certificate download and SubscribeURL confirmation
    max_body_bytes: int = 1_048_576  # larger POSTs → 413 (SNS messages are at most 256 KiB)
    # MessageIds of handled notifications kept for max_message_age_s: a replay (or SNS's redelivery) → 200,
    # nothing written again; at most this many (the oldest are forgotten first)
    remembered_message_ids: int = 100_000


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
    new_arrivals: int = 3  # step 2 shows this many products most recently (re)stocked (shop.inventory); 0: none


@dataclass
class TransactionalSettings:
    cross_sell_max: int = 3
    expires_after_ms: int = 7 * DAY_MS


@dataclass
class DeliveryFeedbackSettings:
    """Delivery feedback (streams/core/flows/delivery_feedback.py): a review request with a thank-you
    coupon, once per delivered order. Its own settings (they were ``flows.transactional.feedback_*``; the
    old names are still read, with a warning: ``RENAMED``)."""

    delay_ms: int = 3 * DAY_MS  # the request is due this long after the delivery
    coupon_percent: int = 10  # the thank-you coupon's discount
    expires_after_ms: int = 7 * DAY_MS  # a request the guards hold back longer than this after it was due is dropped


@dataclass
class BackInStockSettings:
    """Back-in-stock (streams/core/flows/back_in_stock.py): one mail when a SKU that went out of stock
    while it sat in the customer's abandoned cart is restocked."""

    expires_after_ms: int = 2 * DAY_MS  # a mail the guards hold back longer than this after the restock is dropped
    max_waiting_skus: int = 10  # SKUs remembered per customer (the oldest is forgotten first)


@dataclass
class BrowseAbandonmentSettings:
    """Browse abandonment (streams/core/flows/browse_abandonment.py): one mail when a customer viewed
    products (``shop.product_views``) but neither added anything to the cart nor ordered."""

    delay_ms: int = 2 * HOUR_MS  # the mail is due this long after the run's last product view
    weekly_cap_ms: int = 7 * DAY_MS  # no new run starts this soon after the last browse mail (one a week)
    expires_after_ms: int = 12 * HOUR_MS  # a mail the guards hold back longer than this after it was due is dropped
    max_items: int = 3  # viewed products shown (distinct SKUs, the most recently viewed first)
    cross_sell_max: int = 3  # "bought together" suggestions for the viewed products (0: none)


@dataclass
class PriceDropSettings:
    """Price drop (streams/core/flows/price_drop.py): one mail when a product the customer viewed or carted
    gets cheaper (``price_changed`` on ``shop.inventory``, in the currency the customer saw it in)."""

    watch_ms: int = 14 * DAY_MS  # a viewed or carted product is watched this long after it was last seen
    max_watched: int = 5  # products watched per customer (the one seen longest ago is forgotten first)
    min_drop_percent: int = 5  # a smaller cut than this (of the price the customer saw) sends nothing
    expires_after_ms: int = 24 * HOUR_MS  # a mail the guards hold back longer than this after the cut is dropped


@dataclass
class SunsetSettings:
    """Sunset (streams/core/flows/sunset.py): a customer with no human click and no order for ``after_days``
    gets no more marketing (``dropped:<flow>:sunset``) and is in the audience ``sunset``; a click or an order
    brings them back. The clock starts at the latest of the last human click, the last order and the time
    marketing consent was given."""

    enabled: bool = True
    after_days: int = 180


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
    delivery_feedback: DeliveryFeedbackSettings = field(default_factory=DeliveryFeedbackSettings)
    back_in_stock: BackInStockSettings = field(default_factory=BackInStockSettings)
    browse_abandonment: BrowseAbandonmentSettings = field(default_factory=BrowseAbandonmentSettings)
    price_drop: PriceDropSettings = field(default_factory=PriceDropSettings)
    guards: GuardSettings = field(default_factory=GuardSettings)
    sunset: SunsetSettings = field(default_factory=SunsetSettings)
    experiments: list[Experiment] = field(default_factory=list)
    shop_url: str = "https://shop.example.com"


@dataclass
class LimitSettings:
    """What one record may bring in and what may be produced for it (streams/runtime/limits.py)."""

    max_record_bytes: int = 1024 * 1024  # larger input records are dead-lettered as too_large
    max_message_bytes: int = 1_000_000  # the topics' max.message.bytes (Kafka's default)
    record_overhead_bytes: int = 512  # room for record/batch headers under max_message_bytes
    dead_letter_value_bytes: int = 64 * 1024  # a dead letter carries at most this much of the original
    max_id_chars: int = 256  # longer ids (customer, event, order, cart, shipment) → DLQ invalid
    max_name_chars: int = 200  # first_name and item names are cut to this
    max_text_chars: int = 1000  # any other free text is cut to this
    max_url_chars: int = 2048  # longer URLs are dropped (a cut URL is a broken link)
    max_items: int = 100  # line items kept per record


@dataclass
class CouponSettings:
    """Coupons in emails (sinks/coupons.py): each emailed code is published on ``topics.coupons``."""

    valid_days: int = 14  # a code is valid this long from the command's created_at; the email shows the date
    # the coupon button's link: the shop applies {code} and sends the customer on to {redirect} (the cart or
    # the shop, URL-encoded); {shop_url} is flows.shop_url. Empty → the button links where it did, no code.
    apply_url: str = "{shop_url}/discount/{code}?redirect={redirect}"


@dataclass
class AudienceSettings:
    """Retargeting audiences (streams/core/audiences.py): joins and leaves on ``topics.audiences``."""

    enabled: bool = True  # false: the processors keep no memberships and write none
    # only these audiences (empty: every audience a flow defines); e.g. ["abandoned_cart_open"]
    only: list[str] = field(default_factory=list)


DELIVERABILITY_PROVIDERS = ("gmail", "yahoo", "outlook", "apple", "other")


@dataclass
class DeliverabilitySettings:
    """The complaint and bounce guard (streams/core/deliverability.py, docs/deliverability.md).

    The processors count, per mailbox provider of the recipient's address (gmail, yahoo, outlook, apple,
    other) and per partition, the delivered mail, hard bounces and complaints of ``email.feedback`` in
    event-time buckets of ``bucket_ms``; at each bucket boundary the rates over the last ``window_ms``
    decide the provider's status. Complaint rate = complaints ÷ deliveries; bounce rate = hard bounces ÷
    (deliveries + hard bounces). A rate counts only with ``min_volume`` deliveries + hard bounces in the
    window (per partition). At a warn threshold: the status ``warn`` (metric, alert). At a stop threshold:
    ``stop`` — marketing mail to that provider is held (``on_stop = "defer"``: re-checked at each bucket
    boundary until it expires) or dropped (``"drop"``, reason ``provider_paused``); transactional mail
    keeps flowing. A stopped provider resumes at the first boundary at least ``cool_off_ms`` after the stop
    where both rates are under their ``resume_below`` threshold (``warn`` or ``stop``). Under ``min_volume``
    (the pause itself empties the window) those rates are computed over what the window counted — the
    transactional mail that kept flowing — and a window with nothing counted keeps the stop (a quiet
    provider is not a clean one) until ``quiet_resume_ms`` after the stop (0: until counted mail says so). Held mail asks again after each boundary with an offset of up to
    ``release_spread_ms`` (a hash of the address, the same in every replay), so what a stop held goes out
    spread over that span after the resume. Thresholds are fractions (0.003 is 0.3 %); 1 or more is refused."""

    enabled: bool = True
    window_ms: int = DAY_MS  # the rolling window (a whole number of buckets)
    bucket_ms: int = HOUR_MS  # rates are re-evaluated at each bucket boundary, over complete buckets
    min_volume: int = 500  # deliveries + hard bounces to a provider in the window (per partition) before a rate counts
    complaint_warn: float = 0.001  # 0.1 %: Google's advice
    complaint_stop: float = 0.003  # 0.3 %: Gmail's and Yahoo's bulk-sender limit
    bounce_warn: float = 0.02  # 2 %
    bounce_stop: float = 0.05  # 5 %: where SES puts an account under review
    on_stop: str = "defer"  # "defer": hold marketing until resumed (or expired); "drop": drop it (provider_paused)
    resume_below: str = "warn"  # a stopped provider resumes once both rates are under these thresholds ("warn" | "stop")
    cool_off_ms: int = 6 * HOUR_MS  # …and at least this long after the stop
    release_spread_ms: int = HOUR_MS  # held mail is released over this span after a resume (0: all at the boundary)
    quiet_resume_ms: int = 3 * DAY_MS  # a stop whose window counted nothing at all resumes this long after it (0: never)
    # extra domain → provider rules (e.g. {"gmx.de" = "other", "company.com" = "outlook"}), before the built-in ones
    domains: dict[str, str] = field(default_factory=dict)


SCANNER_USER_AGENTS = ("barracuda", "proofpoint", "mimecast", "ironport", "ciscosecureemail", "fortimail",
                       "fortiguard", "sophos", "trend micro", "symantec", "forcepoint", "safelinks", "bingpreview",
                       "headlesschrome", "phantomjs", "python-requests", "python-urllib", "go-http-client", "curl/",
                       "wget/", "okhttp", "java/", "libwww-perl", "bot/", "spider", "crawler")


@dataclass
class MetricsSettings:
    """Attribution (streams/analytics/) and the machine-open / bot-click rules (streams/core/engagement.py)."""

    click_window_ms: int = 5 * DAY_MS  # an order this long after the customer's last human click converts it
    open_window_ms: int = 1 * DAY_MS  # …after a human open, only when attribute_opens
    attribute_opens: bool = False  # false: last click; true: the last human open or click (opens: open_window_ms)
    machine_open_within_ms: int = 5_000  # an open no later than this after the delivery is a machine's
    bot_click_within_ms: int = 10_000  # a click no later than this after the delivery is a bot's
    bot_burst_links: int = 3  # this many distinct links of one message clicked…
    bot_burst_window_ms: int = 2_000  # …within this span: every click of the burst is a bot's (0 links: off)
    # user-agent substrings (case-insensitive) of security gateways, link scanners and HTTP libraries
    scanner_user_agents: list[str] = field(default_factory=lambda: list(SCANNER_USER_AGENTS))
    # Apple Mail Privacy Protection: the proxy's whole user agent, and the address ranges it fetches from
    apple_proxy_user_agents: list[str] = field(default_factory=lambda: ["Mozilla/5.0"])
    apple_proxy_ip_ranges: list[str] = field(default_factory=lambda: ["17.0.0.0/8"])


@dataclass
class TrackingSettings:
    """The branded tracking page and carrier webhook ingest (``shopmail tracking``, streams/tracking/).

    Secrets never go in the TOML file in production: set ``secret_file`` (a mounted Kubernetes Secret)
    or the environment variable ``SHOPMAIL_TRACKING__SECRET``. Webhook secrets: one file per provider
    in ``webhook_secrets_dir`` (file name = provider, e.g. ``aftership``; a mounted Secret gives exactly
    that) and/or ``SHOPMAIL_TRACKING__WEBHOOK_SECRETS=aftership=…,generic=…``; a provider without a
    secret is not accepted (404)."""

    base_url: str = "https://shop.example.com/track"  # public URL prefix; a page is <base_url>/<token>
    secret: str = ""  # HMAC-SHA256 key of the page tokens; empty → secret_file; both empty → no links
    secret_file: str = ""  # file holding the key (trailing whitespace ignored)
    webhook_secrets: dict[str, str] = field(default_factory=dict)  # provider → HMAC key
    webhook_secrets_dir: str = ""  # directory of files named after providers, each holding its key
    bind_host: str = "127.0.0.1"  # bind address of the page/webhook server (0.0.0.0 in a pod)
    port: int = 8080  # /track/<token> and /webhooks/<provider> (nothing else)
    web_port: int = 6069  # /healthz, /readyz (views restored) and /metrics, apart from the public port
    view_topic: str = "shopmail-tracking-view"  # compacted: order_id → view (topics.prefix applies)
    group_id: str = "shopmail-tracking"  # consumer group of the view builder
    delivery_timeout_ms: int = 5000  # a webhook's record not confirmed within this → 503 (provider retries)
    dedupe_ids: int = 100_000  # provider event ids remembered per replica (the engine dedupes too)
    max_body_bytes: int = 256 * 1024  # larger webhook bodies → 413
    restore_timeout_s: float = 300.0

    def view_topic_name(self, prefix: str) -> str:
        return prefix + self.view_topic

    def signing_key(self) -> bytes:
        """The page-token key: ``secret``, else the content of ``secret_file``; b"" when neither."""
        if self.secret:
            return self.secret.encode()
        if self.secret_file:
            return _read_secret(self.secret_file)
        return b""

    def webhook_key(self, provider: str) -> bytes:
        """The HMAC key of ``provider``'s webhooks; b"" when the provider is not configured."""
        if provider in self.webhook_secrets:
            return self.webhook_secrets[provider].encode()
        if self.webhook_secrets_dir and provider.replace("-", "").replace("_", "").isalnum():
            path = Path(self.webhook_secrets_dir) / provider
            if path.is_file():
                return _read_secret(str(path))
        return b""


@functools.lru_cache(maxsize=64)
def _read_secret(path: str) -> bytes:
    """A secret file's content (cached: the token URL is built per shipment mail; rotate by restart)."""
    try:
        return Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read secret file {path}: {exc}") from exc


@dataclass
class BrandSettings:
    """How every email looks and who it says it is from (rendered by the sink)."""
    shop_name: str = "Example Shop"
    logo_url: str = ""  # https URL of the logo; empty → the shop name as text
    logo_width: int = 140  # px, the logo's width (give a 2x image for sharp screens); its height follows the
    logo_height: int = 40  # image's aspect ratio (this is only the layout hint for clients that load no images)
    logo_max_height: int = 80  # px: a tall logo is drawn at most this high, narrower, its aspect ratio kept
    primary_color: str = "#1d4ed8"  # buttons
    button_text_color: str = "#ffffff"
    text_color: str = "#1f2937"
    background_color: str = "#f4f4f5"
    support_email: str = "support@example.com"  # footer contact; empty → support_url
    support_url: str = ""
    # Physical postal address: CAN-SPAM requires one in commercial mail; replace the placeholder.
    postal_address: str = "Example Shop Ltd · 1 Example Street · 10115 Berlin · Germany"
    default_locale: str = "en"  # used for a customer locale without a catalog (counted)
    low_stock_threshold: int = 5  # an item with stock ≤ this shows "only N left"; no stock data → no claim
    # Win-back step 2 copy per language ("de" → text). Empty for a language → a neutral "what is new" line;
    # nothing about the shop's values or services is claimed unless configured here.
    win_back_story: dict[str, str] = field(default_factory=dict)


@dataclass
class MarketSettings:
    """What a market's mail must say. Tax by the shop's market: the order's currency ("EUR", else
    "default"); legal text by the customer's locale ("de-AT", else its language "de", else "default")."""

    # how order mail shows tax when the order's own amounts do not tell (subtotal + shipping = total →
    # included; + tax = total → added): "included" (VAT markets: "incl. VAT") or "added" (a separate charge),
    # keyed by the order's currency (the shop's market), never by the customer's language
    tax_display: dict[str, str] = field(default_factory=lambda: {
        "default": "added", "EUR": "included", "GBP": "included", "PLN": "included", "TRY": "included",
        "THB": "included", "CHF": "included", "SEK": "included", "DKK": "included", "NOK": "included",
        "CZK": "included", "HUF": "included", "RON": "included"})
    legal_text: dict[str, str] = field(default_factory=dict)  # footer text per market (imprint, register no.)

    def tax_for(self, currency: str | None) -> str:
        """The tax display of the market whose currency is ``currency`` ("default" when unknown)."""
        return self.tax_display.get((currency or "").upper(), self.tax_display.get("default", "added"))

    def for_locale(self, table: dict[str, str], locale: str) -> str:
        lang = locale.replace("_", "-").split("-")[0]
        return table.get(locale.replace("_", "-"), table.get(lang, table.get("default", "")))


@dataclass
class LinkSettings:
    """Links to the shop in emails (sinks/links.py)."""

    utm: bool = True  # add utm_source/utm_medium/utm_campaign (flow)/utm_content (step, variant) to shop links
    utm_source: str = "shopmail"
    utm_medium: str = "email"
    # the product review page of a delivery-feedback mail: {shop_url}; the sink adds order, locale, a
    # signed token and per product a link with a star rating (rating=1..5)
    review_url: str = "{shop_url}/reviews"


@dataclass
class UnsubscribeSettings:
    """The one-click unsubscribe endpoint (``shopmail unsubscribe-server``); links use ses.unsubscribe_base_url."""
    secret: str = ""  # HMAC key for the link tokens, shared by the sink and the server (from a Secret); required
    port: int = 8080  # serves the list-link pages and their POSTs (nothing else)
    bind_host: str = "127.0.0.1"  # bind address (0.0.0.0 in a pod, set in the manifest)
    web_port: int = 6070  # /healthz, /readyz and /metrics (on ops.bind_host), apart from the public port


@dataclass
class SchemaRegistrySettings:
    """The Confluent-compatible Schema Registry (``[registry]``, ``SHOPMAIL_REGISTRY__<FIELD>``). Input
    records in registry framing (byte 0 = 0, a 4-byte schema id) are resolved through it, and so are
    single-object records whose writer schema shopmail does not ship (producer-first evolution).
    Empty ``url`` → no registry: such records are dead-lettered (``registry_not_configured``)."""
    url: str = ""  # e.g. https://schema-registry.internal:8081 (several: comma-separated)
    basic_auth_user: str = ""  # HTTP basic auth (Confluent Cloud: the API key)
    basic_auth_password: str = ""  # secret; or basic_auth_password_file
    basic_auth_password_file: str = ""
    ssl_ca_location: str = ""  # PEM of the CA that signed the registry's certificate; empty → system trust
    ssl_certificate_location: str = ""  # client certificate (PEM) for mutual TLS
    ssl_key_location: str = ""  # its private key (PEM)
    timeout_s: float = 5.0  # one HTTP request
    max_retries: int = 1  # per lookup, before the record is dead-lettered as registry_unavailable
    # after a failed lookup, lookups of uncached schemas fail at once for this long (records whose
    # schema is cached go on); bounds the stall a registry outage can cause
    retry_after_s: float = 30.0
    # single_object (C3 01 + fingerprint) | registry (0 + schema id under TopicNameStrategy subjects,
    # registered by ``shopmail schemas register``): how shopmail writes its output topics
    output_framing: str = "single_object"

    def password(self) -> str:
        if self.basic_auth_password_file:
            return _read_secret(self.basic_auth_password_file).decode().strip()
        return self.basic_auth_password

    def __repr__(self) -> str:
        masked = SECRET_MASK if self.basic_auth_password else ""
        return (f"SchemaRegistrySettings(url={self.url!r}, basic_auth_user={self.basic_auth_user!r}, "
                f"basic_auth_password={masked!r}, output_framing={self.output_framing!r})")


@dataclass
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    ses: SesSettings = field(default_factory=SesSettings)
    sink: SinkSettings = field(default_factory=SinkSettings)
    flows: FlowSettings = field(default_factory=FlowSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    coupons: CouponSettings = field(default_factory=CouponSettings)
    audiences: AudienceSettings = field(default_factory=AudienceSettings)
    deliverability: DeliverabilitySettings = field(default_factory=DeliverabilitySettings)
    ops: OpsSettings = field(default_factory=OpsSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    bridge: BridgeSettings = field(default_factory=BridgeSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    brand: BrandSettings = field(default_factory=BrandSettings)
    unsubscribe: UnsubscribeSettings = field(default_factory=UnsubscribeSettings)
    registry: SchemaRegistrySettings = field(default_factory=SchemaRegistrySettings)
    markets: MarketSettings = field(default_factory=MarketSettings)
    links: LinkSettings = field(default_factory=LinkSettings)


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


# settings that moved: old dotted name → new one. A config file, the environment or overrides that use an
# old name still work; the value goes to the new name and a warning names both.
RENAMED = {"flows.transactional.feedback_delay_ms": "flows.delivery_feedback.delay_ms",
           "flows.transactional.feedback_coupon_percent": "flows.delivery_feedback.coupon_percent"}


def _moved(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``data`` with every renamed setting under its new name (a copy; warns once per name found)."""
    out: dict[str, Any] = {k: (_moved(v, "") if isinstance(v, Mapping) else v) for k, v in data.items()}
    for old, new in RENAMED.items():
        *old_path, old_key = old.split(".")
        node: Any = out
        for part in old_path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or old_key not in node:
            continue
        value = node.pop(old_key)
        log.warning("%s: setting %s is now %s; please rename it", source, old, new)
        *new_path, new_key = new.split(".")
        target = out
        for part in new_path:
            target = target.setdefault(part, {})
        target.setdefault(new_key, value)  # the new name wins where both are given
    return out


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
        _merge(settings, _moved(data, str(path)), "")
    _merge(settings, _moved(_env_overrides(env), "environment"), "")
    if overrides:
        _merge(settings, _moved(overrides, "overrides"), "")
    return settings


def settings_to_dict(settings: Settings) -> dict[str, Any]:
    return dataclasses.asdict(settings)
