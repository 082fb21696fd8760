"""Deterministic ids: the same input always yields the same command ids (replay, dedupe)."""

from __future__ import annotations

import hashlib


def command_id(flow: str, step: int, customer_id: str, trigger_event_id: str) -> str:
    """hash(flow, step, customer_id, id of the event that started the flow instance) — docs/architecture.md."""
    raw = "\x1f".join((flow, str(step), customer_id, trigger_event_id)).encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def stable_code(prefix: str, *parts: str, length: int = 8) -> str:
    """A short deterministic code (coupons): PREFIX-XXXXXXXX from the parts."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest().upper()
    return f"{prefix}-{digest[:length]}"
