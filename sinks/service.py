"""The SES sender sink: email.commands → SES → email.outcomes, at most one email per command id.

Per batch:
1. Decode commands (bad bytes → ``email.commands.dlq``). A command whose id has a final ledger entry
   is skipped; one found ``pending`` (a crash between the SES call and the commit) is settled by
   ``sink.ambiguous_policy``: ``skip`` (default: outcome ``failed``/``ambiguous_after_crash``, never a
   duplicate) or ``resend``.
2. Past ``expires_at`` → ``suppressed``/``expired``. Before ``send_at`` → held in a delay queue
   (later commands keep flowing; its offset is not committed until it is settled).
3. Audience checks (hard bounce, unsubscribe, complaint, marketing consent) → ``suppressed``.
4. Render (jinja2; a missing template/variable → ``failed`` naming it + DLQ) and build raw MIME.
5. **Transaction A**: ``pending`` ledger entries for the batch. Then send concurrently
   (``ses.max_concurrency`` threads) under the token bucket; throttling/5xx retried with backoff.
6. **Transaction B**: outcomes + final ledger entries + DLQ records + offsets up to the lowest
   unsettled offset of each partition.

Crash window: a SIGKILL after SES accepted a message and before transaction B commits leaves a
``pending`` entry; the restarted sink sees it and (policy ``skip``) records ``failed/ambiguous_after_crash``
instead of sending again. SES offers no idempotency token, so the only way to a duplicate left is a
crash between the SES call *starting* and transaction A being visible — impossible, since A commits
before any call — or a 5xx/timeout after SES accepted (retried by design; see docs/sink.md).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from schemas import serde
from streams.shared_metrics import DLQ
from sinks.mime import build_mime, unsubscribe_link
from sinks.rate_limit import TokenBucket, Unlimited
from sinks.rendering import RenderError, Renderer
from sinks.ses_sender import SendFailure, SesSender, account_send_rate
from sinks.stores import Audience, Ledger
from streams.config import Settings
from streams.kafka_io import consumer_config, producer_config

log = logging.getLogger("shopmail.sink")

SENDS = Counter("shopmail_sink_sends_total", "Commands settled by the sink", ["outcome", "reason"])
LATENCY = Histogram("shopmail_sink_send_latency_seconds", "SES SendEmail latency incl. retries",
                    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
RETRIES = Counter("shopmail_sink_retries_total", "SES calls retried", ["code"])
QUEUE_AGE = Histogram("shopmail_sink_queue_age_seconds", "Time from send_at to the SES call",
                      buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 1800, 3600))
PAUSED = Gauge("shopmail_sink_paused", "1 while sending is paused (SES paused/suspended/quota)")
HELD = Gauge("shopmail_sink_held_commands", "Commands held until their send_at")
RATE = Gauge("shopmail_sink_send_rate", "This replica's token-bucket rate (its share of the account's rate), sends/s")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Work:
    msg: Message
    command: dict[str, Any]
    raw: bytes = b""
    outcome: str = ""
    reason: str | None = None
    message_id: str | None = None
    attempts: int = 0
    dead_letter: bool = False


@dataclass
class PartitionOffsets:
    """Offsets of a commands partition that are read but not yet settled."""

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
        self.ledger_topic = t.name("sink_ledger")
        self.dlq_topic = t.dlq("commands")
        self.renderer = renderer or Renderer(shop_url=settings.flows.shop_url)
        self.sender = sender or SesSender(settings.ses)
        rate = settings.ses.max_send_rate
        if settings.ses.use_account_rate:
            account = account_send_rate(self.sender.client)
            if account:
                rate = min(rate, account) if rate > 0 else account
        self.rate = rate  # the account's (or configured) rate, shared by all replicas
        burst = settings.ses.rate_burst or None
        self.bucket: TokenBucket | Unlimited = TokenBucket(rate, burst) if rate > 0 else Unlimited()
        self._commands_partitions = 0  # partition count of email.commands, read at the first assignment
        self.ready = threading.Event()
        self.paused_until = 0.0
        self.settled = 0
        self._held: list[tuple[int, int, Work]] = []
        self._seq = itertools.count()
        self._waiting: list[Work] = []  # ready to send but sending is paused
        self._offsets: dict[int, PartitionOffsets] = {}
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._ledger: Ledger | None = None
        self._audience: Audience | None = None

    # ---- lifecycle --------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        s = self.settings
        group = s.sink.group_id
        self._ledger = Ledger(self.bootstrap, self.ledger_topic, f"{group}-ledger")
        self._audience = Audience(self.bootstrap, s.topics.name("customers"), s.topics.name("feedback"),
                                  f"{group}-audience")
        self._ledger.catch_up()
        self._audience.catch_up()
        self._producer = Producer(producer_config(s, self.bootstrap, **{
            "transactional.id": f"{group}-{self.instance_id}", "transaction.timeout.ms": 60000}))
        self._producer.init_transactions(30)
        self._consumer = Consumer(consumer_config(s, self.bootstrap, group))
        self._consumer.subscribe([self.commands_topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_revoke)
        log.info("sink %s sending at ≤ %s/s from %s", self.instance_id, self.rate, s.ses.from_address)
        pool = ThreadPoolExecutor(max_workers=max(1, s.ses.max_concurrency), thread_name_prefix="ses")
        try:
            while not stop.is_set():
                msgs = self._consumer.consume(s.sink.batch_size, s.sink.poll_timeout_s)
                self._audience.refresh()  # non-blocking: a blocking catch-up here cost ~2 s per call
                batch = self._intake(msgs)
                batch.extend(self._due_held())
                if self._waiting and time.time() >= self.paused_until:
                    batch.extend(self._waiting)
                    self._waiting = []
                    PAUSED.set(0)
                if not batch:
                    if not msgs and self._offsets:  # assigned and idle
                        self.ready.set()
                    continue
                self._settle_batch(batch, pool, stop)
        finally:
            pool.shutdown(wait=True)
            self._close()

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

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._ledger is not None
        self._ledger.catch_up()  # another replica may have settled commands of these partitions
        for tp in partitions:
            self._offsets.setdefault(tp.partition, PartitionOffsets())
        self._share_rate(consumer)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions}
        self._held = [h for h in self._held if h[2].msg.partition() not in gone]
        heapq.heapify(self._held)
        self._waiting = [w for w in self._waiting if w.msg.partition() not in gone]
        for p in gone:
            self._offsets.pop(p, None)
        self._share_rate(consumer)

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
    def _track(self, m: Message) -> None:
        po = self._offsets.setdefault(m.partition(), PartitionOffsets())
        po.open.add(m.offset())
        po.next_offset = max(po.next_offset, m.offset() + 1)

    def _intake(self, msgs: list[Message]) -> list[Work]:
        assert self._ledger is not None
        ready: list[Work] = []
        for m in msgs:
            if m.error():
                continue
            self._track(m)
            try:
                cmd = serde.decode(m.value(), "EmailCommand").record
            except serde.SerdeError as exc:
                w = Work(m, {"command_id": "", "customer_id": (m.key() or b"").decode(errors="replace")})
                w.outcome, w.reason, w.dead_letter = "failed", f"{exc.reason}: {exc.detail}", True
                ready.append(w)
                continue
            w = Work(m, cmd)
            entry = self._ledger.get(cmd["command_id"])
            if entry is not None and entry.state != "pending":
                w.outcome = "skip"  # settled before (restart/rebalance/duplicate): never again
            elif entry is not None and self.settings.sink.ambiguous_policy != "resend":
                w.outcome, w.reason = "failed", "ambiguous_after_crash"
            elif cmd["expires_at"] < now_ms():
                w.outcome, w.reason = "suppressed", "expired"
            elif cmd["send_at"] > now_ms():
                heapq.heappush(self._held, (cmd["send_at"], next(self._seq), w))
                HELD.set(len(self._held))
                continue
            ready.append(w)
        return ready

    def _due_held(self) -> list[Work]:
        out = []
        now = now_ms()
        while self._held and self._held[0][0] <= now:
            out.append(heapq.heappop(self._held)[2])
        HELD.set(len(self._held))
        return out

    # ---- settle -----------------------------------------------------------------------------
    def _prepare(self, w: Work) -> None:
        """Expiry (again, for held ones), audience checks, rendering → w.raw or a final outcome."""
        assert self._audience is not None
        cmd = w.command
        if cmd["expires_at"] < now_ms():
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
        unsub = unsubscribe_link(ses.unsubscribe_base_url, cmd["command_id"], cmd["customer_id"])
        try:
            rendered = self.renderer.render(cmd, unsub)
        except RenderError as exc:
            w.outcome, w.reason, w.dead_letter = "failed", f"{exc.reason}: {exc.detail}", True
            return
        w.raw = build_mime(rendered, sender=ses.from_address, to=cmd["to"], command_id=cmd["command_id"],
                           category=cmd["category"], unsubscribe_url=unsub if cmd["category"] == "marketing" else None,
                           unsubscribe_mailto=ses.unsubscribe_mailto if cmd["category"] == "marketing" else None,
                           date_ms=now_ms())

    def _send(self, w: Work, stop: threading.Event) -> Work:
        cmd = w.command
        if not self.bucket.acquire(stop):
            w.outcome = "abandon"
            return w
        QUEUE_AGE.observe(max(0.0, (now_ms() - cmd["send_at"]) / 1000))
        started = time.monotonic()
        tags = {"command_id": cmd["command_id"], "customer_id": cmd["customer_id"], "flow": cmd["flow"],
                "step": str(cmd["step"]), "variant": cmd["variant"]}
        try:
            result = self.sender.send_raw(w.raw, cmd["to"], tags, stop,
                                          on_retry=lambda f: RETRIES.labels(f.code).inc())
            w.outcome, w.message_id, w.attempts = "sent", result.message_id, result.attempts
        except SendFailure as exc:
            if exc.kind == "pause":
                w.outcome, w.reason = "pause", exc.code
            elif exc.kind == "retryable":  # shutdown during backoff: leave it unsettled
                w.outcome = "abandon"
            else:
                w.outcome, w.reason, w.dead_letter = "failed", f"{exc.code}: {exc.message}"[:500], True
        finally:
            LATENCY.observe(time.monotonic() - started)
        return w

    def _settle_batch(self, batch: list[Work], pool: ThreadPoolExecutor, stop: threading.Event) -> None:
        assert self._producer is not None
        to_send: list[Work] = []
        for w in batch:
            if not w.outcome:
                self._prepare(w)
            if not w.outcome:
                to_send.append(w)
        if to_send:
            if time.time() < self.paused_until:
                self._waiting.extend(to_send)
                to_send = []
            else:
                self._commit(pending=to_send)  # transaction A: pending markers are durable first
        futures: list[Future[Work]] = [pool.submit(self._send, w, stop) for w in to_send]
        for fut in futures:
            w = fut.result()
            if w.outcome == "pause":
                self.paused_until = time.time() + self.settings.sink.pause_retry_s
                PAUSED.set(1)
                log.error("SES refuses to send (%s): sending paused for %ss — alert", w.reason,
                          self.settings.sink.pause_retry_s)
                w.outcome, w.reason = "", None
                self._waiting.append(w)
        self._commit(settled=[w for w in batch if w.outcome and w.outcome != "abandon"])

    def _commit(self, pending: list[Work] | None = None, settled: list[Work] | None = None) -> None:
        assert self._producer is not None and self._consumer is not None
        p = self._producer
        p.begin_transaction()
        at = now_ms()
        for w in pending or []:
            p.produce(self.ledger_topic, key=w.command["command_id"].encode(),
                      value=serde.encode("SinkLedgerEntry", {"command_id": w.command["command_id"],
                                                             "state": "pending", "at": at}))
        offsets: list[TopicPartition] = []
        if settled is not None:
            for w in settled:
                self._emit(p, w, at)
                self._offsets[w.msg.partition()].open.discard(w.msg.offset())
            for part, po in self._offsets.items():
                if po.next_offset >= 0:
                    offsets.append(TopicPartition(self.commands_topic, part, po.committable()))
            if offsets:
                p.send_offsets_to_transaction(offsets, self._consumer.consumer_group_metadata(), 30)
        p.commit_transaction(60)
        assert self._ledger is not None
        for w in pending or []:
            self._ledger.record(w.command["command_id"], "pending", None, None)
        for w in settled or []:
            if w.outcome in ("sent", "suppressed", "failed") and w.command.get("command_id"):
                self._ledger.record(w.command["command_id"], w.outcome, w.message_id, w.reason)

    def _emit(self, p: Producer, w: Work, at: int) -> None:
        cmd = w.command
        if w.dead_letter:
            dl = {"original_value": w.msg.value(), "original_key": w.msg.key(), "topic": w.msg.topic(),
                  "partition": w.msg.partition(), "offset": w.msg.offset(), "error": (w.reason or "failed").split(":")[0],
                  "detail": w.reason or "", "failed_at": at, "component": "sink"}
            p.produce(self.dlq_topic, key=w.msg.key(), value=serde.encode("DeadLetter", dl))
            DLQ.labels(self.dlq_topic).inc()
        if w.outcome == "skip" or not cmd.get("command_id"):
            return
        outcome = {"command_id": cmd["command_id"], "customer_id": cmd["customer_id"], "outcome": w.outcome,
                   "message_id": w.message_id, "reason": w.reason, "flow": cmd["flow"], "step": cmd["step"],
                   "variant": cmd["variant"], "category": cmd["category"], "occurred_at": at,
                   "attempts": max(w.attempts, 1 if w.outcome == "sent" else 0)}
        p.produce(self.outcomes_topic, key=cmd["customer_id"].encode(), value=serde.encode("EmailOutcome", outcome))
        p.produce(self.ledger_topic, key=cmd["command_id"].encode(),
                  value=serde.encode("SinkLedgerEntry", {"command_id": cmd["command_id"], "state": w.outcome,
                                                         "message_id": w.message_id, "reason": w.reason, "at": at}))
        SENDS.labels(w.outcome, (w.reason or "").split(":")[0]).inc()
        self.settled += 1
        if w.outcome == "sent":
            log.info("sent %s %s/%d to %s as %s", cmd["command_id"], cmd["flow"], cmd["step"], cmd["to"], w.message_id)
        else:
            log.info("%s %s %s/%d: %s", w.outcome, cmd["command_id"], cmd["flow"], cmd["step"], w.reason)

    def health(self) -> tuple[bool, dict[str, Any]]:
        return True, {"paused": time.time() < self.paused_until, "held": len(self._held), "settled": self.settled,
                      "rate": self.rate,
                      "replica_rate": self.bucket.rate if isinstance(self.bucket, TokenBucket) else None}
