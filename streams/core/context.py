"""What a flow may see and do beyond its own customer's state: the partition's shared facts.

One ``FlowContext`` per partition engine, handed to every flow when the engine builds it (the Kafka
Streams ``ProcessorContext`` / Bytewax ``StatefulBatchLogic`` shape: the logic gets a narrow API, never
the task). It holds the partition-wide state — the event-time clock, the co-purchase table and catalog
(cross-sell), the spend histogram (segments) and the counters — and marks the partition record
changed when a flow writes to it. The engine owns the ordering rules; flows never reach into it.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from streams.config import Settings
from streams.core.deliverability import DeliverabilityGuard
from streams.core.segments import SpendHistogram, segment
from streams.core.state import Record
from streams.core.tables import Table

R = TypeVar("R", bound=Record)

log = logging.getLogger("shopmail.engine")


class FlowContext:
    __slots__ = ("settings", "grace_ms", "clock_ms", "tick_ms", "stats", "cooc", "catalog", "spend",
                 "partition_changed", "shop_url", "tables", "deliverability",
                 "decisions")

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.grace_ms = settings.worker.late_grace_ms
        self.shop_url = settings.flows.shop_url
        self.clock_ms = 0  # the partition's event-time clock (largest event time seen, see engine.py)
        self.tick_ms = 0  # the latest clock tick (the log's wall clock); 0 = none seen
        self.stats: dict[str, int] = {}
        self.cooc: dict[str, dict[str, int]] = {}  # sku → {sku: times bought together}
        self.catalog: dict[str, dict[str, Any]] = {}  # sku → last seen item (name, price, image, url)
        self.spend = SpendHistogram()
        self.partition_changed = False
        self.tables: dict[str, Table[Any]] = {}  # state not keyed by customer (streams/core/tables.py)
        self.decisions: Any = None  # a DecisionLog (streams/core/decisions.py) when someone asks, else None
        # complaint and bounce rates per mailbox provider (streams/core/deliverability.py)
        self.deliverability = DeliverabilityGuard(settings.deliverability, self.count, self.mark_changed)

    def mark_changed(self) -> None:
        """The partition record changed (written with the next drain)."""
        self.partition_changed = True

    def table(self, name: str, row_type: type[R]) -> Table[R]:
        """The partition's table ``name`` (created on first use; one row type per name)."""
        t = self.tables.get(name)
        if t is None:
            t = self.tables[name] = Table(name, row_type)
        elif t.row_type is not row_type:
            raise ValueError(f"table {name!r} holds {t.row_type.__name__}, not {row_type.__name__}")
        return t

    @property
    def watermark(self) -> int:
        return self.clock_ms - self.grace_ms

    def count(self, what: str) -> None:
        stats = self.stats
        stats[what] = stats.get(what, 0) + 1

    def dropped(self, cid: str, flow: str, step: int, reason: str) -> None:
        """A step that will not be sent: counted and logged, never silent."""
        self.count(f"dropped:{flow}:{reason}")
        log.debug("dropped %s step %d for %s: %s", flow, step, cid, reason)
        if self.decisions is not None:
            self.decisions.dropped(cid, flow, step, reason)

    # ---- cross-sell: what is bought together in this partition ----------------------------------
    def cross_sell(self, skus: list[str], limit: int, locale: str | None = None) -> list[dict[str, Any]]:
        """The products most bought together with ``skus``, named in ``locale``: a product whose name
        this partition has only seen in other languages is left out (never a name in another language)."""
        scores: dict[str, int] = {}
        basket = set(skus)
        cooc = self.cooc
        for sku in skus:
            row = cooc.get(sku)
            if row:
                for other, n in row.items():
                    if other not in basket:
                        scores[other] = scores.get(other, 0) + n
        ranked = [(-n, sku) for sku, n in scores.items()]  # most bought together first, then by sku
        ranked.sort()
        return self._named([sku for _, sku in ranked], limit, locale)

    def _named(self, skus: list[str], limit: int, locale: str | None) -> list[dict[str, Any]]:
        """Up to ``limit`` catalog entries of ``skus`` (in that order) that have a name in ``locale``."""
        catalog = self.catalog
        out: list[dict[str, Any]] = []
        for sku in skus:
            if len(out) == limit:
                break
            entry = catalog.get(sku)
            if entry is None:
                continue
            names = entry.get("names")
            if names is None:  # learnt before names were kept per language: as it was learnt
                out.append(entry)
                continue
            name = names.get(locale or "en")
            if name is not None:
                suggestion = {k: v for k, v in entry.items() if k != "names"}
                suggestion["name"] = name
                out.append(suggestion)
        return out

    def best_sellers(self, limit: int, locale: str | None = None,
                     exclude: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
        """The products bought together most often in this partition, named in ``locale`` (as
        :meth:`cross_sell`), leaving out ``exclude``."""
        ranked = sorted((-sum(row.values()), sku) for sku, row in self.cooc.items() if sku not in exclude)
        return self._named([sku for _, sku in ranked], limit, locale)

    def learn_basket(self, items: list[dict[str, Any]], currency: str, locale: str | None = None) -> None:
        """Learn what is bought together; the catalog keeps each product's last seen price with that
        price's currency (a suggestion in another currency than a mail's is shown without a price) and its
        name in each language a buyer saw it in (``locale``: the buyer's)."""
        skus = sorted({it["sku"] for it in items})
        catalog = self.catalog
        for it in items:
            known = catalog.get(it["sku"])
            names = dict(known["names"]) if known is not None and "names" in known else {}
            names[locale or "en"] = it["name"]
            catalog[it["sku"]] = {"sku": it["sku"], "name": it["name"], "price": it["price"], "currency": currency,
                                  "image_url": it.get("image_url"), "url": it.get("url"), "names": names}
        for a in skus:
            row = self.cooc.setdefault(a, {})
            for b in skus:
                if a != b:
                    row[b] = row.get(b, 0) + 1
            if len(row) > 50:  # bounded: keep the strongest pairs
                self.cooc[a] = dict(sorted(row.items(), key=lambda kv: -kv[1])[:30])
        self.partition_changed = True

    # ---- segments: spend over the partition -----------------------------------------------------
    def move_spend(self, old: float | None, new: float) -> None:
        self.spend.move(old, new)
        self.partition_changed = True

    def segment(self, orders: int, spend_365: float) -> str:
        return segment(orders, spend_365, self.spend.threshold(self.settings.flows.win_back.vip_percentile))
