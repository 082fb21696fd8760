"""The SES sender sink: email.commands → SES → email.outcomes, at most one email per command id.

One loop, with up to ``ses.max_concurrency`` SES calls in flight on a thread pool:

1. **Intake** — decode and validate each command (bad bytes, an empty ``customer_id`` or
   ``command_id``, an oversized value → ``failed`` + ``email.commands.dlq``). A command whose id has
   a final ledger entry is skipped; one found ``pending`` (a crash between the SES call and its final
   entry) is settled by ``sink.ambiguous_policy``: ``skip`` (default: ``failed``/``ambiguous_after_crash``,
   never a duplicate) or ``resend``. Past its expiry → ``suppressed``/``expired``. Before its
   ``send_at`` → **parked**: written to the ledger topic (``SinkParkedCommand``) so its offset can be
   committed; it is sent from there at ``send_at``, after restarts too.
2. **Prepare** (just before sending) — audience checks (hard bounce, unsubscribe, complaint, consent)
   → ``suppressed``; render + MIME. Any exception here is classified in one place
   (``sinks.record_errors``) → ``failed`` with the reason + DLQ; the next command goes on.
3. **One transaction per step**: final outcomes + ledger entries + DLQ records of everything settled
   since the last step, parked commands, the ``pending`` entries of the next few commands to send (at
   most the free SES slots, each already holding a rate-limit token) and the committable offsets.
   Only then are those commands handed to SES.

Crash window: ``pending`` is durable only for commands about to be handed to SES, and a finished
send's final entry is committed before its slot is reused, so after a SIGKILL at most
``ses.max_concurrency`` commands can be found pending (ambiguous); every other unsettled command is
simply read again and sent.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import socket
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from schemas import serde
from sinks import coupons
from sinks import links as shop_links
from streams.runtime.dead_letters import dead_letter
from sinks.mime import SenderIdentity, build_mime, check_mail_settings, list_links, sender_identity
from sinks.rate_limit import TokenBucket, Unlimited
from sinks.record_errors import RecordError, classify, truncate
from sinks.rendering import Renderer
from sinks.ses_sender import SendFailure, SesSender, account_send_rate
from sinks.stores import Audience, Ledger, Parked
from streams.config import Settings
from streams.kafka.io import consumer_config, producer_config
from streams.shared_metrics import DLQ

log = logging.getLogger("shopmail.sink")

SENDS = Counter("shopmail_sink_sends_total", "Commands settled by the sink", ["outcome", "reason"])
LATENCY = Histogram("shopmail_sink_send_latency_seconds", "SES SendEmail latency incl. retries",
                    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
RETRIES = Counter("shopmail_sink_retries_total", "SES calls retried", ["code"])
RECORD_RETRIES = Counter("shopmail_sink_record_retries_total", "Commands re-prepared after a retryable error",
                         ["code"])
QUEUE_AGE = Histogram("shopmail_sink_queue_age_seconds", "Time from send_at to the SES call",
                      buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 1800, 3600))
PAUSED = Gauge("shopmail_sink_paused", "1 while sending is paused (SES paused/suspended/quota)")
HELD = Gauge("shopmail_sink_held_commands", "Commands parked until their send_at")
RATE = Gauge("shopmail_sink_send_rate", "This replica's token-bucket rate (its share of the account's rate), sends/s")
LEDGER_SIZE = Gauge("shopmail_sink_ledger_entries", "Dedupe ledger entries held in memory")
LEDGER_EXPIRED = Counter("shopmail_sink_ledger_expired_total", "Ledger entries past retention, tombstoned")

FINAL = ("sent", "suppressed", "failed")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(eq=False)
class Work:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    topic: str
    command: dict[str, Any]
    parked: bool = False  # lives in the ledger (its commands offset is already committed)
    raw: bytes = b""
    identity: SenderIdentity | None = None  # From address and SES configuration set of this mail
    prepared: bool = False
    outcome: str = ""  # "" (open) | sent | suppressed | failed | skip | unpend (back to waiting)
    reason: str | None = None
    error_code: str | None = None
    message_id: str | None = None
    attempts: int = 0
    dead_letter: bool = False

    @property
    def command_id(self) -> str:
        return str(self.command.get("command_id") or "")

    def fail(self, err: RecordError) -> None:
        self.outcome, self.reason, self.error_code, self.dead_letter = "failed", err.reason, err.code, True


@dataclass
class PartitionOffsets:
    """Offsets of a commands partition that are read but not yet settled (or parked)."""

    open: set[int] = field(default_factory=set)
    next_offset: int = -1  # one past the highest offset read

    def committable(self) -> int:
        return min(self.open) if self.open else self.next_offset


class SinkService:
    def __init__(self, settings: Settings, bootstrap: str, *, instance_id: str | None = None,
                 renderer: Renderer | None = None, sender: SesSender | None = None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.instance_id = instance_id or settings.sink.instance_id or socket.gethostname()
        t = settings.topics
        self.commands_topic = t.name("commands")
        self.outcomes_topic = t.name("outcomes")
        self.coupons_topic = t.name("coupons")
        self.ledger_topic = t.name("sink_ledger")
        self.dlq_topic = t.dlq("commands")
        fl = settings.flows
        longest = max(fl.abandoned_cart.expires_after_ms, fl.win_back.expires_after_ms,
                      fl.transactional.expires_after_ms)
        if settings.sink.ledger_retention_ms < longest:
            raise ValueError(f"sink.ledger_retention_ms ({settings.sink.ledger_retention_ms}) must be ≥ the longest "
                             f"flow expiry ({longest} ms): a command could outlive its dedupe entry")
        check_mail_settings(settings)
        self.renderer = renderer or Renderer(shop_url=settings.flows.shop_url, brand=settings.brand,
                                             markets=settings.markets, links=settings.links)
        self.sender = sender or SesSender(settings.ses)
        rate = settings.ses.max_send_rate
        if settings.ses.use_account_rate:
            account = account_send_rate(self.sender.client)
            if account:
                rate = min(rate, account) if rate > 0 else account
        self.rate = rate  # the account's (or configured) rate, shared by all replicas
        burst = settings.ses.rate_burst or None
        self.bucket: TokenBucket | Unlimited = TokenBucket(rate, burst) if rate > 0 else Unlimited()
        self.slots = max(1, settings.ses.max_concurrency)
        self._commands_partitions = 0  # partition count of email.commands, read at the first assignment
        self.ready = threading.Event()
        self.paused_until = 0.0
        self.settled = 0
        self._seq = itertools.count()
        self._ready: deque[Work] = deque()  # to prepare and send, in offset order
        self._waiting: list[Work] = []  # ready to send but sending is paused
        self._held: list[tuple[int, int, str]] = []  # (send_at, seq, command_id) of parked commands
        self._held_work: dict[str, Work] = {}
        self._to_park: list[Work] = []
        self._done: list[Work] = []  # settled since the last transaction
        self._inflight: dict[Future[Work], Work] = {}
        self._active: set[str] = set()  # command ids queued, parked or in flight here (in-topic duplicates)
        self._offsets: dict[int, PartitionOffsets] = {}
        self._fetch_paused = False
        self._next_sweep = 0.0
        self._catching_up = False
        self._beat_at = time.monotonic()
        self._ses_failing_since: float | None = None
        self._stop = threading.Event()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._ledger: Ledger | None = None
        self._audience: Audience | None = None
        self._pool: ThreadPoolExecutor | None = None

    # ---- lifecycle --------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        s = self.settings
        self._stop = stop
        group = s.sink.group_id
        self._ledger = Ledger(self.bootstrap, self.ledger_topic, f"{group}-ledger", s.sink.ledger_retention_ms, s.kafka)
        self._audience = Audience(self.bootstrap, s.topics.name("customers"), s.topics.name("feedback"),
                                  f"{group}-audience", s.kafka)
        self._catching_up = True
        self._audience.catch_up(stop, self._progress)
        self._catching_up = False
        self._producer = Producer(producer_config(s, self.bootstrap, **{
            "transactional.id": f"{group}-{self.instance_id}", "transaction.timeout.ms": 60000}))
        self._producer.init_transactions(30)
        self._consumer = Consumer(consumer_config(s, self.bootstrap, group))
        self._consumer.subscribe([self.commands_topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_lost)
        log.info("sink %s sending at ≤ %s/s from %s", self.instance_id, self.rate, s.ses.from_address)
        self._pool = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="ses")
        try:
            while not stop.is_set():
                self._step()
        finally:
            self._drain()
            self._pool.shutdown(wait=True)
            self._close()

    def _step(self) -> None:
        assert self._consumer is not None and self._audience is not None
        s = self.settings
        self._beat()
        backlog = len(self._ready) >= s.sink.batch_size
        if backlog != self._fetch_paused:  # backpressure: stop fetching while the send queue is full
            assignment = self._consumer.assignment()
            (self._consumer.pause if backlog else self._consumer.resume)(assignment)
            self._fetch_paused = backlog
        msgs = self._consumer.consume(s.sink.batch_size, 0 if self._inflight else s.sink.poll_timeout_s)
        self._audience.refresh()  # non-blocking: a blocking catch-up here cost ~2 s per call
        for m in msgs:
            self._intake(m)
        self._release_due()
        self._collect(done_only=True)
        if self._waiting and time.time() >= self.paused_until:
            self._ready.extendleft(reversed(self._waiting))
            self._waiting = []
            PAUSED.set(0)
        to_send = self._pick()
        tombstones = self._sweep()
        if self._done or self._to_park or to_send or tombstones:
            self._commit(to_send, tombstones)
            assert self._pool is not None
            for w in to_send:
                self._inflight[self._pool.submit(self._send, w)] = w
        elif self._inflight:
            wait(list(self._inflight), timeout=s.sink.poll_timeout_s, return_when=FIRST_COMPLETED)
        elif not msgs and self._offsets and not self._ready:
            self.ready.set()  # assigned and idle

    def _beat(self) -> None:
        self._beat_at = time.monotonic()

    def _progress(self, _records: int) -> None:
        self._beat()

    def _drain(self) -> None:
        """Shutdown: finish the SES calls in flight and commit what they settled."""
        if self._producer is not None and self._consumer is not None:
            self._settle_in_flight("at shutdown")

    def _settle_in_flight(self, when: str) -> None:
        """Wait for the SES calls in flight and commit everything settled (or parked) so far."""
        try:
            self._collect(done_only=False)
            if self._done or self._to_park:
                self._commit([], [])
        except KafkaException as exc:
            log.error("could not commit the settled commands %s (%s): they are found pending and reported "
                      "ambiguous, never sent twice", when, exc)

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            except KafkaException:
                pass
        for store in (self._ledger, self._audience):
            if store is not None:
                store.close()
        if self._producer is not None:
            self._producer.flush(10)

    # ---- assignment -------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._ledger is not None
        owned = {tp.partition for tp in partitions}
        self._catching_up = True
        started = time.monotonic()
        try:
            n = self._ledger.own({self._ledger.partition_of(p) for p in owned}, self._stop, self._progress)
        finally:
            self._catching_up = False
        log.info("sink %s: ledger caught up for partitions %s (%d records in %.1f s, %d entries, %d parked)",
                 self.instance_id, sorted(owned), n, time.monotonic() - started, self._ledger.size,
                 sum(len(v) for v in self._ledger.parked.values()))
        LEDGER_SIZE.set(self._ledger.size)
        self._fetch_paused = False
        for p in owned:
            self._offsets.setdefault(p, PartitionOffsets())
        self._restore_parked(owned)
        self._share_rate(consumer)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Settle what is in flight and commit it before the partitions go (their next owner must not
        find our sends pending), then forget everything unsettled of them: it is read again."""
        self._settle_in_flight("on revoke")
        self._forget({tp.partition for tp in partitions})
        self._share_rate(consumer)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget({tp.partition for tp in partitions})
        self._share_rate(consumer)

    def _forget(self, gone: set[int]) -> None:
        self._ready = deque(w for w in self._ready if w.partition not in gone)
        self._waiting = [w for w in self._waiting if w.partition not in gone]
        self._to_park = [w for w in self._to_park if w.partition not in gone]
        self._done = [w for w in self._done if w.partition not in gone]
        for cid in [c for c, w in self._held_work.items() if w.partition in gone]:
            del self._held_work[cid]
        self._active = {w.command_id for w in [*self._ready, *self._waiting, *self._to_park, *self._held_work.values(),
                                               *self._inflight.values()]}
        self._held = [h for h in self._held if h[2] in self._held_work]
        heapq.heapify(self._held)
        HELD.set(len(self._held_work))
        for p in gone:
            self._offsets.pop(p, None)

    def _restore_parked(self, owned: set[int]) -> None:
        """Parked commands of the owned partitions, from the ledger (after a restart or rebalance)."""
        assert self._ledger is not None
        for lp in {self._ledger.partition_of(p) for p in owned}:
            for parked in list(self._ledger.parked.get(lp, {}).values()):
                if parked.commands_partition not in owned or parked.command_id in self._held_work:
                    continue
                w = Work(parked.commands_partition, parked.commands_offset, None, parked.value, self.commands_topic,
                         {"command_id": parked.command_id}, parked=True)
                try:
                    w.command = serde.decode(parked.value, "EmailCommand").record
                    w.key = w.command["customer_id"].encode()
                except serde.SerdeError as exc:  # written by us, so only a schema removal could do this
                    w.fail(classify(exc, "decode"))
                    self._done.append(w)
                    continue
                self._active.add(w.command_id)
                if parked.state == "sending":  # handed to SES from the park, then the crash
                    if self.settings.sink.ambiguous_policy == "resend":
                        self._ready.append(w)
                    else:
                        w.outcome, w.reason = "failed", "ambiguous_after_crash"
                        self._done.append(w)
                    continue
                self._hold(w)

    def _share_rate(self, consumer: Consumer) -> None:
        """This replica's share of the send rate: rate × assigned ÷ all partitions of email.commands."""
        ses = self.settings.ses
        if not isinstance(self.bucket, TokenBucket) or not ses.share_rate_by_partitions:
            return
        if not self._commands_partitions:
            meta = consumer.list_topics(self.commands_topic, timeout=10).topics.get(self.commands_topic)
            self._commands_partitions = len(meta.partitions) if meta is not None and meta.partitions else 1
        share = max(len(self._offsets), 1) / self._commands_partitions  # unassigned: sends nothing anyway
        burst = ses.rate_burst * share if ses.rate_burst else None
        self.bucket.set_rate(self.rate * share, max(1.0, burst) if burst is not None else None)
        RATE.set(self.bucket.rate)
        log.info("sink %s: %d of %d partitions → sending at ≤ %.2f/s", self.instance_id, len(self._offsets),
                 self._commands_partitions, self.bucket.rate)

    # ---- intake -----------------------------------------------------------------------------
    def _intake(self, m: Message) -> None:
        if m.error():
            return
        po = self._offsets.setdefault(m.partition(), PartitionOffsets())
        po.open.add(m.offset())
        po.next_offset = max(po.next_offset, m.offset() + 1)
        value = m.value() or b""
        w = Work(m.partition(), m.offset(), m.key(), value, m.topic(), {})
        try:
            self._classify_new(w)
        except Exception as exc:  # noqa: BLE001 - the one per-command net: classified, never fatal
            w.fail(classify(exc, "intake"))
        if w.outcome:
            self._done.append(w)

    def _classify_new(self, w: Work) -> None:
        """Decode, validate and sort one new command: settled now, parked, or queued to send."""
        assert self._ledger is not None
        limit = self.settings.sink.max_command_bytes
        if len(w.value) > limit:
            w.fail(RecordError("permanent", "command_too_large", f"{len(w.value)} bytes > sink.max_command_bytes {limit}"))
            return
        w.command = serde.decode(w.value, "EmailCommand").record
        cmd = w.command
        for name in ("command_id", "customer_id", "to"):
            if not str(cmd.get(name) or "").strip():
                w.fail(RecordError("permanent", "invalid_command", f"empty {name}"))
                return
        state = self._ledger.state(self._ledger.partition_of(w.partition), w.command_id)
        if state == "pending" and w.command_id not in self._active:
            if self.settings.sink.ambiguous_policy == "resend":
                self._ready.append(w)
                self._active.add(w.command_id)
            else:
                w.outcome, w.reason = "failed", "ambiguous_after_crash"
        elif state is not None or w.command_id in self._active:
            w.outcome = "skip"  # settled, parked or under way (restart/rebalance/duplicate): never again
        elif self._expired(cmd):
            w.outcome, w.reason = "suppressed", "expired"
        elif cmd["send_at"] > now_ms() + self.settings.sink.max_send_ahead_ms:  # never held for years unseen
            w.fail(RecordError("permanent", "far_future", f"send_at {cmd['send_at']} is more than "
                                                          f"sink.max_send_ahead_ms ({self.settings.sink.max_send_ahead_ms}) ahead"))
        elif cmd["send_at"] > now_ms():
            self._to_park.append(w)
            self._active.add(w.command_id)
        else:
            self._ready.append(w)
            self._active.add(w.command_id)

    def _expired(self, cmd: dict[str, Any]) -> bool:
        """Past expires_at — or past send_at + the ledger retention, after which its dedupe entry may
        be gone: never sent that late, so a forgotten entry can never mean a second email."""
        return min(cmd["expires_at"], cmd["send_at"] + self.settings.sink.ledger_retention_ms) < now_ms()

    def _hold(self, w: Work) -> None:
        self._held_work[w.command_id] = w
        heapq.heappush(self._held, (w.command["send_at"], next(self._seq), w.command_id))
        HELD.set(len(self._held_work))

    def _release_due(self) -> None:
        now = now_ms()
        while self._held and self._held[0][0] <= now:
            cid = heapq.heappop(self._held)[2]
            w = self._held_work.pop(cid, None)
            if w is not None:
                self._ready.append(w)
        HELD.set(len(self._held_work))

    # ---- prepare and send -------------------------------------------------------------------
    def _pick(self) -> list[Work]:
        """The next commands to hand to SES: prepared, each with a free slot and a rate-limit token."""
        out: list[Work] = []
        if time.time() < self.paused_until:
            return out
        free = self.slots - len(self._inflight)
        while len(out) < free and self._ready:
            w = self._ready[0]
            if not w.prepared:
                self._prepare_contained(w)
                if w.outcome:
                    self._done.append(self._ready.popleft())
                    continue
            if self.bucket.try_acquire():  # > 0: seconds until the next token
                break
            out.append(self._ready.popleft())
        return out

    def _prepare_contained(self, w: Work) -> None:
        attempts = self.settings.sink.record_max_attempts
        for attempt in range(1, max(1, attempts) + 1):
            try:
                self._prepare(w)
                return
            except Exception as exc:  # noqa: BLE001 - the one per-command net: classified, never fatal
                err = classify(exc, "prepare")
                if err.kind == "retryable" and attempt < attempts:
                    RECORD_RETRIES.labels(err.code).inc()
                    continue
                if err.kind == "retryable":
                    err = RecordError("permanent", err.code, f"gave up after {attempt} attempts: {err.detail}")
                w.fail(err)
                return

    def _prepare(self, w: Work) -> None:
        """Expiry (again, for parked ones), audience checks, rendering → w.raw or a final outcome."""
        assert self._audience is not None
        cmd = w.command
        w.prepared = True
        if self._expired(cmd):
            w.outcome, w.reason = "suppressed", "expired"
            return
        if cmd["variant"] == "holdout":  # experiment control group: measured, never sent
            w.outcome, w.reason = "suppressed", "holdout"
            return
        blocked = self._audience.blocked(cmd["customer_id"], cmd["category"])
        if blocked:
            w.outcome, w.reason = "suppressed", blocked
            return
        ses = self.settings.ses
        links = list_links(ses, self.settings.unsubscribe.secret, cmd)
        unsub = links.pop("unsubscribe")
        rendered = self.renderer.render(cmd, unsub, shop_links.render_extra(self.settings, cmd), list_links=links)
        marketing = cmd["category"] == "marketing"
        w.identity = identity = sender_identity(ses, cmd["category"], rendered.locale, self.settings.brand)
        w.raw = build_mime(rendered, sender=identity.sender, reply_to=identity.reply_to, to=cmd["to"],
                           command_id=cmd["command_id"], category=cmd["category"],
                           unsubscribe_url=unsub if marketing else None,
                           unsubscribe_mailto=ses.unsubscribe_mailto if marketing else None, date_ms=now_ms())

    def _send(self, w: Work) -> Work:
        cmd = w.command
        QUEUE_AGE.observe(max(0.0, (now_ms() - cmd["send_at"]) / 1000))
        started = time.monotonic()
        tags = {"command_id": cmd["command_id"], "customer_id": cmd["customer_id"], "flow": cmd["flow"],
                "step": str(cmd["step"]), "variant": cmd["variant"]}
        try:
            identity = w.identity
            result = self.sender.send_raw(w.raw, cmd["to"], tags, self._stop,
                                          on_retry=lambda f: RETRIES.labels(f.code).inc(),
                                          from_address=identity.address if identity else None,
                                          configuration_set=identity.configuration_set if identity else None)
            w.outcome, w.message_id, w.attempts = "sent", result.message_id, result.attempts
            self._ses_failing_since = None
        except SendFailure as exc:
            if exc.service_failing and self._ses_failing_since is None:
                self._ses_failing_since = time.monotonic()
            if exc.kind == "pause":  # not accepted: back to waiting, its pending withdrawn
                w.outcome, w.reason = "unpend", exc.code
            elif exc.kind == "retryable":  # shutdown during backoff: it stays pending (maybe accepted)
                w.outcome = "abandon"
            else:
                w.outcome, w.reason, w.error_code, w.dead_letter = "failed", truncate(f"{exc.code}: {exc.message}"), \
                    exc.code, True
        except Exception as exc:  # noqa: BLE001 - a bug around the call: the command may have gone out
            w.outcome, w.reason, w.error_code = "failed", truncate(f"send_error: {type(exc).__name__}: {exc}"), "send_error"
            w.dead_letter = True
        finally:
            LATENCY.observe(time.monotonic() - started)
        return w

    def _collect(self, done_only: bool) -> None:
        """Move finished SES calls to the settled list (all of them, waiting, unless ``done_only``)."""
        futures = list(self._inflight)
        if not done_only and futures:
            wait(futures)
        for fut in futures:
            if not fut.done():
                continue
            w = self._inflight.pop(fut)
            if w.outcome == "unpend":
                self.paused_until = time.time() + self.settings.sink.pause_retry_s
                PAUSED.set(1)
                log.error("SES refuses to send (%s): sending paused for %ss — alert", w.reason,
                          self.settings.sink.pause_retry_s)
            if w.outcome != "abandon":
                self._done.append(w)

    # ---- commit -----------------------------------------------------------------------------
    def _sweep(self) -> list[tuple[int, str]]:
        if self._ledger is None or time.monotonic() < self._next_sweep:
            return []
        self._next_sweep = time.monotonic() + self.settings.sink.ledger_sweep_interval_s
        gone = self._ledger.expire(now_ms())
        LEDGER_EXPIRED.inc(len(gone))
        LEDGER_SIZE.set(self._ledger.size)
        return gone

    def _commit(self, to_send: list[Work], tombstones: list[tuple[int, str]]) -> None:
        """One transaction: settled outcomes, parked commands, pending entries of ``to_send``, ledger
        tombstones and offsets. Ledger memory follows only once it is committed."""
        assert self._producer is not None and self._consumer is not None and self._ledger is not None
        p, ledger = self._producer, self._ledger
        at = now_ms()
        done, parks = self._done, self._to_park
        self._done, self._to_park = [], []
        p.begin_transaction()
        for w in parks:
            self._produce_parked(p, w, "parked", at)
        for w in to_send:
            if w.parked:
                self._produce_parked(p, w, "sending", at)
            else:
                self._produce_ledger(p, w, "pending", at)
        for w in done:
            self._emit(p, w, at)
        for part, key in tombstones:
            p.produce(self.ledger_topic, key=key.encode(), value=None, partition=part)
        offsets: list[TopicPartition] = []
        for w in done + parks:
            po = self._offsets.get(w.partition)
            if po is not None and w.outcome != "unpend":
                po.open.discard(w.offset)
        for part, po in self._offsets.items():
            if po.next_offset >= 0:
                offsets.append(TopicPartition(self.commands_topic, part, po.committable()))
        if offsets:
            p.send_offsets_to_transaction(offsets, self._consumer.consumer_group_metadata(), 30)
        p.commit_transaction(60)
        for w in parks:
            w.parked = True
            ledger.record_parked(ledger.partition_of(w.partition), self._parked_record(w, "parked"))
            self._hold(w)
        for w in to_send:
            if w.parked:
                ledger.record_parked(ledger.partition_of(w.partition), self._parked_record(w, "sending"))
            else:
                ledger.record(ledger.partition_of(w.partition), w.command_id, "pending", at)
        for w in done:
            lp = ledger.partition_of(w.partition)
            if w.outcome in FINAL and w.command_id:
                ledger.record(lp, w.command_id, w.outcome, at)
                self._active.discard(w.command_id)
            elif w.outcome == "unpend":
                if w.parked:
                    ledger.record_parked(lp, self._parked_record(w, "parked"))
                else:
                    ledger.forget(lp, w.command_id)
                w.outcome, w.reason = "", None
                self._waiting.append(w)
        for part, key in tombstones:
            ledger.forget(part, key)

    def _parked_record(self, w: Work, state: str) -> Parked:
        return Parked(w.command_id, state, w.value, w.partition, w.offset, w.command["send_at"])

    def _produce_parked(self, p: Producer, w: Work, state: str, at: int) -> None:
        assert self._ledger is not None
        rec = {"command_id": w.command_id, "state": state, "command": w.value, "commands_partition": w.partition,
               "commands_offset": w.offset, "send_at": w.command["send_at"], "at": at}
        p.produce(self.ledger_topic, key=w.command_id.encode(), value=serde.encode("SinkParkedCommand", rec),
                  partition=self._ledger.partition_of(w.partition))

    def _produce_ledger(self, p: Producer, w: Work, state: str, at: int) -> None:
        assert self._ledger is not None
        rec = {"command_id": w.command_id, "state": state, "message_id": w.message_id,
               "reason": w.reason if state != "pending" else None, "at": at}
        p.produce(self.ledger_topic, key=w.command_id.encode(), value=serde.encode("SinkLedgerEntry", rec),
                  partition=self._ledger.partition_of(w.partition))

    def _emit(self, p: Producer, w: Work, at: int) -> None:
        cmd = w.command
        if w.outcome == "unpend":  # paused before SES took it: withdraw the pending (or re-park)
            if w.parked:
                self._produce_parked(p, w, "parked", at)
            else:
                assert self._ledger is not None
                p.produce(self.ledger_topic, key=w.command_id.encode(), value=None,
                          partition=self._ledger.partition_of(w.partition))
            return
        if w.dead_letter:
            dl = dead_letter(self.settings.limits, topic=w.topic, partition=w.partition, offset=w.offset, key=w.key,
                             value=w.value, reason=w.error_code or (w.reason or "failed").split(":")[0],
                             detail=w.reason or "", component="sink", failed_at=at)
            p.produce(self.dlq_topic, key=dl["original_key"], value=serde.encode("DeadLetter", dl, self.dlq_topic))
            DLQ.labels(self.dlq_topic).inc()
        SENDS.labels(w.outcome, (w.error_code or w.reason or "").split(":")[0]).inc()
        if w.outcome == "skip" or not cmd.get("command_id") or not cmd.get("flow"):
            return  # a duplicate, or nothing decodable to report an outcome for (the DLQ record has it)
        outcome = {"command_id": cmd["command_id"], "customer_id": cmd["customer_id"], "outcome": w.outcome,
                   "message_id": w.message_id, "reason": w.reason, "flow": cmd["flow"], "step": cmd["step"],
                   "variant": cmd["variant"], "category": cmd["category"], "occurred_at": at,
                   "attempts": max(w.attempts, 1 if w.outcome == "sent" else 0)}
        p.produce(self.outcomes_topic, key=(cmd["customer_id"] or cmd["command_id"]).encode(),
                  value=serde.encode("EmailOutcome", outcome, self.outcomes_topic))
        coupon = coupons.issued(self.settings.coupons, cmd, at) if w.outcome == "sent" else None
        if coupon is not None:  # the code the customer received: the shop's checkout may now honour it
            p.produce(self.coupons_topic, key=coupon["code"].encode(), value=serde.encode("CouponIssued", coupon, self.coupons_topic))
        self._produce_ledger(p, w, w.outcome, at)
        self.settled += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s %s/%d to %s (%s)", w.outcome, cmd["command_id"], cmd["flow"], cmd["step"], cmd["to"],
                      w.message_id or w.reason)

    # ---- health -----------------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        """Ready only when assigned, caught up, the loop advancing and SES not failing persistently."""
        s = self.settings.sink
        now = time.monotonic()
        problems = []
        if not self._offsets:
            problems.append("no_assignment")
        if self._catching_up:
            problems.append("catching_up")
        if now - self._beat_at > s.health_stall_s:
            problems.append(f"loop_stalled_{now - self._beat_at:.0f}s")
        failing = self._ses_failing_since
        if failing is not None and now - failing > s.health_ses_failure_s:
            problems.append(f"ses_failing_{now - failing:.0f}s")
        return not problems, {
            "problems": problems, "paused": time.time() < self.paused_until, "held": len(self._held_work),
            "settled": self.settled, "in_flight": len(self._inflight), "queued": len(self._ready),
            "ledger_entries": self._ledger.size if self._ledger is not None else 0, "rate": self.rate,
            "replica_rate": self.bucket.rate if isinstance(self.bucket, TokenBucket) else None}
