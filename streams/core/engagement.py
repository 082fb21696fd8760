"""Machine opens and bot clicks: which recorded opens and clicks a person made (pure, deterministic).

Opens and clicks are separated, never dropped: every open is ``human`` or ``machine`` and every click
``human`` or ``bot``, each non-human verdict with the rule that decided it. The rules read the shape
of the SES events of one message (its ``delivered``, ``opened`` and ``clicked`` feedback, grouped by
``message_id``; the delivery time is the message's earliest ``delivered`` feedback):

- ``scanner_agent`` (opens and clicks): the user agent contains one of ``scanner_user_agents``
  (security gateways, link scanners, HTTP libraries; case-insensitive substrings).
- ``apple_mpp`` (opens): Apple Mail Privacy Protection pre-fetches every image through Apple's proxy,
  which SES reports with the proxy's bare user agent (one of ``apple_proxy_user_agents``, compared
  whole) from an address in ``apple_proxy_ip_ranges``. Both must match.
- ``soon_after_delivery``: an open no later than ``machine_open_within_ms`` after the delivery, a click
  no later than ``bot_click_within_ms`` after it. Nobody reads that fast; pre-fetchers and scanners do.
- ``link_burst`` (clicks): ``bot_burst_links`` or more distinct links of the message clicked within
  ``bot_burst_window_ms`` of each other. Every click of that burst is a bot's.

A record without a user agent or an address (older records, other sources) is judged by timing
alone; one whose message has no known delivery is not judged by timing. The thresholds are settings
(the ``metrics`` section of the configuration); this module takes any object carrying them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

HUMAN = "human"
MACHINE = "machine"  # an open no person made
BOT = "bot"  # a click no person made

SCANNER_AGENT = "scanner_agent"
APPLE_MPP = "apple_mpp"
SOON_AFTER_DELIVERY = "soon_after_delivery"
LINK_BURST = "link_burst"
REASONS = (SCANNER_AGENT, APPLE_MPP, SOON_AFTER_DELIVERY, LINK_BURST)


class EngagementThresholds(Protocol):
    """What the rules read (``streams.config.MetricsSettings`` carries these fields)."""

    machine_open_within_ms: int
    bot_click_within_ms: int
    bot_burst_links: int
    bot_burst_window_ms: int
    scanner_user_agents: list[str]
    apple_proxy_user_agents: list[str]
    apple_proxy_ip_ranges: list[str]


@dataclass(frozen=True)
class Verdict:
    """``signal``: human, machine (opens) or bot (clicks); ``reason``: the rule, empty when human."""

    signal: str
    reason: str = ""

    @property
    def human(self) -> bool:
        return self.signal == HUMAN


HUMAN_VERDICT = Verdict(HUMAN)


def message_key(feedback: Mapping[str, Any]) -> str:
    """Which message a feedback record is about: its SES message id, else its command id."""
    return str(feedback.get("message_id") or feedback.get("command_id") or "")


class EngagementRules:
    """The rules with their thresholds compiled once (address ranges parsed, agents lower-cased)."""

    def __init__(self, thresholds: EngagementThresholds) -> None:
        self.open_within_ms = thresholds.machine_open_within_ms
        self.click_within_ms = thresholds.bot_click_within_ms
        self.burst_links = thresholds.bot_burst_links
        self.burst_window_ms = thresholds.bot_burst_window_ms
        self.scanner_agents = tuple(a.lower() for a in thresholds.scanner_user_agents if a.strip())
        self.proxy_agents = frozenset(a.strip() for a in thresholds.apple_proxy_user_agents if a.strip())
        try:
            self.proxy_networks = tuple(ipaddress.ip_network(r.strip(), strict=False)
                                        for r in thresholds.apple_proxy_ip_ranges if r.strip())
        except ValueError as exc:
            raise ValueError(f"metrics.apple_proxy_ip_ranges: {exc}") from exc

    # ---- single signals ---------------------------------------------------------------------------
    def is_scanner(self, user_agent: str | None) -> bool:
        ua = (user_agent or "").lower()
        return bool(ua) and any(a in ua for a in self.scanner_agents)

    def is_apple_proxy(self, user_agent: str | None, ip_address: str | None) -> bool:
        if not user_agent or not ip_address or user_agent.strip() not in self.proxy_agents:
            return False
        try:
            ip = ipaddress.ip_address(ip_address.strip())
        except ValueError:
            return False
        return any(ip in net for net in self.proxy_networks if net.version == ip.version)

    # ---- verdicts ---------------------------------------------------------------------------------
    def classify_open(self, event: Mapping[str, Any], delivered_at: int | None) -> Verdict:
        if self.is_scanner(event.get("user_agent")):
            return Verdict(MACHINE, SCANNER_AGENT)
        if self.is_apple_proxy(event.get("user_agent"), event.get("ip_address")):
            return Verdict(MACHINE, APPLE_MPP)
        if delivered_at is not None and int(event["occurred_at"]) - delivered_at <= self.open_within_ms:
            return Verdict(MACHINE, SOON_AFTER_DELIVERY)
        return HUMAN_VERDICT

    def classify_click(self, event: Mapping[str, Any], delivered_at: int | None, in_burst: bool) -> Verdict:
        if self.is_scanner(event.get("user_agent")):
            return Verdict(BOT, SCANNER_AGENT)
        if delivered_at is not None and int(event["occurred_at"]) - delivered_at <= self.click_within_ms:
            return Verdict(BOT, SOON_AFTER_DELIVERY)
        if in_burst:
            return Verdict(BOT, LINK_BURST)
        return HUMAN_VERDICT

    def bursts(self, clicks: Sequence[Mapping[str, Any]]) -> list[bool]:
        """For clicks of one message: is each one part of a burst of ``burst_links`` distinct links?"""
        return self.burst_flags([(int(c["occurred_at"]), str(c.get("link") or "")) for c in clicks])

    def burst_flags(self, clicks: Sequence[tuple[int, str]]) -> list[bool]:
        """``bursts`` for clicks given as (time, link): the one burst rule of the report and the stream.
        A click's verdict depends on the clicks of its message up to ``burst_window_ms`` before and after
        it; the stream decides once its clock has passed that span (streams/core/flows/sunset.py)."""
        order = sorted(range(len(clicks)), key=lambda i: clicks[i][0])
        flagged = [False] * len(clicks)
        if self.burst_links <= 0:
            return flagged
        for start, first in enumerate(order):
            t0 = clicks[first][0]
            links: set[str] = set()
            end = start
            while end < len(order) and clicks[order[end]][0] - t0 <= self.burst_window_ms:
                links.add(clicks[order[end]][1])
                end += 1
            if len(links) >= self.burst_links:
                for i in order[start:end]:
                    flagged[i] = True
        return flagged

    def classify_all(self, feedback: Sequence[Mapping[str, Any]]) -> list[Verdict | None]:
        """A verdict for every open and click of ``feedback`` (None for other types), in input order.
        Messages are judged on all of their records given here, whatever their order."""
        delivered: dict[str, int] = {}
        clicks: dict[str, list[int]] = {}
        for i, f in enumerate(feedback):
            key = message_key(f)
            if f["type"] == "delivered":
                at = int(f["occurred_at"])
                delivered[key] = min(at, delivered.get(key, at))
            elif f["type"] == "clicked":
                clicks.setdefault(key, []).append(i)
        in_burst: set[int] = set()
        for indexes in clicks.values():
            flags = self.bursts([feedback[i] for i in indexes])
            in_burst.update(i for i, flagged in zip(indexes, flags) if flagged)
        out: list[Verdict | None] = []
        for i, f in enumerate(feedback):
            if f["type"] == "opened":
                out.append(self.classify_open(f, delivered.get(message_key(f))))
            elif f["type"] == "clicked":
                out.append(self.classify_click(f, delivered.get(message_key(f)), i in in_burst))
            else:
                out.append(None)
        return out
