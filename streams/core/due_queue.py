"""When each customer of a partition is due next, popped in (time, customer id) order.

A single binary heap over every customer (tens of thousands, most of them waiting weeks for a
win-back lapse) costs a cache miss per level on every pop. Almost everything that is popped was
pushed moments before (an event within the grace period, a timer within hours), so this queue is a
calendar: a small heap holds the entries due before ``horizon`` and hour-wide buckets hold the rest.
When the watermark reaches the horizon, the buckets it passed move into the heap. Entries come out in
exactly the order one heap would give (the engine's output depends on it; a unit test compares).

Stale entries (a customer rescheduled earlier) are left in place; the engine skips them on pop.
"""

from __future__ import annotations

import heapq

BUCKET_MS = 3_600_000


class DueQueue:
    __slots__ = ("near", "far", "far_keys", "horizon", "width")

    def __init__(self, width_ms: int = BUCKET_MS) -> None:
        self.near: list[tuple[int, str]] = []  # heap of entries with time < horizon
        self.far: dict[int, list[tuple[int, str]]] = {}  # bucket (time // width) → entries, time ≥ horizon
        self.far_keys: list[int] = []  # heap of the buckets in ``far``
        self.horizon = 0
        self.width = width_ms

    def __len__(self) -> int:
        return len(self.near) + sum(len(b) for b in self.far.values())

    def push(self, at: int, cid: str) -> None:
        if at < self.horizon:
            heapq.heappush(self.near, (at, cid))
            return
        k = at // self.width
        bucket = self.far.get(k)
        if bucket is None:
            self.far[k] = [(at, cid)]
            heapq.heappush(self.far_keys, k)
        else:
            bucket.append((at, cid))

    def due(self, watermark: int) -> bool:
        """Whether an entry at or before ``watermark`` is waiting."""
        if watermark >= self.horizon:
            self._advance(watermark)
        near = self.near
        return bool(near) and near[0][0] <= watermark

    def pop(self) -> tuple[int, str]:
        """The earliest entry; only after ``due`` said there is one (the horizon is then past it)."""
        return heapq.heappop(self.near)

    def _advance(self, watermark: int) -> None:
        """Move every bucket that starts at or before ``watermark`` into the heap."""
        width = self.width
        last = watermark // width
        far, keys, near = self.far, self.far_keys, self.near
        while keys and keys[0] <= last:
            bucket = far.pop(heapq.heappop(keys))
            if len(bucket) > len(near):
                near.extend(bucket)
                heapq.heapify(near)
            else:
                for entry in bucket:
                    heapq.heappush(near, entry)
        self.horizon = (last + 1) * width
