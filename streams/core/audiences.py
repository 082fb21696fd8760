"""Retargeting audiences: which named audiences each customer is in, and every join and leave.

An audience is defined by the flow whose state it reflects (``Flow.audiences`` names them,
``Flow.audience_of(customer)`` answers which of them a customer is in): ``abandoned_cart_open`` by
the cart series, ``lapsed`` and ``lapsed_vip`` by win-back. The engine asks after every settlement
of a customer (and after a late fact or a global record changed one), so membership follows the
flows' own view of the customer, in event-time order, with the same result for every driver.

Consent comes first: a customer without marketing consent, without an email address, or
suppressed (unsubscribed, hard bounce, complaint) is in no audience. A consent withdrawal or a
suppression removes the customer from every audience **on arrival**, before it settles: a privacy
decision does not wait for the grace period, and the customer stays out until it has settled (``aw``).
If the withdrawal turns out to be older than a newer opt-in, the customer re-joins then.

Each change is a ``Membership`` (``schemas/AudienceMembership.avsc``) keyed ``<audience>:<customer_id>``
on a compacted topic: joins carry the SHA-256 of the normalised email (trimmed, lower-cased: the
normalisation Meta, Google, TikTok and LinkedIn customer lists share); leaves carry no hash. The
customer record keeps the current audiences (``aud``) and a short digest of the hashed email
(``ah``) so an address change re-publishes the joins with the new hash.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from hashlib import sha256
from itertools import compress
from typing import Any

from streams.config import AudienceSettings
from streams.core.flows.base import Flow, fields_getter
from streams.core.state import Customer

Membership = dict[str, Any]  # an AudienceMembership record

DIGEST_CHARS = 16  # of the email hash kept in state: enough to notice an address change

__all__ = ["AudienceTracker", "Membership", "email_sha256", "membership_key"]


def email_sha256(email: str) -> str:
    """Hex SHA-256 of an email trimmed and lower-cased (the ad platforms' shared normalisation)."""
    return sha256(email.strip().lower().encode()).hexdigest()


def membership_key(audience: str, customer_id: str) -> str:
    return f"{audience}:{customer_id}"


def _leave_reason(c: Customer) -> str:
    sup = c.sup
    if sup is not None and (sup.u is not None or sup.b is not None or sup.c is not None):
        return "suppressed"
    if not c.p.email:
        return "no_email"
    if not c.p.opt:
        return "consent_withdrawn"
    return "left"


class AudienceTracker:
    """The audiences of one partition engine's customers; ``events`` holds the changes not yet taken."""

    def __init__(self, flows: Sequence[Flow], settings: AudienceSettings, count: Callable[[str], None]) -> None:
        defined = [a for f in flows for a in f.audiences]
        unknown = sorted(set(settings.only) - set(defined))
        if unknown:
            raise ValueError(f"audiences.only names {unknown}, which no flow defines (defined: {sorted(defined)})")
        only = frozenset(settings.only)
        self.only = only
        asked = [f for f in flows if f.audiences and (not only or only & set(f.audiences))]
        # the flows asked for every customer, and the flows asked only where their ``audience_key`` is set
        # (kept by ``compress`` from ``_audience_fields``: every keyed flow's field in one C call)
        self._always = tuple(f.audience_of for f in asked if not f.audience_key)
        keyed = [f for f in asked if f.audience_key]
        self._keyed = tuple(f.audience_of for f in keyed)
        self._audience_fields = fields_getter([f.audience_key for f in keyed])
        self.enabled = settings.enabled and bool(asked)
        self.events: list[Membership] = []
        self.count = count  # counters ``audience:<name>:join`` / ``audience:<name>:leave``
        # members whose hash was checked, with the address it was checked for (not persisted: after a
        # restore each member's address is hashed once more and compared with the digest in its state)
        self._published: dict[str, str] = {}

    def wanted(self, c: Customer) -> list[str]:
        """The audiences the customer belongs in now (sorted; none without consent)."""
        p = c.p
        if not p.opt or not p.email:
            return []
        sup = c.sup
        if sup is not None and (sup.u is not None or sup.b is not None or sup.c is not None):
            return []
        want: list[str] = []
        for of in self._always:
            found = of(c)
            if found:
                want.extend(found)
        for of in compress(self._keyed, self._audience_fields(c)):  # flows whose key field is empty: not asked
            found = of(c)
            if found:
                want.extend(found)
        if want:
            if self.only:
                want = [a for a in want if a in self.only]
            if len(want) > 1:
                want.sort()
        return want

    def track(self, cid: str, c: Customer, at: int) -> None:
        """Compare the customer's audiences with what the flows now say, with every fact up to the
        watermark ``at`` settled; record joins and leaves."""
        if c.audience_withdrawn_at is not None:
            if c.audience_withdrawn_at > at:  # a withdrawal that has not settled yet keeps the customer out
                return
            c.audience_withdrawn_at = None
        p = c.p
        if not c.aud and (not p.opt or not p.email):  # the common case, answered without asking the flows
            return
        want = self.wanted(c)
        have = c.aud
        if not want:
            if have:
                self._leave(cid, c, have, at, _leave_reason(c))
            return
        email = c.p.email
        assert email is not None
        if want == have and self._published.get(cid) is email:  # the same address object: nothing to hash
            return
        hashed = email_sha256(email)
        digest = hashed[:DIGEST_CHARS]
        self._published[cid] = email
        if want == have and c.ah == digest:
            return
        events = self.events
        for a in have:
            if a not in want:
                events.append(self._event(a, cid, False, "left", None, at))
        for a in want:
            if a not in have:
                events.append(self._event(a, cid, True, "joined", hashed, at))
            elif c.ah != digest:
                events.append(self._event(a, cid, True, "email_changed", hashed, at))
        c.aud = want
        c.ah = digest

    def withdrawn(self, cid: str, c: Customer, topic: str, r: dict[str, Any]) -> None:
        """On arrival: a consent withdrawal or a suppression takes the customer out of every audience now."""
        if topic == "customers":
            if r.get("marketing_opt_in"):
                return
            reason = "consent_withdrawn"
        elif r.get("type") in ("unsubscribed", "complained") or (
                r.get("type") == "bounced" and r.get("bounce_type") == "permanent"):
            reason = "suppressed"
        else:
            return
        at = int(r["occurred_at"])
        if self.enabled and (c.audience_withdrawn_at is None or at > c.audience_withdrawn_at):
            c.audience_withdrawn_at = at
        if c.aud:
            self._leave(cid, c, c.aud, at, reason)

    def _leave(self, cid: str, c: Customer, audiences: list[str], at: int, reason: str) -> None:
        self.events.extend(self._event(a, cid, False, reason, None, at) for a in audiences)
        c.aud = []
        c.ah = None
        self._published.pop(cid, None)

    def _event(self, audience: str, cid: str, member: bool, reason: str, hashed: str | None, at: int) -> Membership:
        self.count(f"audience:{audience}:{'join' if member else 'leave'}")
        return {"audience": audience, "customer_id": cid, "member": member, "reason": reason,
                "email_sha256": hashed, "changed_at": at}
