"""The complaint and bounce guard: rates per mailbox provider in event time, and marketing paused at a stop.

Mailbox providers judge a sender by its complaint and bounce rates, and a sender over their line is
throttled or blocked, transactional mail from the same domain included. The processors watch the same
rates from the feedback they already read (``email.feedback``: ``delivered``, ``bounced``,
``complained``) and pause marketing mail to a provider before the provider does it for them.

- **Provider** of a recipient: the domain of the customer's address by MX-free rules (``provider_of``):
  gmail.com, googlemail.com → gmail; yahoo.*, ymail.com, rocketmail.com, aol.* and the ISP domains Yahoo
  hosts (att.net, sbcglobal.net, bellsouth.net, verizon.net, aim.com) → yahoo; outlook.*, hotmail.*,
  Microsoft's own live.* domains, msn.com → outlook; icloud.com, me.com, mac.com → apple; anything else
  → other (``deliverability.domains`` adds rules of the shop's own, any case, e.g. a company domain
  hosted by Outlook). ``Name <address>`` is read as its address.
- **Counts**: each feedback record is counted on arrival in the event-time bucket of its ``occurred_at``
  (``bucket_ms``, default 1 h): delivered, hard (``permanent``) bounces, complaints. A transient bounce
  counts nowhere (the mail may still arrive).
- **Rates**: at each bucket boundary, over the complete buckets of the window before it (``window_ms``,
  default 24 h): complaint rate = complaints ÷ deliveries, bounce rate = hard bounces ÷ (deliveries +
  hard bounces). Under ``min_volume`` deliveries + hard bounces there is no rate.
- **Status** per provider, decided at each boundary: ``stop`` at a stop threshold, ``warn`` at a warn
  threshold, else ``ok``. A provider in ``stop`` resumes at the first boundary at least ``cool_off_ms``
  after the stop where both rates are under their ``resume_below`` threshold. Pausing marketing empties
  the window, so under ``min_volume`` the rates are computed over what was counted (the transactional
  mail that kept flowing, any late feedback). A window with nothing counted at all keeps the stop until
  ``quiet_resume_ms`` (default 3 days) after it: silence is not evidence, but it bounds the pause of a
  provider no mail at all goes to.
- **Decisions**: a marketing step due at ``t`` reads the status its provider had at the last boundary at
  or before ``t``. Paused, it is deferred to the next boundary plus an offset of up to
  ``release_spread_ms`` (a hash of the address: the same in every run), re-checked there and dropped once
  past its expiry (``expired_by_provider_pause``), or dropped (``on_stop = "drop"``: ``provider_paused``).
  So the mail a stop held goes out over ``release_spread_ms`` after the resume, not in one millisecond;
  a resume in the customer's quiet hours keeps the offset after them (``held_between``, ``release_offset``,
  read by ``streams/core/guards.py``), and a held step they carry past its expiry is dropped as
  ``expired_by_provider_pause`` when the pause held it longer than quiet hours would.
  Transactional mail never asks.

Why this is the same in every run (``simulate``, ``replay``, the workers): a boundary is evaluated only
once the partition's watermark has passed it, and every feedback record first brings the evaluation up to
the watermark before it is counted. So the status at a boundary depends only on the feedback before the
boundary that arrived before the watermark passed it — every on-time record, in any arrival order within
the grace; a late record counts in its bucket for the boundaries still to come (statuses already decided
stand, as emitted mail does). Each provider keeps its last 16 status changes, so a step due at an earlier
time than the latest boundary reads the status of its own time.

Cost: a provider's window is only re-evaluated at a boundary where a bucket enters or leaves it (each
provider remembers the next such boundary, and the guard the earliest of them: an hour before it costs one
comparison), and not at all while the mail it holds is under ``min_volume`` and its status is ok (nothing
could be decided: its buckets no window will hold again are forgotten as new ones arrive); its sums are
then recomputed when it is evaluated again. A feedback record costs one count.

The rates are per partition (each partition engine sees the feedback of its own customers): with
customers spread evenly by their id, each partition's rate estimates the shop's rate, and ``min_volume``
applies to a partition's share of the traffic. Counters (``deliverability:<provider>:<status>`` on each
change, ``deliverability:<provider>:held`` each time a step is held back: deferred or dropped) and ``snapshot()`` (status, rates and
volume at the last boundary) are what the runtime exports as metrics.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

from streams.config import DELIVERABILITY_PROVIDERS, ConfigError, DeliverabilitySettings
from streams.core.state import GuardState, ProviderWindow

OK, WARN, STOP = "ok", "warn", "stop"
LEVEL = {OK: 0, WARN: 1, STOP: 2}  # the status as a number (the metric's value)
HISTORY = 16  # status changes kept per provider
_DELIVERED, _BOUNCED, _COMPLAINED = 0, 1, 2
_NEVER = 1 << 62  # no change to come until a new bucket is counted

_EXACT = {"gmail.com": "gmail", "googlemail.com": "gmail", "ymail.com": "yahoo", "rocketmail.com": "yahoo",
          # hosted by Yahoo (AT&T, Verizon and AOL addresses)
          "att.net": "yahoo", "sbcglobal.net": "yahoo", "bellsouth.net": "yahoo", "verizon.net": "yahoo",
          "aim.com": "yahoo",
          "msn.com": "outlook", "icloud.com": "apple", "me.com": "apple", "mac.com": "apple",
          # ``live`` is a common word: only Microsoft's own live.* domains, not live.tv or live.co.za's namesakes
          **{f"live.{suffix}": "outlook" for suffix in (
              "com", "co.uk", "ca", "fr", "de", "nl", "be", "it", "se", "dk", "no", "fi", "at", "ie", "com.au",
              "com.mx", "com.ar", "cl", "jp", "ru")}}
_BRANDS = {"yahoo": "yahoo", "aol": "yahoo", "outlook": "outlook", "hotmail": "outlook"}

__all__ = ["DeliverabilityGuard", "LEVEL", "OK", "STOP", "WARN", "provider_of"]


def provider_of(email: str | None, domains: dict[str, str] | None = None) -> str:
    """The mailbox provider of an address by its domain (no MX lookup): gmail, yahoo, outlook, apple or other.
    A brand domain counts under any country suffix (``yahoo.co.uk``, ``hotmail.de``) but not as the first
    label of someone else's domain (``live.example.com`` is other); ``live`` only as Microsoft's own
    domains (``live.tv`` is other). ``Name <a@gmail.com>`` is read as its address; the shop's
    ``domains`` match whatever their case."""
    address = email or ""
    if "<" in address:  # a display name with the address in angle brackets
        address = address.rpartition("<")[2].partition(">")[0]
    domain = address.rpartition("@")[2].strip().lower().rstrip(".")
    if domains:
        found = domains.get(domain)
        if found is None:
            found = next((v for k, v in domains.items() if k.strip().lower().rstrip(".") == domain), None)
        if found is not None:
            return found
    found = _EXACT.get(domain)
    if found is not None:
        return found
    brand, _, suffix = domain.partition(".")
    provider = _BRANDS.get(brand)
    if provider is not None and suffix and _country_suffix(suffix):
        return provider
    return "other"


def _country_suffix(suffix: str) -> bool:
    """``com``, ``de``, ``co.uk``, ``com.br``: one or two short labels (a public suffix, not a domain)."""
    labels = suffix.split(".")
    return len(labels) <= 2 and all(0 < len(label) <= 3 and label.isalpha() for label in labels)


def _check(settings: DeliverabilitySettings) -> None:
    if settings.bucket_ms <= 0 or settings.window_ms < settings.bucket_ms or settings.window_ms % settings.bucket_ms:
        raise ConfigError("deliverability.window_ms must be a positive whole number of deliverability.bucket_ms")
    if settings.on_stop not in ("defer", "drop"):
        raise ConfigError(f"deliverability.on_stop must be 'defer' or 'drop', not {settings.on_stop!r}")
    if settings.resume_below not in (WARN, STOP):
        raise ConfigError(f"deliverability.resume_below must be 'warn' or 'stop', not {settings.resume_below!r}")
    for name in ("complaint_warn", "complaint_stop", "bounce_warn", "bounce_stop"):
        value = getattr(settings, name)
        if value >= 1:
            raise ConfigError(f"deliverability.{name} = {value} is a fraction, not a percentage: 0.3 means 30 %: "
                              f"write 0.003 for 0.3 %")
    if not (0 < settings.complaint_warn <= settings.complaint_stop and 0 < settings.bounce_warn <= settings.bounce_stop):
        raise ConfigError("deliverability thresholds: 0 < *_warn ≤ *_stop")
    if settings.release_spread_ms < 0 or settings.quiet_resume_ms < 0:
        raise ConfigError("deliverability.release_spread_ms and quiet_resume_ms must be ≥ 0")
    unknown = sorted(set(settings.domains.values()) - set(DELIVERABILITY_PROVIDERS))
    if unknown:
        raise ConfigError(f"deliverability.domains names unknown providers {unknown} (known: {DELIVERABILITY_PROVIDERS})")


class DeliverabilityGuard:
    """The guard of one partition (held by its ``FlowContext``); ``state`` is persisted in the partition record."""

    def __init__(self, settings: DeliverabilitySettings, count: Callable[[str], None],
                 changed: Callable[[], None]) -> None:
        _check(settings)
        self.settings = settings
        self.enabled = settings.enabled
        self.drop_on_stop = settings.on_stop == "drop"
        self.bucket_ms = settings.bucket_ms
        self.window = settings.window_ms // settings.bucket_ms  # buckets per window
        self.cool_off_ms = settings.cool_off_ms
        self.count = count
        self._changed = changed
        self.state = GuardState()
        self._stopping: set[str] = set()  # providers with a stop in their kept history (fast path: empty)
        self._providers: dict[str, str] = {}  # address → provider, cached
        self._next: dict[str, int] = {}  # provider → the next boundary its window can change at (absent: unknown)
        # no provider needs a visit before this boundary: at most every provider's ``_next`` (0: visit them), so
        # an hour in which nothing can change costs one comparison, not one lookup per provider
        self._wake = 0
        # provider → deliveries + hard bounces in every bucket held: under min_volume (and ok) nothing can be
        # decided, so its window is not walked and its sums are stale (recomputed when it is walked again)
        self._held: dict[str, int] = {}
        self._stale: set[str] = set()

    # ---- persistence -------------------------------------------------------------------------
    def restore(self, state: GuardState | None) -> None:
        self.state = state if state is not None else GuardState()
        self._next = {}
        self._wake = 0
        self._held = {name: sum(row[0] + row[1] for row in w.buckets.values()) for name, w in self.state.providers.items()}
        self._stale = set(self.state.providers)
        self._stopping = {name for name, w in self.state.providers.items() if any(s == STOP for _, s in w.history)}

    def persisted(self) -> GuardState | None:
        """What the partition record carries (None while nothing was counted)."""
        return self.state if self.state.providers else None

    # ---- input -------------------------------------------------------------------------------
    def provider(self, email: str | None) -> str:
        found = self._providers.get(email or "")
        if found is None:
            if len(self._providers) > 100_000:
                self._providers.clear()
            found = self._providers[email or ""] = provider_of(email, self.settings.domains)
        return found

    def observe(self, email: str | None, record: dict[str, Any], watermark: int) -> None:
        """A feedback record on arrival: delivered, a hard bounce or a complaint is counted in its bucket
        (after every boundary the watermark has passed is evaluated); other feedback is not counted."""
        kind = record["type"]
        if kind == "delivered":
            column = _DELIVERED
        elif kind == "complained":
            column = _COMPLAINED
        elif kind == "bounced" and record.get("bounce_type") == "permanent":
            column = _BOUNCED
        else:
            return
        state = self.state
        bucket_ms = self.bucket_ms
        if watermark // bucket_ms > state.upto:  # a call once per boundary passed, not per record
            self.catch_up(watermark)
        bucket = record["occurred_at"] // bucket_ms
        upto = state.upto
        if upto and bucket + self.window <= upto:
            self.count("deliverability:too_late")  # older than every window still to be evaluated
            return
        name = self._providers.get(email or "")  # ``provider``, its cached answer inlined (every feedback record)
        if name is None:
            name = self.provider(email)
        window = state.providers.get(name)
        if window is None:
            window = state.providers[name] = ProviderWindow()
            self._wake = 0  # a provider not visited yet
        row = window.buckets.get(bucket)
        if row is None:
            row = window.buckets[bucket] = [0, 0, 0]
            if name in self._stale:  # too little mail held to decide on: no boundary to walk for it, only
                # buckets no window will hold again to forget (a visit would do just that)
                if len(window.buckets) > 2 * self.window:
                    self._prune(name, window, upto)
            else:
                known = self._next.get(name)
                if known is not None and bucket + 1 < known:  # a new bucket enters at bucket + 1
                    self._next[name] = bucket + 1
                    if bucket + 1 < self._wake:
                        self._wake = bucket + 1
        row[column] += 1
        if column != _COMPLAINED:
            held = self._held[name] = self._held.get(name, 0) + 1
            if held == self.settings.min_volume:
                self._next.pop(name, None)  # enough to decide on: walk it again
                self._wake = 0
        if bucket < upto:  # late: in the window already, so the next boundary sees a change
            window.sums[column] += 1
            window.recheck = True
            self._wake = 0
        self._changed()

    # ---- evaluation ----------------------------------------------------------------------------
    def catch_up(self, at: int) -> None:
        """Evaluate every bucket boundary at or before ``at`` not evaluated yet (``at`` ≤ the watermark)."""
        target = at // self.bucket_ms
        state = self.state
        if target <= state.upto:
            return
        if target < self._wake:  # no provider's window can change before a later boundary
            state.upto = target
            self._changed()
            return
        known = self._next
        n = self.window
        for name, window in state.providers.items():
            nxt = known.get(name)
            if nxt is not None and nxt > target and not window.recheck:
                continue  # its window cannot change before a later boundary
            history = window.history
            if (not window.recheck and (not history or history[-1][1] == OK)
                    and self._held.get(name, 0) < self.settings.min_volume):
                self._stale.add(name)  # too little mail to decide on, whatever enters the window
                known[name] = _NEVER
                if len(window.buckets) > 2 * n:
                    self._prune(name, window, target)
                continue
            if name in self._stale:
                self._stale.discard(name)
                self._prune(name, window, state.upto)
                window.sums = list(self._counts(window, state.upto))
            self._walk(name, window, state.upto, target)
            known[name] = self._next_change(window, target)
        self._wake = min((0 if w.recheck else known.get(name, 0) for name, w in state.providers.items()),
                         default=_NEVER)
        state.upto = target
        self._changed()

    def _rates(self, delivered: int, bounced: int, complained: int) -> tuple[float | None, float | None]:
        """Complaint and bounce rate, or None under min_volume."""
        volume = delivered + bounced
        if volume < self.settings.min_volume:
            return None, None
        return complained / max(delivered, 1), bounced / volume

    def _prune(self, name: str, window: ProviderWindow, k: int) -> None:
        """Forget the buckets no window from boundary ``k`` on holds."""
        n = self.window
        for b in [b for b in window.buckets if b + n < k]:
            row = window.buckets.pop(b)
            self._held[name] = self._held.get(name, 0) - row[0] - row[1]

    def _counts(self, window: ProviderWindow, boundary: int) -> tuple[int, int, int]:
        """Deliveries, hard bounces and complaints in the window before ``boundary``."""
        lo = boundary - self.window
        delivered = bounced = complained = 0
        for b, row in window.buckets.items():
            if lo <= b < boundary:
                delivered += row[0]
                bounced += row[1]
                complained += row[2]
        return delivered, bounced, complained

    def _next_change(self, window: ProviderWindow, k: int) -> int:
        """The first boundary after ``k`` where the window's content changes or a stop's cool-off ends."""
        n = self.window
        nxt = min((b + 1 + n if b < k else b + 1) for b in window.buckets) if window.buckets else _NEVER
        history = window.history
        if history and history[-1][1] == STOP:
            for resume in (self._resume_boundary(history), self._quiet_boundary(history)):
                if resume > k:
                    nxt = min(nxt, resume)
        return nxt

    def _resume_boundary(self, history: list[list[Any]]) -> int:
        """The first boundary at which the stop that ``history`` ends with has served its cool-off."""
        return -(-(history[-1][0] + self.cool_off_ms) // self.bucket_ms)

    def _quiet_boundary(self, history: list[list[Any]]) -> int:
        """The first boundary at which the stop that ``history`` ends with resumes on an empty window
        (``quiet_resume_ms``; never when 0)."""
        quiet = self.settings.quiet_resume_ms
        if not quiet:
            return _NEVER
        return -(-(history[-1][0] + max(quiet, self.cool_off_ms)) // self.bucket_ms)

    def _walk(self, name: str, window: ProviderWindow, upto: int, target: int) -> None:
        """Boundary by boundary up to ``target``: the window gains the bucket before the boundary and loses
        the one that falls out; the status is re-decided where the content changed (or a stop may end)."""
        n = self.window
        buckets = window.buckets
        sums = window.sums
        history = window.history
        changed = window.recheck
        window.recheck = False
        k = upto
        while k < target:
            if not (sums[0] or sums[1] or sums[2]):  # an empty window until the next bucket enters it
                status = history[-1][1] if history else OK
                first = min(buckets) if buckets else target
                if status == STOP:  # only the cool-off's end (or the quiet resume) can change it before then
                    resume = max(k + 1, self._resume_boundary(history))
                    if resume <= min(first, target):
                        self._evaluate(name, window, resume)
                    quiet = max(k + 1, self._quiet_boundary(history))
                    if history[-1][1] == STOP and quiet <= min(first, target):
                        self._evaluate(name, window, quiet)
                elif changed or status != OK:
                    self._evaluate(name, window, k + 1)
                changed = False
                if first >= target:
                    return
                k = max(k, first)  # bucket ``first`` enters at the boundary first + 1
            elif not changed and k not in buckets and k - n not in buckets:  # nothing enters or leaves at k + 1:
                # skip to the next boundary where a bucket enters or leaves (or a stop may end)
                nxt = min(b + 1 + n if b < k else b + 1 for b in buckets)
                if history and history[-1][1] == STOP:
                    nxt = min(nxt, max(k + 1, self._resume_boundary(history)))
                if nxt > target:
                    return
                k = nxt - 1
            k += 1
            row = buckets.get(k - 1)  # enters the window [k - n, k)
            if row is not None:
                sums[0] += row[0]
                sums[1] += row[1]
                sums[2] += row[2]
                changed = True
            row = buckets.pop(k - 1 - n, None)  # leaves it
            if row is not None:
                self._held[name] = self._held.get(name, 0) - row[0] - row[1]
                sums[0] -= row[0]
                sums[1] -= row[1]
                sums[2] -= row[2]
                changed = True
            if changed or (history and history[-1][1] == STOP):
                self._evaluate(name, window, k)
                changed = False

    def _evaluate(self, name: str, window: ProviderWindow, boundary: int) -> None:
        s = self.settings
        cr, br = self._rates(*window.sums)
        if cr is None or br is None:
            level = OK
        else:
            level = STOP if cr >= s.complaint_stop or br >= s.bounce_stop else \
                WARN if cr >= s.complaint_warn or br >= s.bounce_warn else OK
        history = window.history
        current = history[-1][1] if history else OK
        if level == current:
            return
        at = boundary * self.bucket_ms
        if current == STOP:
            stopped_for = at - history[-1][0]
            if stopped_for < self.cool_off_ms:
                return  # still stopped
            resume_c, resume_b = ((s.complaint_warn, s.bounce_warn) if s.resume_below == WARN
                                  else (s.complaint_stop, s.bounce_stop))
            if cr is None or br is None:  # under min_volume (the pause empties it): the rates over what was
                # counted decide; a window with nothing counted keeps the stop until quiet_resume_ms
                delivered, bounced, complained = window.sums
                if delivered + bounced:
                    cr, br = complained / max(delivered, 1), bounced / (delivered + bounced)
                elif complained or not s.quiet_resume_ms or stopped_for < s.quiet_resume_ms:
                    return
                else:
                    cr = br = 0.0
            if not (cr < resume_c and br < resume_b):
                return  # still stopped
        history.append([at, level])
        del history[:-HISTORY]
        self.count(f"deliverability:{name}:{level}")
        if level == STOP:
            self._stopping.add(name)
        elif not any(st == STOP for _, st in history):
            self._stopping.discard(name)

    # ---- decisions ------------------------------------------------------------------------------
    def status_at(self, name: str, at: int) -> str:
        """The provider's status for a step due at ``at`` (the one decided at the last boundary ≤ ``at``)."""
        self.catch_up(at)
        window = self.state.providers.get(name)
        if window is None:
            return OK
        for since, status in reversed(window.history):
            if since <= at:
                return str(status)
        return OK

    def paused(self, email: str | None, at: int) -> int | None:
        """None when marketing mail to ``email`` may go at ``at``; else when to ask again (the next boundary)."""
        state = self.state
        if not state.providers:
            return None  # nothing counted yet: no provider can be stopped (its boundaries are evaluated when one is)
        if at // self.bucket_ms > state.upto:  # a call once per boundary passed, not per decision
            self.catch_up(at)
        if not self._stopping:
            return None
        name = self.provider(email)
        if name not in self._stopping or self.status_at(name, at) != STOP:
            return None
        self.count(f"deliverability:{name}:held")
        return (at // self.bucket_ms + 1) * self.bucket_ms + self.release_offset(email)

    def held_between(self, email: str | None, start: int, end: int) -> bool:
        """Was ``email``'s provider stopped at some time from ``start`` to ``end`` (a step first due at
        ``start`` and decided at ``end`` was held by the pause)?"""
        if not self._stopping:
            return False
        name = self.provider(email)
        window = self.state.providers.get(name)
        if name not in self._stopping or window is None:
            return False
        return self.status_at(name, start) == STOP or any(
            status == STOP and start < since <= end for since, status in window.history)

    def release_offset(self, email: str | None) -> int:
        """How long after a boundary a held step asks again: spread over ``release_spread_ms`` by a hash of
        the address (the same in every run), so a resume does not release every held step at once."""
        spread = self.settings.release_spread_ms
        return zlib.crc32((email or "").encode()) % spread if spread > 0 else 0

    def pause_figures(self, email: str | None, at: int) -> dict[str, Any]:
        """What explains a pause of mail to ``email`` at ``at``: the provider, when it stopped, the rates and
        volume of the window at the last boundary, and the stop thresholds."""
        name = self.provider(email)
        window = self.state.providers.get(name)
        history = window.history if window is not None else []
        since = next((t for t, st in reversed(history) if st == STOP and t <= at), None)
        figures = {"provider": name, "stopped_at": since, "complaint_stop": self.settings.complaint_stop,
                   "bounce_stop": self.settings.bounce_stop}
        figures.update({k: v for k, v in self.snapshot().get(name, {}).items()
                        if k in ("complaint_rate", "bounce_rate", "volume")})
        return figures

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per provider seen: status, complaint and bounce rate (None under min_volume), volume — at the last boundary."""
        out: dict[str, dict[str, Any]] = {}
        for name, w in sorted(self.state.providers.items()):
            status = str(w.history[-1][1]) if w.history else OK
            delivered, bounced, complained = self._counts(w, self.state.upto)
            cr, br = self._rates(delivered, bounced, complained)
            out[name] = {"status": status, "level": LEVEL[status], "complaint_rate": cr, "bounce_rate": br,
                         "volume": delivered + bounced}
        return out
