"""Event-time ordered merge of the co-partitioned input topics of one partition (Kafka Streams'
record selection across a task's partitions).

Records of partition *p* arrive per topic in whatever order the fetcher returns them: the clock topic
could be read far ahead of the carts topic, which would make every cart event look late. So each
partition keeps one FIFO per topic and hands out the head with the smallest event time — but only when
every topic of the partition either has a buffered record or is known to be caught up (nothing more to
fetch). An empty topic whose lag is unknown holds the others back for at most ``max_idle_ms``; one
known to have unfetched records (lag > 0: the fetch is on its way) for up to ``max_lag_wait_ms`` —
Kafka Streams' rule since KIP-695, which waits for known lag instead of enforcing processing, with a
bound so a partition that cannot be fetched (e.g. behind an open transaction) does not stall the
task forever. Past the bound processing proceeds anyway ("enforced processing"), and events that then
arrive older than the watermark are applied as late facts (counted ``late_applied:<topic>``).

Pure: no Kafka here; the runtime tells it which topics are caught up and what time it is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Pending(Generic[T]):
    """One queued record: its topic, its time in the merge — event time (ms), or the Kafka timestamp under
    ``merge_order = "arrival"``; records that could not be decoded use -1 and go first — and what the
    driver queued. A plain class: one is made per record, and a dataclass's generated ``__init__`` would run
    interpreted even where this module is compiled."""

    __slots__ = ("topic", "at", "item")

    def __init__(self, topic: str, at: int, item: T) -> None:
        self.topic = topic
        self.at = at
        self.item = item

    def __repr__(self) -> str:
        return f"Pending(topic={self.topic!r}, at={self.at!r}, item={self.item!r})"


class PartitionMerger(Generic[T]):
    def __init__(self, topics: list[str], max_idle_ms: int, max_lag_wait_ms: int | None = None) -> None:
        self.topics = list(topics)
        self._rank = {t: i for i, t in enumerate(self.topics)}
        self.max_idle_ms = max_idle_ms
        self.max_lag_wait_ms = max(max_idle_ms, max_lag_wait_ms if max_lag_wait_ms is not None else max_idle_ms)
        self.enforced = 0  # records handed out while a topic of the partition had none (enforced processing)
        self.queues: dict[str, deque[Pending[T]]] = {t: deque() for t in self.topics}
        self.size = 0  # records queued over all topics
        self._blocked_since: float | None = None

    def add(self, pending: Pending[T]) -> None:
        self.queues[pending.topic].append(pending)
        self.size += 1

    def __len__(self) -> int:
        return self.size

    def queued(self, topic: str) -> int:
        return len(self.queues[topic])

    def clear(self) -> None:
        for q in self.queues.values():
            q.clear()
        self.size = 0
        self._blocked_since = None

    def drain(self, limit: int, lag: Callable[[str], int | None], now_ms: float) -> list[Pending[T]]:
        """Up to ``limit`` records in event-time order (ties: topic order, then arrival). ``lag(topic)``
        is the records not yet fetched: 0 when caught up, ``None`` when unknown."""
        out: list[Pending[T]] = []
        while len(out) < limit:
            heads = [(q[0].at, self._rank[t], t) for t, q in self.queues.items() if q]
            if not heads:
                break
            lags = [lag(t) for t, q in self.queues.items() if not q]
            waiting = [n for n in lags if n != 0]
            if waiting:
                if self._blocked_since is None:
                    self._blocked_since = now_ms
                bound = self.max_lag_wait_ms if any(n is not None and n > 0 for n in waiting) else self.max_idle_ms
                if now_ms - self._blocked_since < bound:
                    break
                self.enforced += 1
            else:
                self._blocked_since = None
            _, _, topic = min(heads)
            out.append(self.queues[topic].popleft())
            self.size -= 1
        return out


MERGE_ORDERS = ("event_time", "arrival")  # ``worker.merge_order``: what ``Pending.at`` holds


def event_time_of(logical: str, record: dict[str, Any]) -> int:
    return int(record["tick_at"] if logical == "clock" else record["occurred_at"])
