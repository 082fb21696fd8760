"""Intake: what the sink decides about a command the moment it reads it (or finds it parked).

Pure decisions over one command: no Kafka, no SES. The loop (``sinks.service``) feeds it records of
``email.commands`` and parked records of the ledger, together with what the ledger knows of the command
id and whether the same id is already under way here; intake answers where the command goes next.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from schemas import serde
from sinks.mime import SenderIdentity
from sinks.record_errors import RecordError, classify
from sinks.stores import Parked
from streams.config import Settings


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(eq=False)
class Work:
    """One command on its way through the sink, and what became of it."""

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
    outcome: str = ""  # "" (open) | sent | suppressed | failed | skip | unpend (back to waiting) | abandon
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

    def read(self, offset: int) -> None:
        self.open.add(offset)
        self.next_offset = max(self.next_offset, offset + 1)

    def committable(self) -> int:
        return min(self.open) if self.open else self.next_offset


class Route(Enum):
    SETTLED = "settled"  # ``w.outcome`` says what became of it (a skip included)
    PARK = "park"  # before its send_at: into the ledger, sent from there
    HOLD = "hold"  # already parked: wait for its send_at
    SEND = "send"  # prepare and send now


class Intake:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def expired(self, cmd: dict[str, Any], now: int | None = None) -> bool:
        """Past expires_at — or past send_at + the ledger retention, after which its dedupe entry may
        be gone: never sent that late, so a forgotten entry can never mean a second email."""
        at = now_ms() if now is None else now
        return min(cmd["expires_at"], cmd["send_at"] + self.settings.sink.ledger_retention_ms) < at

    def decode(self, w: Work) -> bool:
        """Size, schema and required fields: False (with ``w`` failed) if the record is unusable."""
        limit = self.settings.sink.max_command_bytes
        if len(w.value) > limit:
            w.fail(RecordError("permanent", "command_too_large", f"{len(w.value)} bytes > sink.max_command_bytes {limit}"))
            return False
        try:
            w.command = serde.decode(w.value, "EmailCommand").record
        except Exception as exc:  # noqa: BLE001 - the one per-command net: classified, never fatal
            w.fail(classify(exc, "intake"))
            return False
        for name in ("command_id", "customer_id", "to"):
            if not str(w.command.get(name) or "").strip():
                w.fail(RecordError("permanent", "invalid_command", f"empty {name}"))
                return False
        return True

    def route(self, w: Work, ledger_state: str | None, under_way: bool) -> Route:
        """Where a decoded command read from ``email.commands`` goes. ``ledger_state``: the ledger's
        state of its id; ``under_way``: the same id is queued, parked or in flight here."""
        cmd, sink = w.command, self.settings.sink
        now = now_ms()
        if ledger_state == "pending" and not under_way:  # handed to SES, then a crash: maybe sent
            if sink.ambiguous_policy == "resend":
                return Route.SEND
            w.outcome, w.reason = "failed", "ambiguous_after_crash"
        elif ledger_state is not None or under_way:
            w.outcome = "skip"  # settled, parked or under way (restart/rebalance/duplicate): never again
        elif self.expired(cmd, now):
            w.outcome, w.reason = "suppressed", "expired"
        elif cmd["send_at"] > now + sink.max_send_ahead_ms:  # never held for years unseen
            w.fail(RecordError("permanent", "far_future", f"send_at {cmd['send_at']} is more than "
                                                          f"sink.max_send_ahead_ms ({sink.max_send_ahead_ms}) ahead"))
        elif cmd["send_at"] > now:
            return Route.PARK
        else:
            return Route.SEND
        return Route.SETTLED

    def from_parked(self, parked: Parked, commands_topic: str) -> tuple[Work, Route]:
        """A parked command found in the ledger (after a restart or rebalance): hold it until its
        send_at; one found ``sending`` (handed to SES from the park, then a crash) is ambiguous."""
        w = Work(parked.commands_partition, parked.commands_offset, None, parked.value, commands_topic,
                 {"command_id": parked.command_id}, parked=True)
        try:
            w.command = serde.decode(parked.value, "EmailCommand").record
            w.key = w.command["customer_id"].encode()
        except serde.SerdeError as exc:  # written by us, so only a schema removal could do this
            w.fail(classify(exc, "decode"))
            return w, Route.SETTLED
        if parked.state == "sending":
            if self.settings.sink.ambiguous_policy == "resend":
                return w, Route.SEND
            w.outcome, w.reason = "failed", "ambiguous_after_crash"
            return w, Route.SETTLED
        return w, Route.HOLD
