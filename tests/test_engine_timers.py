"""The engine's timer shortcuts (a customer's earliest timer kept from one settlement to the next; after a
settled record only the flows that settle its topic asked again) give exactly what asking every timed
flow at every step gives."""

from __future__ import annotations

from typing import Any

from schemas import serde
from streams.config import load_settings
from streams.core.engine import PartitionEngine
from streams.kafka.topics import VALUE_SCHEMA
from streams.tools.traffic import TrafficSpec, generate


class _Forgetful(dict):  # type: ignore[type-arg]
    """A timer memory that remembers nothing: every settlement asks every flow."""

    def __contains__(self, key: object) -> bool:
        return False

    def __setitem__(self, key: Any, value: Any) -> None:
        return None


def _run(eng: PartitionEngine, events: list[tuple[str, dict[str, Any]]], until: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for topic, record in events:
        out += eng.process(topic, record).commands
    out += eng.advance(until).commands
    return out


def test_the_timer_shortcuts_give_the_commands_and_state_of_asking_every_flow_at_every_step():
    settings = load_settings(env={})
    events = [(t, serde.from_json(VALUE_SCHEMA[t], r)) for t, r in generate(TrafficSpec(customers=300, days=90, seed=3))]
    until = max(int(r.get("occurred_at") or r.get("tick_at") or 0) for _, r in events) + 200 * 86_400_000
    shortcut = PartitionEngine(settings, 0)
    every_flow = PartitionEngine(settings, 0)
    every_flow._retimed_by = dict.fromkeys(every_flow._retimed_by, every_flow._timed)
    every_flow._timers = _Forgetful()
    commands = _run(shortcut, events, until)
    assert len(commands) > 500 and {c["flow"] for c in commands} >= {"abandoned_cart", "win_back", "delivery_feedback"}
    assert commands == _run(every_flow, events, until)
    assert shortcut.stats == every_flow.stats  # sunsets, drops and deferrals alike
    assert shortcut.drain_changes() == every_flow.drain_changes()
