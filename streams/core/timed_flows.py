"""A customer's earliest timer among a set of timed flows (hot path: the engine asks after every settled
record and every fired step).

The flows are kept in priority order (distinct priorities, tests/test_flow_registry.py): the first due at
a moment fires first. A flow whose ``timer_key`` field of the customer is empty has no timer and is not
asked: every asked flow's field is read in one C call and ``itertools.compress`` keeps the flows whose
field is set (then, for a ``field.attribute`` key, the attribute must be set too).

The engine holds one ``TimedFlows`` over every timed flow, and one per topic over the flows that settle
that topic's records (``PartitionEngine._retimed_by``): after a record settles only those are asked
again, starting from the timer the customer had before, unless that timer belonged to one of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import compress
from typing import Any

from streams.core.flows.base import Flow, fields_getter, timer_getters
from streams.core.state import Customer

__all__ = ["Timer", "TimedFlows"]

Timer = tuple[int, Flow]  # when the earliest timer is due, and whose it is


class TimedFlows:
    __slots__ = ("flows", "_asked", "_fields")

    def __init__(self, flows: Iterable[Flow]) -> None:
        timed = sorted((f for f in flows if f.has_timers), key=lambda f: f.priority)
        self.flows = frozenset(timed)
        keys = [timer_getters(f.timer_key) for f in timed]
        self._asked: tuple[tuple[Callable[[Customer], Any] | None, Flow], ...] = tuple(
            (inner, f) for (_, inner), f in zip(keys, timed))
        self._fields = fields_getter([field for field, _ in keys])

    def earliest(self, c: Customer, since: Timer | None = None) -> Timer | None:
        """The earliest pending timer of these flows, or ``since`` (a timer of a flow outside them) if that
        is earlier; the lower priority on a tie."""
        best, owner = since if since is not None else (None, None)  # ``owner`` is set whenever ``best`` is
        for inner, f in compress(self._asked, self._fields(c)):
            if inner is None or inner(c):
                t = f.next_due(c)
                if t is not None and (best is None or t < best or (t == best and f.priority < owner.priority)):
                    best, owner = t, f
        return None if owner is None or best is None else (best, owner)
