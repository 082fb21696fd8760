"""The engine's calendar queue pops exactly what one binary heap would, in the same order."""

from __future__ import annotations

import heapq

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.due_queue import DueQueue

HOUR = 3_600_000

# a script of operations: push (time, customer) or drain everything up to a watermark
_op = st.one_of(
    st.tuples(st.just("push"), st.integers(0, 30 * HOUR), st.sampled_from(["a", "b", "c", "d"])),
    st.tuples(st.just("drain"), st.integers(0, 31 * HOUR), st.just("")),
)


def _drain_heap(heap: list[tuple[int, str]], wm: int) -> list[tuple[int, str]]:
    out = []
    while heap and heap[0][0] <= wm:
        out.append(heapq.heappop(heap))
    return out


def _drain_queue(q: DueQueue, wm: int) -> list[tuple[int, str]]:
    out = []
    while q.due(wm):
        out.append(q.pop())
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(_op, max_size=80), st.sampled_from([1, 1000, HOUR, 7 * HOUR]))
def test_due_queue_pops_in_the_order_of_one_heap(ops: list[tuple[str, int, str]], width: int) -> None:
    heap: list[tuple[int, str]] = []
    q = DueQueue(width)
    wm = 0
    for op, t, cid in ops:
        if op == "push":
            heapq.heappush(heap, (t, cid))
            q.push(t, cid)
        else:
            wm = max(wm, t)  # the watermark never goes back
            assert _drain_queue(q, wm) == _drain_heap(heap, wm)
        assert len(q) == len(heap)
    assert _drain_queue(q, 10**15) == _drain_heap(heap, 10**15)


def test_due_queue_keeps_far_timers_out_of_the_heap_until_the_watermark_nears_them() -> None:
    q = DueQueue(HOUR)
    q.push(90 * 24 * HOUR, "lapsed")  # a win-back lapse weeks ahead
    assert not q.due(1)
    q.push(2, "cart")  # pushed behind the horizon: straight into the heap
    assert q.near == [(2, "cart")]
    assert q.due(5) and q.pop() == (2, "cart")
    assert not q.due(90 * 24 * HOUR - 1)
    assert q.due(90 * 24 * HOUR) and q.pop() == (90 * 24 * HOUR, "lapsed")
