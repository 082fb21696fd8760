"""What a batch writes inside its transaction besides its state: commands, audience memberships,
dead letters and clock ticks (streams/runtime/worker.py opens and commits the transaction; the
checkpoint writes the state and the offsets).

Commands go to the commands partition of the input that caused them, so a partition's commands and
its changelog marker (streams/runtime/restore.py) describe the same log; a command id already visible
after that marker (a half-finished transaction a broker committed) is not written again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaException, Message, Producer

from schemas import serde
from streams.config import Settings
from streams.core.audiences import membership_key
from streams.runtime.dead_letters import dead_letter
from streams.runtime.global_reader import GlobalRecord
from streams.runtime.task import TaskOutput

log = logging.getLogger("shopmail.processor")


class Outputs:
    def __init__(self, settings: Settings, producer: Producer, stats: Any, observer: Any | None,
                 instance_id: str, already_emitted: dict[int, set[str]]) -> None:
        t = settings.topics
        self.limits = settings.limits
        self.producer = producer
        self.stats = stats  # RuntimeStats: commands by flow, dead letters by reason
        self.observer = observer
        self.instance_id = instance_id
        self.commands_topic = t.name("commands")
        self.audiences_topic = t.name("audiences")
        self.clock_topic = t.name("clock")
        self.already_emitted = already_emitted  # partition → command ids visible after the marker (restore)
        self.on_command_delivered: Callable[[Any, Message], None] | None = None

    def produce(self, topic: str, key: bytes | None, value: bytes | None, **kwargs: Any) -> None:
        """Produce, waiting for room when the local queue is full (never an error for that)."""
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, **kwargs)
                return
            except BufferError:
                self.producer.poll(0.05)

    def commands(self, out: TaskOutput[Message]) -> int:
        """Produce the batch's commands (each already within ``limits.max_message_bytes``: the task
        checked it) to the commands partition of the input that caused them; returns how many.

        Only each partition's last command asks for a delivery report: delivery is in order within a
        partition, so that report alone says where the partition's commands end (as the changelog's
        marker does), and a failed delivery of any of them fails the commit anyway."""
        emitted = 0
        topic = self.commands_topic
        last: dict[int, tuple[Message, dict[str, Any], bytes]] = {}  # partition → its command produced last
        for m, cmd in out.commands:
            assert m is not None
            p = m.partition()
            already = self.already_emitted.get(p)
            if already and cmd["command_id"] in already:
                already.discard(cmd["command_id"])
                continue
            held = last.get(p)
            last[p] = (m, cmd, serde.encode("EmailCommand", cmd, topic))
            if held is not None:
                emitted += self._command(held, None)
        for held in last.values():
            emitted += self._command(held, self.on_command_delivered)
        return emitted

    def _command(self, held: tuple[Message, dict[str, Any], bytes], on_delivery: Callable[[Any, Message], None] | None) -> int:
        m, cmd, value = held
        try:
            self.produce(self.commands_topic, cmd["customer_id"].encode(), value, partition=m.partition(),
                         timestamp=cmd["created_at"], on_delivery=on_delivery)
        except KafkaException as exc:  # refused by the client for another reason: this record only
            if exc.args and getattr(exc.args[0], "fatal", lambda: False)():
                raise
            self.dead_letter(m, "produce_failed", f"{cmd['flow']} step {cmd['step']}: {exc}")
            return 0
        by_flow = self.stats.by_flow
        by_flow[cmd["flow"]] = by_flow.get(cmd["flow"], 0) + 1
        return 1

    def memberships(self, out: TaskOutput[Message]) -> int:
        """Audience joins and leaves of the batch, in the same transaction as the state that holds them
        (and, like commands, flushed before that state is written)."""
        topic = self.audiences_topic
        for ev in out.memberships:
            self.produce(topic, membership_key(ev["audience"], ev["customer_id"]).encode(),
                         serde.encode("AudienceMembership", ev, topic), timestamp=ev["changed_at"])
        return len(out.memberships)

    def ticks(self, partitions: list[int], now_ms: int) -> None:
        """Wall-clock ticks into the log, one per partition (streams/core: time only moves by the log)."""
        for p in partitions:
            self.produce(self.clock_topic, f"clock-{p}".encode(),
                         serde.encode("ClockTick", {"partition": p, "tick_at": now_ms, "source": self.instance_id},
                                      self.clock_topic), partition=p)

    def state_too_large(self, partition: int, key: str, value: bytes | None, done: list[Message]) -> None:
        """A customer's state grew past what the changelog accepts: it is not written (the changelog
        keeps the last state that fit), and the records of this batch that made it grow are
        dead-lettered with the reason, so the fact is visible and replayable."""
        self.stats.oversized_state += 1
        size = len(value) if value else 0
        log.error("partition %d: state of %r is %d bytes, over limits.max_message_bytes (%d); not written",
                  partition, key[:80], size, self.limits.max_message_bytes)
        kb = key.encode()
        for m in done:
            if m.partition() == partition and m.key() == kb:
                self.dead_letter(m, "state_too_large", f"the customer's state would be {size} bytes, over "
                                                       f"limits.max_message_bytes ({self.limits.max_message_bytes})")

    def dead_letter(self, ref: Message, reason: str, detail: str) -> None:
        m = ref.message if isinstance(ref, GlobalRecord) else ref
        dl = dead_letter(self.limits, topic=m.topic(), partition=m.partition(), offset=m.offset(), key=m.key(),
                         value=m.value(), reason=reason, detail=detail, component="processor")
        self.produce(m.topic() + ".dlq", dl["original_key"], serde.encode("DeadLetter", dl, m.topic() + ".dlq"))
        stats = self.stats
        stats.dead_letters += 1
        stats.dead_letter_reasons[reason] = stats.dead_letter_reasons.get(reason, 0) + 1
        log.debug("dead-lettered %s[%d]@%d: %s: %s", m.topic(), m.partition(), m.offset(), reason, detail[:200])
        if self.observer is not None and hasattr(self.observer, "on_dead_letter"):
            self.observer.on_dead_letter(m.topic())
