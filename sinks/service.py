"""The SES sender sink: email.commands → SES → email.outcomes, at most one email per command id.

``SinkService`` is the loop that joins the sink's parts, with up to ``ses.max_concurrency`` SES calls
in flight on a thread pool:

1. **Intake** (``sinks.intake``) — decode and validate each command (bad bytes, an empty
   ``customer_id`` or ``command_id``, an oversized value → ``failed`` + ``email.commands.dlq``). A
   command whose id has a final ledger entry is skipped; one found ``pending`` (a crash between the SES
   call and its final entry) is settled by ``sink.ambiguous_policy``: ``skip`` (default:
   ``failed``/``ambiguous_after_crash``, never a duplicate) or ``resend``. Past its expiry →
   ``suppressed``/``expired``. Before its ``send_at`` → **parked**: written to the ledger topic
   (``SinkParkedCommand``) so its offset can be committed; it is sent from there at ``send_at``, after
   restarts too.
2. **Preparation** (``sinks.preparation``, just before sending) — audience checks (hard bounce,
   unsubscribe, complaint, consent) → ``suppressed``; render + MIME. Any exception here is classified
   in one place (``sinks.record_errors``) → ``failed`` with the reason + DLQ; the next command goes on.
3. **Sending** (``sinks.sending``) — the SES call with its retries, the token bucket and this
   replica's share of the rate.
4. **The ledger and the commit** (``sinks.ledger``) — one transaction per step: final outcomes +
   ledger entries + DLQ records of everything settled since the last step, parked commands, the
   ``pending`` entries of the next few commands to send (at most the free SES slots, each already
   holding a rate-limit token) and the committable offsets. Only then are those commands handed to SES.
   While busy, a step commits no sooner than ``sink.min_commit_interval_ms`` after the one before: what
   settles meanwhile gathers into one transaction.

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
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter, Gauge

from sinks.intake import Intake, PartitionOffsets, Route, Work, now_ms
from sinks.ledger import Commit, SinkTopics, Step, outcomes_since
from sinks.mime import check_mail_settings
from sinks.preparation import Preparation
from sinks.rate_limit import TokenBucket
from sinks.record_errors import classify
from sinks.rendering import Renderer
from sinks.ses_sender import SesSender
from sinks.stores import Audience, Ledger
from sinks.sending import Sending
from streams.config import Settings
from streams.kafka.io import consumer_config, producer_config

log = logging.getLogger("shopmail.sink")

MAX_COMMIT_INTERVAL_MS = 1000  # longer would leave the loop (and its health beat) asleep for as long

PAUSED = Gauge("shopmail_sink_paused", "1 while sending is paused (SES paused/suspended/quota)")
HELD = Gauge("shopmail_sink_held_commands", "Commands parked until their send_at")
LEDGER_SIZE = Gauge("shopmail_sink_ledger_entries", "Dedupe ledger entries held in memory")
LEDGER_EXPIRED = Counter("shopmail_sink_ledger_expired_total", "Ledger entries past retention, tombstoned")
RECOVERED = Counter("shopmail_sink_recovered_total", "Commands found pending whose outcome was already written",
                    ["outcome"])


class SinkService:
    def __init__(self, settings: Settings, bootstrap: str, *, instance_id: str | None = None,
                 renderer: Renderer | None = None, sender: SesSender | None = None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.instance_id = instance_id or settings.sink.instance_id or socket.gethostname()
        t = settings.topics
        self.commands_topic = t.name("commands")
        self.topics = SinkTopics(commands=self.commands_topic, outcomes=t.name("outcomes"), coupons=t.name("coupons"),
                                 ledger=t.name("sink_ledger"), dlq=t.dlq("commands"))
        fl = settings.flows
        longest = max(fl.abandoned_cart.expires_after_ms, fl.win_back.expires_after_ms,
                      fl.transactional.expires_after_ms)
        if settings.sink.ledger_retention_ms < longest:
            raise ValueError(f"sink.ledger_retention_ms ({settings.sink.ledger_retention_ms}) must be ≥ the longest "
                             f"flow expiry ({longest} ms): a command could outlive its dedupe entry")
        interval_ms = settings.sink.min_commit_interval_ms
        if not 0 <= interval_ms <= MAX_COMMIT_INTERVAL_MS:
            raise ValueError(f"sink.min_commit_interval_ms is {interval_ms}: give 0 to {MAX_COMMIT_INTERVAL_MS}")
        check_mail_settings(settings)
        self.intake = Intake(settings)
        self.preparation = Preparation(settings, renderer or Renderer(
            shop_url=settings.flows.shop_url, brand=settings.brand, markets=settings.markets, links=settings.links),
            self.intake)
        self.sending = Sending(settings, sender or SesSender(settings.ses))
        bucket = self.sending.bucket
        if isinstance(bucket, TokenBucket) and bucket.capacity < bucket.rate * interval_ms / 1000:
            # the loop picks at most once per interval while busy: a bucket holding less than an interval's
            # tokens would cap sending at burst ÷ interval, below the rate
            raise ValueError(f"ses.rate_burst ({bucket.capacity:g}) is below the {bucket.rate * interval_ms / 1000:g} "
                             f"tokens {bucket.rate:g}/s earns in sink.min_commit_interval_ms ({interval_ms}): sending "
                             f"would stay under the rate; raise ses.rate_burst or lower the interval")
        self._commands_partitions = 0  # partition count of email.commands, read at the first assignment
        self.ready = threading.Event()
        self.paused_until = 0.0
        self._seq = itertools.count()
        self._ready: deque[Work] = deque()  # to prepare and send, in offset order
        self._waiting: list[Work] = []  # ready to send but sending is paused
        self._held: list[tuple[int, int, str]] = []  # (send_at, seq, command_id) of parked commands
        self._held_work: dict[str, Work] = {}
        self._step_in = Step()  # settled, to park and recovered since the last transaction
        self._inflight: dict[Future[Work], Work] = {}
        self._active: set[str] = set()  # command ids queued, parked or in flight here (in-topic duplicates)
        self._offsets: dict[int, PartitionOffsets] = {}
        self._fetch_paused = False
        self._next_sweep = 0.0
        self._next_commit = 0.0  # monotonic: no transaction before this while work gathers
        self._catching_up = False
        self._beat_at = time.monotonic()
        self._stop = threading.Event()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._ledger: Ledger | None = None
        self._commit: Commit | None = None
        self._audience: Audience | None = None
        self._pool: ThreadPoolExecutor | None = None

    # the parts' state, as the loop's callers (health, tests, the CLI) see it
    @property
    def bucket(self) -> Any:
        return self.sending.bucket

    @property
    def rate(self) -> float:
        return self.sending.rate

    @property
    def slots(self) -> int:
        return self.sending.slots

    @property
    def settled(self) -> int:
        return self._commit.settled if self._commit is not None else 0

    @property
    def transactions(self) -> int:
        return self._commit.transactions if self._commit is not None else 0

    # ---- lifecycle --------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        s = self.settings
        self._stop = stop
        group = s.sink.group_id
        self._ledger = Ledger(self.bootstrap, self.topics.ledger, f"{group}-ledger", s.sink.ledger_retention_ms, s.kafka)
        self._audience = Audience(self.bootstrap, s.topics.name("customers"), s.topics.name("feedback"),
                                  f"{group}-audience", s.kafka)
        self._catching_up = True
        self._audience.catch_up(stop, self._progress)
        self._catching_up = False
        self._producer = Producer(producer_config(s, self.bootstrap, **{
            "transactional.id": f"{group}-{self.instance_id}", "transaction.timeout.ms": 60000}))
        self._producer.init_transactions(30)
        self._commit = Commit(s, self.topics, self._producer, self._ledger)
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
            self._take(m)
        self._release_due()
        self._collect(done_only=True)
        if self._waiting and time.time() >= self.paused_until:
            self._ready.extendleft(reversed(self._waiting))
            self._waiting = []
            PAUSED.set(0)
        gather = self._next_commit - time.monotonic()
        if gather > 0 and (self._inflight or self._ready):  # busy: let more settle before the next transaction
            if self._inflight:  # …but no longer than the sends in flight take: the last outcomes go at once
                wait(list(self._inflight), timeout=gather)
            else:
                self._stop.wait(gather)
            return
        self._step_in.to_send = self._pick()
        self._step_in.tombstones = self._sweep()
        if self._step_in:
            to_send = self._commit_step()
            assert self._pool is not None
            for w in to_send:
                self._inflight[self._pool.submit(self.sending.send, w, self._stop)] = w
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
            self._step_in.to_send, self._step_in.tombstones = [], []
            if self._step_in:
                self._commit_step()
        except (KafkaException, RuntimeError) as exc:
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
            self._recover()
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

    def _recover(self) -> None:
        """Commands the ledger has handed to SES without a final entry, whose outcome is nevertheless in
        email.outcomes (a crashed transaction that got only its outcomes through, see
        ``sinks.ledger``): settled from there, never reported a second time."""
        assert self._ledger is not None
        unsettled = {k: at for k, at in self._ledger.unsettled().items() if k[1] not in self._active}
        if not unsettled:
            return
        since = min(unsettled.values()) - 60_000  # producers' clocks may differ a little
        found = outcomes_since(self.bootstrap, self.settings.kafka, f"{self.settings.sink.group_id}-recovery",
                               self.topics.outcomes, since, {cid for _, cid in unsettled})
        for part, cid in unsettled:
            outcome = found.get(cid)
            if outcome is not None:
                self._ledger.record(part, cid, outcome, now_ms())
                self._step_in.recovered.append((part, cid, outcome))
                RECOVERED.labels(outcome).inc()
        log.info("sink %s: %d commands handed to SES without a final entry, %d of them with an outcome already",
                 self.instance_id, len(unsettled), len(found))

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
        step = self._step_in
        self._ready = deque(w for w in self._ready if w.partition not in gone)
        self._waiting = [w for w in self._waiting if w.partition not in gone]
        step.parks = [w for w in step.parks if w.partition not in gone]
        step.done = [w for w in step.done if w.partition not in gone]
        for cid in [c for c, w in self._held_work.items() if w.partition in gone]:
            del self._held_work[cid]
        self._active = {w.command_id for w in [*self._ready, *self._waiting, *step.parks, *self._held_work.values(),
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
                w, route = self.intake.from_parked(parked, self.commands_topic)
                if w.command_id and route is not Route.SETTLED:
                    self._active.add(w.command_id)
                self._dispatch(w, route)

    def _share_rate(self, consumer: Consumer) -> None:
        if not self._commands_partitions:
            meta = consumer.list_topics(self.commands_topic, timeout=10).topics.get(self.commands_topic)
            self._commands_partitions = len(meta.partitions) if meta is not None and meta.partitions else 1
        self.sending.share(len(self._offsets), self._commands_partitions)
        log.info("sink %s: %d of %d partitions → sending at ≤ %s/s", self.instance_id, len(self._offsets),
                 self._commands_partitions, self.sending.replica_rate or self.rate)

    # ---- intake -----------------------------------------------------------------------------
    def _take(self, m: Message) -> None:
        if m.error():
            return
        self._offsets.setdefault(m.partition(), PartitionOffsets()).read(m.offset())
        w = Work(m.partition(), m.offset(), m.key(), m.value() or b"", m.topic(), {})
        route = Route.SETTLED
        try:
            if self.intake.decode(w):
                assert self._ledger is not None
                state = self._ledger.state(self._ledger.partition_of(w.partition), w.command_id)
                route = self.intake.route(w, state, w.command_id in self._active)
                if route is not Route.SETTLED:
                    self._active.add(w.command_id)
        except Exception as exc:  # noqa: BLE001 - the one per-command net: classified, never fatal
            w.fail(classify(exc, "intake"))
            route = Route.SETTLED
        self._dispatch(w, route)

    def _dispatch(self, w: Work, route: Route) -> None:
        if route is Route.SETTLED:
            self._step_in.done.append(w)
        elif route is Route.PARK:
            self._step_in.parks.append(w)
        elif route is Route.HOLD:
            self._hold(w)
        else:
            self._ready.append(w)

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
        assert self._audience is not None
        free = self.slots - len(self._inflight)
        while len(out) < free and self._ready:
            w = self._ready[0]
            if not w.prepared:
                self.preparation.prepare(w, self._audience)
                if w.outcome:
                    self._step_in.done.append(self._ready.popleft())
                    continue
            if self.sending.bucket.try_acquire():  # > 0: seconds until the next token
                break
            out.append(self._ready.popleft())
        return out

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
                self._step_in.done.append(w)

    # ---- commit -----------------------------------------------------------------------------
    def _sweep(self) -> list[tuple[int, str]]:
        if self._ledger is None or time.monotonic() < self._next_sweep:
            return []
        self._next_sweep = time.monotonic() + self.settings.sink.ledger_sweep_interval_s
        gone = self._ledger.expire(now_ms())
        LEDGER_EXPIRED.inc(len(gone))
        LEDGER_SIZE.set(self._ledger.size)
        return gone

    def _commit_step(self) -> list[Work]:
        """Commit the step gathered so far; returns the commands now to hand to SES."""
        assert self._commit is not None and self._consumer is not None
        step, self._step_in = self._step_in, Step()
        self._next_commit = time.monotonic() + self.settings.sink.min_commit_interval_ms / 1000
        committed = self._commit.run(step, self._offsets, self._consumer.consumer_group_metadata())
        for w in step.parks:
            self._hold(w)
        self._active.difference_update(committed.settled)
        self._waiting.extend(committed.waiting)
        return step.to_send

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
        failing = self.sending.failing_since
        if failing is not None and now - failing > s.health_ses_failure_s:
            problems.append(f"ses_failing_{now - failing:.0f}s")
        return not problems, {
            "problems": problems, "paused": time.time() < self.paused_until, "held": len(self._held_work),
            "settled": self.settled, "in_flight": len(self._inflight), "queued": len(self._ready),
            "ledger_entries": self._ledger.size if self._ledger is not None else 0, "rate": self.rate,
            "replica_rate": self.sending.replica_rate}
