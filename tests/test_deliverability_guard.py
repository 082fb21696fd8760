"""The complaint and bounce guard: rates per mailbox provider in event time; marketing to a provider over
the stop line pauses, transactional mail keeps flowing, and the provider resumes by the configured rule.

The spikes are replayed through the partition tasks that ``simulate`` and the workers drive
(``Simulator``), with one partition so every customer shares one guard (the guard is per partition)."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from streams.config import DAY_MS, HOUR_MS, MINUTE_MS, ConfigError, load_settings
from streams.core.deliverability import DeliverabilityGuard, provider_of
from streams.core.engine import PartitionEngine
from streams.core.state import Partition, decode_partition, encode
from streams.runtime.metrics import export_deliverability
from streams.tools.simulate import Simulator
from tests.core_events import T0, cart, customer, feedback, order, tick

MIN_VOLUME = 100


def settings(**guard: Any):
    return load_settings(env={}, overrides={"topics": {"partitions": 1},
                                            "deliverability": {"min_volume": MIN_VOLUME, **guard}})


class Replay:
    """Records through the simulate path; the commands and memberships they caused."""

    def __init__(self, **guard: Any) -> None:
        self.sim = Simulator(settings(**guard))
        self.commands: list[dict[str, Any]] = []

    def apply(self, events: list[tuple[str, dict]]) -> None:
        for topic, rec in events:
            out = self.sim.apply(topic, rec)
            self.commands.extend(cmd for _, cmd in out.commands)

    def advance(self, until: int) -> None:
        self.commands.extend(cmd for _, cmd in self.sim.advance(until).commands)

    @property
    def engine(self) -> PartitionEngine:
        return self.sim.engines[0]

    def sent(self, flow: str, to: str) -> list[dict[str, Any]]:
        return [c for c in self.commands if c["flow"] == flow and c["to"] == to]


def audience(domain: str, n: int, prefix: str) -> list[tuple[str, dict]]:
    return [customer(f"{prefix}{i}", T0 - DAY_MS, email=f"{prefix}{i}@{domain}") for i in range(n)]


def deliveries(prefix: str, n: int, at: int) -> list[tuple[str, dict]]:
    return [feedback(f"{prefix}{i}", at + i, "delivered", message_id=f"m-{prefix}{i}") for i in range(n)]


def complaint_spike(complaints: int, at: int = T0 + 10 * MINUTE_MS) -> list[tuple[str, dict]]:
    """200 gmail and 200 outlook deliveries in the hour after T0; ``complaints`` of the gmail ones complain."""
    return (deliveries("g", 200, at) + deliveries("o", 200, at)
            + [feedback(f"g{i}", at + 20 * MINUTE_MS + i, "complained") for i in range(complaints)])


def test_a_recipient_domain_is_classified_by_mx_free_rules():
    cases = {"ann@gmail.com": "gmail", "ann@GoogleMail.com": "gmail", "ann@yahoo.co.uk": "yahoo",
             "ann@yahoo.com": "yahoo", "ann@ymail.com": "yahoo", "ann@aol.com": "yahoo", "ann@outlook.de": "outlook",
             "ann@hotmail.com": "outlook", "ann@live.co.uk": "outlook", "ann@msn.com": "outlook",
             "ann@icloud.com": "apple", "ann@me.com": "apple", "ann@mac.com": "apple", "ann@gmx.de": "other",
             "ann@live.example.com": "other", "ann@yahoo-mail.example": "other", "": "other", None: "other",
             "ann@att.net": "yahoo", "ann@sbcglobal.net": "yahoo", "ann@verizon.net": "yahoo", "ann@aim.com": "yahoo",
             "ann@rocketmail.com": "yahoo", "ann@live.tv": "other", "ann@live.com": "outlook",
             "Ann Lee <ann@gmail.com>": "gmail", '"Lee, Ann" <ann@Yahoo.com>': "yahoo"}
    assert {email: provider_of(email) for email in cases} == cases
    assert provider_of("bob@corp.example", {"corp.example": "outlook"}) == "outlook"
    assert provider_of("bob@corp.example", {"Corp.Example": "outlook"}) == "outlook"  # keys in any case


def test_a_complaint_spike_pauses_marketing_to_gmail_only_and_transactional_mail_still_goes():
    r = Replay()
    r.apply(audience("gmail.com", 203, "g") + audience("outlook.com", 201, "o"))
    r.apply(complaint_spike(complaints=2))  # 1 % of gmail deliveries: over the 0.3 % stop line
    r.apply([cart("g200", T0 + 2 * HOUR_MS), cart("o200", T0 + 2 * HOUR_MS), order("g201", T0 + 2 * HOUR_MS)])
    r.apply([tick(T0 + 6 * HOUR_MS)])
    assert r.engine.ctx.deliverability.snapshot()["gmail"]["status"] == "stop"
    assert r.engine.ctx.deliverability.snapshot()["outlook"]["status"] == "ok"
    assert r.sent("abandoned_cart", "g200@gmail.com") == []  # held since its step 1 was due at T0 + 3 h
    assert [c["send_at"] for c in r.sent("abandoned_cart", "o200@outlook.com")] == [T0 + 3 * HOUR_MS]
    assert [c["category"] for c in r.commands if c["customer_id"] == "g201"] == ["transactional"]
    stats = r.engine.stats
    assert stats["deliverability:gmail:stop"] == 1 and "deliverability:outlook:stop" not in stats
    assert stats["deliverability:gmail:held"] >= 3  # re-checked at each boundary


def test_a_paused_provider_resumes_when_the_spike_has_left_the_window_and_the_mail_still_counted_is_clean():
    r = Replay()
    r.apply(audience("gmail.com", 203, "g") + audience("outlook.com", 201, "o"))
    r.apply(complaint_spike(complaints=2))
    r.apply([cart("g200", T0 + 2 * HOUR_MS)])
    r.apply([tick(T0 + 24 * HOUR_MS + 30 * MINUTE_MS)])
    assert r.sent("abandoned_cart", "g200@gmail.com") == []
    r.apply(deliveries("g", 40, T0 + 24 * HOUR_MS + 35 * MINUTE_MS))  # transactional mail kept flowing: clean
    r.apply([tick(T0 + 26 * HOUR_MS + 30 * MINUTE_MS)])
    # the spike's bucket [T0, T0 + 1 h) leaves the 24 h window at T0 + 25 h; 40 deliveries, no complaint
    # (under min_volume: the rates over what was counted decide)
    sent = [c["send_at"] for c in r.sent("abandoned_cart", "g200@gmail.com")]
    assert len(sent) == 1 and T0 + 25 * HOUR_MS <= sent[0] < T0 + 26 * HOUR_MS  # within the release spread
    assert r.engine.ctx.deliverability.status_at("gmail", T0 + 25 * HOUR_MS) == "ok"
    assert r.engine.stats["deliverability:gmail:ok"] == 1


def test_a_stop_does_not_resume_only_because_the_pause_emptied_its_window():
    r = Replay()
    r.apply(audience("gmail.com", 203, "g") + complaint_spike(complaints=2) + [cart("g200", T0 + 2 * HOUR_MS)])
    r.apply([tick(T0 + 30 * HOUR_MS)])  # the spike left the window 5 h ago; nothing was counted since
    assert r.engine.ctx.deliverability.status_at("gmail", T0 + 30 * HOUR_MS) == "stop"
    assert r.sent("abandoned_cart", "g200@gmail.com") == []
    r.apply(deliveries("g", 30, T0 + 30 * HOUR_MS + MINUTE_MS)
            + [feedback("g0", T0 + 30 * HOUR_MS + 2 * MINUTE_MS, "complained")])  # 1 in 30: still far over
    r.apply([tick(T0 + 33 * HOUR_MS)])
    assert r.engine.ctx.deliverability.status_at("gmail", T0 + 33 * HOUR_MS) == "stop"


def test_a_stop_whose_window_counted_nothing_at_all_resumes_after_the_quiet_resume_time():
    r = Replay(quiet_resume_ms=3 * DAY_MS)
    r.apply(audience("gmail.com", 203, "g") + complaint_spike(complaints=2))  # stopped at T0 + 1 h
    r.apply([tick(T0 + 3 * DAY_MS + 30 * MINUTE_MS)])
    guard = r.engine.ctx.deliverability
    assert guard.status_at("gmail", T0 + 3 * DAY_MS) == "stop"  # silent for 2 days: still stopped
    r.apply([tick(T0 + 3 * DAY_MS + 2 * HOUR_MS)])
    assert guard.status_at("gmail", T0 + 3 * DAY_MS + HOUR_MS) == "ok"  # 3 days after the stop, at that boundary
    assert guard.status_at("gmail", T0 + 3 * DAY_MS + HOUR_MS - 1) == "stop"
    never = Replay(quiet_resume_ms=0)
    never.apply(audience("gmail.com", 203, "g") + complaint_spike(complaints=2) + [tick(T0 + 10 * DAY_MS)])
    assert never.engine.ctx.deliverability.status_at("gmail", T0 + 10 * DAY_MS) == "stop"


def test_mail_held_by_a_stop_is_released_spread_over_the_release_span_the_same_in_every_replay():
    def replay(**guard: Any) -> list[int]:
        r = Replay(**guard)
        r.apply(audience("gmail.com", 300, "g") + complaint_spike(complaints=2)
                + [cart(f"g{i}", T0 + 2 * HOUR_MS) for i in range(200, 300)])
        r.apply(deliveries("g", 40, T0 + 24 * HOUR_MS + 35 * MINUTE_MS) + [tick(T0 + 27 * HOUR_MS)])
        return sorted(c["send_at"] for c in r.commands if c["flow"] == "abandoned_cart" and c["step"] == 1)

    spread = replay()
    assert len(spread) == 100 and T0 + 25 * HOUR_MS <= spread[0] and spread[-1] < T0 + 26 * HOUR_MS
    assert len(set(spread)) > 90  # not one millisecond for all
    assert max(sum(1 for t in spread if lo <= t < lo + 10 * MINUTE_MS) for lo in spread) < 40
    assert replay() == spread  # by a hash of the address: a replay releases them at the same times
    assert set(replay(release_spread_ms=0)) == {T0 + 25 * HOUR_MS}  # switched off: all at the boundary


def test_held_mail_past_its_expiry_is_dropped_with_a_reason_and_drop_on_stop_drops_at_once():
    held = Replay(window_ms=3 * DAY_MS)  # the spike stays in the window past the step's 24 h expiry
    held.apply(audience("gmail.com", 203, "g") + complaint_spike(complaints=2) + [cart("g200", T0 + 2 * HOUR_MS)])
    held.apply([tick(T0 + 2 * DAY_MS)])
    assert held.sent("abandoned_cart", "g200@gmail.com") == []
    assert held.engine.stats["dropped:abandoned_cart:expired_by_provider_pause"] == 1
    dropped = Replay(on_stop="drop")
    dropped.apply(audience("gmail.com", 203, "g") + complaint_spike(complaints=2) + [cart("g200", T0 + 2 * HOUR_MS)])
    dropped.apply([tick(T0 + 4 * HOUR_MS)])
    assert dropped.engine.stats["dropped:abandoned_cart:provider_paused"] == 1
    assert dropped.engine.stats["deliverability:gmail:held"] == 1


def test_the_cool_off_keeps_a_provider_paused_even_once_the_rates_are_fine():
    r = Replay(window_ms=2 * HOUR_MS, cool_off_ms=8 * HOUR_MS, release_spread_ms=0)  # released at the boundary
    r.apply(audience("gmail.com", 203, "g") + complaint_spike(complaints=2) + [cart("g200", T0 + 2 * HOUR_MS)])
    r.apply(deliveries("g", 40, T0 + 7 * HOUR_MS + 30 * MINUTE_MS))  # clean mail in the window from T0 + 8 h
    r.apply([tick(T0 + 8 * HOUR_MS + 30 * MINUTE_MS)])
    guard = r.engine.ctx.deliverability
    # the spike left the 2 h window at T0 + 3 h; stopped at T0 + 1 h, it stays stopped 8 h
    assert guard.status_at("gmail", T0 + 4 * HOUR_MS) == "stop" and guard.status_at("gmail", T0 + 8 * HOUR_MS) == "stop"
    assert r.sent("abandoned_cart", "g200@gmail.com") == []
    r.apply([tick(T0 + 10 * HOUR_MS)])
    assert guard.status_at("gmail", T0 + 9 * HOUR_MS) == "ok"
    assert [c["send_at"] for c in r.sent("abandoned_cart", "g200@gmail.com")] == [T0 + 9 * HOUR_MS]


def test_a_rate_between_warn_and_stop_warns_without_pausing():
    r = Replay()
    r.apply(audience("gmail.com", 501, "g") + deliveries("g", 500, T0) + [feedback("g0", T0 + 1, "complained")]
            + [cart("g500", T0 + 2 * HOUR_MS)])
    r.apply([tick(T0 + 4 * HOUR_MS)])
    view = r.engine.ctx.deliverability.snapshot()["gmail"]
    assert view["status"] == "warn" and view["complaint_rate"] == pytest.approx(1 / 500) and view["volume"] == 500
    assert r.engine.stats["deliverability:gmail:warn"] == 1
    assert len(r.sent("abandoned_cart", "g500@gmail.com")) == 1


def test_hard_bounces_over_the_bounce_line_stop_and_transient_ones_do_not_count():
    hard = Replay()
    hard.apply(audience("yahoo.com", 201, "y") + deliveries("y", 180, T0)
               + [feedback(f"y{i}", T0 + 5, "bounced", bounce_type="permanent") for i in range(180, 190)])
    hard.apply([tick(T0 + 2 * HOUR_MS)])
    assert hard.engine.ctx.deliverability.snapshot()["yahoo"]["status"] == "stop"  # 10 / 190 = 5.3 %
    soft = Replay()
    soft.apply(audience("yahoo.com", 201, "y") + deliveries("y", 180, T0)
               + [feedback(f"y{i}", T0 + 5, "bounced", bounce_type="transient") for i in range(180, 190)])
    soft.apply([tick(T0 + 2 * HOUR_MS)])
    assert soft.engine.ctx.deliverability.snapshot()["yahoo"] == {
        "status": "ok", "level": 0, "complaint_rate": 0.0, "bounce_rate": 0.0, "volume": 180}


def test_under_the_minimum_volume_a_rate_does_not_count():
    r = Replay()
    r.apply(audience("gmail.com", 60, "g") + deliveries("g", 50, T0)
            + [feedback(f"g{i}", T0 + 5, "complained") for i in range(5)])
    r.apply([tick(T0 + 2 * HOUR_MS)])
    assert r.engine.ctx.deliverability.snapshot()["gmail"] == {
        "status": "ok", "level": 0, "complaint_rate": None, "bounce_rate": None, "volume": 50}


def test_the_same_feedback_in_another_arrival_order_within_the_grace_gives_the_same_commands():
    events = (audience("gmail.com", 203, "g") + audience("outlook.com", 201, "o") + complaint_spike(complaints=2)
              + [cart("g200", T0 + 2 * HOUR_MS), cart("o200", T0 + 2 * HOUR_MS)])
    prefix = audience("gmail.com", 203, "g") + audience("outlook.com", 201, "o")
    rest = events[len(prefix):]
    in_order, shuffled = Replay(), Replay()
    in_order.apply(events)
    shuffled.apply(prefix + sorted(rest, key=lambda e: (e[1]["occurred_at"] // (5 * MINUTE_MS), -e[1]["occurred_at"])))
    for r in (in_order, shuffled):
        r.apply([tick(T0 + 30 * HOUR_MS)])
    assert shuffled.commands and shuffled.commands == in_order.commands


def test_the_guard_survives_a_restore_and_an_older_partition_record_decodes_without_it():
    r = Replay()
    r.apply(audience("gmail.com", 203, "g") + complaint_spike(complaints=2))
    r.apply([tick(T0 + 3 * HOUR_MS)])
    changes = r.engine.drain_changes()
    fresh = PartitionEngine(settings(), 0)
    for key, value in changes.items():
        fresh.restore(key, value)
    fresh.restored()
    assert fresh.ctx.deliverability.snapshot() == r.engine.ctx.deliverability.snapshot()
    assert fresh.ctx.deliverability.status_at("gmail", T0 + 3 * HOUR_MS) == "stop"
    older = encode(Partition(clock=T0, tick=T0, v=2))
    assert decode_partition(older).guard is None


def test_a_late_complaint_counts_for_the_boundaries_still_to_come_and_a_very_late_one_is_counted_apart():
    r = Replay()
    r.apply(audience("gmail.com", 203, "g") + deliveries("g", 200, T0))
    r.apply([tick(T0 + 5 * HOUR_MS)])
    guard = r.engine.ctx.deliverability
    r.apply([feedback(f"g{i}", T0 + 30 * MINUTE_MS, "complained") for i in range(2)])  # 4 h behind the watermark
    r.apply([tick(T0 + 7 * HOUR_MS)])
    assert guard.status_at("gmail", T0 + 4 * HOUR_MS) == "ok"  # decided before the complaints were known
    assert guard.status_at("gmail", T0 + 6 * HOUR_MS) == "stop"
    r.apply([feedback("g9", T0 - 3 * DAY_MS, "complained")])
    assert r.engine.stats["deliverability:too_late"] == 1


def test_the_runtime_exports_the_status_and_rates_as_gauges():
    r = Replay()
    r.apply(audience("gmail.com", 203, "g") + complaint_spike(complaints=2))
    r.apply([tick(T0 + 2 * HOUR_MS)])
    export_deliverability(41, r.engine)
    assert REGISTRY.get_sample_value("shopmail_deliverability_status", {"provider": "gmail", "partition": "41"}) == 2
    assert REGISTRY.get_sample_value("shopmail_deliverability_rate",
                                     {"provider": "gmail", "partition": "41", "kind": "complaint"}) == 0.01


@pytest.mark.parametrize("bad", [{"on_stop": "hold"}, {"resume_below": "ok"}, {"window_ms": 90 * MINUTE_MS},
                                 {"complaint_warn": 0.01, "complaint_stop": 0.003}, {"domains": {"a.example": "aol"}},
                                 {"release_spread_ms": -1}, {"quiet_resume_ms": -1}])
def test_a_guard_setting_that_cannot_work_is_refused(bad):
    s = settings(**bad)
    with pytest.raises(ConfigError):
        DeliverabilityGuard(s.deliverability, lambda name: None, lambda: None)


def test_a_threshold_written_as_a_percentage_is_refused_with_the_fraction_to_write():
    s = settings(complaint_warn=0.1, complaint_stop=1)
    with pytest.raises(ConfigError, match="0.3 means 30 %: write 0.003 for 0.3 %"):
        DeliverabilityGuard(s.deliverability, lambda name: None, lambda: None)


def test_the_guard_bench_times_the_same_input_with_the_guard_on_and_off():
    from dataclasses import replace

    from bench.guard import bench_input
    from bench.runner import TINY, run_bench

    events = bench_input(150, 20)
    kinds = {rec["type"] for topic, rec in events if topic == "feedback"}
    assert {"delivered", "bounced", "clicked"} <= kinds
    figures = run_bench(replace(TINY, guard_customers=150, guard_days=20, guard_rounds=1), ["guard"])
    assert figures.rows["guard.events"] == len(events) and figures.rows["guard.on_cpu_s"] > 0
    assert isinstance(figures.rows["guard.cost"], float)


def test_a_guard_that_first_counts_on_a_fresh_partition_does_not_walk_every_hour_since_1970():
    guard = DeliverabilityGuard(settings().deliverability, lambda name: None, lambda: None)
    _, record = feedback("g0", T0, "delivered")
    guard.observe("g0@gmail.com", record, -10 * MINUTE_MS)  # a fresh partition: its clock is 0
    guard.catch_up(T0 + 2 * HOUR_MS)
    assert guard.state.upto == (T0 + 2 * HOUR_MS) // HOUR_MS
    assert guard.snapshot()["gmail"]["volume"] == 1


def test_explain_names_the_paused_provider_with_its_rate_and_the_stop_line():
    from streams.tools.explain import Fact, explain_records

    events = audience("gmail.com", 203, "g") + complaint_spike(complaints=2) + [cart("g200", T0 + 2 * HOUR_MS),
                                                                                 tick(T0 + 5 * HOUR_MS)]
    facts = [Fact(topic, topic, 0, i, rec) for i, (topic, rec) in enumerate(events)]
    ex = explain_records(settings(), "g200", facts)
    held = [r.text for r in ex.rows if r.kind == "deferred"]
    assert held and all("gmail paused since" in t for t in held), held
    assert "complaints 1.00% (stop at 0.30%)" in held[0] and "over 200 mails" in held[0]


def held_at_night(expires_after_ms: int) -> Replay:
    """100 carts of Auckland customers (UTC+13 in November) held by a gmail stop that resumes at T0 + 25 h:
    23:00 local, in quiet hours (22:00–08:00), which end at T0 + 34 h."""
    r = Replay()
    r.sim = Simulator(load_settings(env={}, overrides={
        "topics": {"partitions": 1}, "deliverability": {"min_volume": MIN_VOLUME},
        "flows": {"abandoned_cart": {"expires_after_ms": expires_after_ms}}}))
    r.apply(audience("gmail.com", 200, "g") + complaint_spike(complaints=2)
            + [customer(f"n{i}", T0 - DAY_MS, tz="Pacific/Auckland", email=f"n{i}@gmail.com") for i in range(100)]
            + [cart(f"n{i}", T0 + 2 * HOUR_MS) for i in range(100)])
    r.apply(deliveries("g", 40, T0 + 24 * HOUR_MS + 35 * MINUTE_MS) + [tick(T0 + 36 * HOUR_MS)])
    return r


def test_mail_held_by_a_stop_that_resumes_in_quiet_hours_keeps_its_spread_after_quiet_hours():
    r = held_at_night(expires_after_ms=3 * DAY_MS)
    spread = sorted(c["send_at"] for c in r.commands if c["flow"] == "abandoned_cart" and c["step"] == 1)
    assert len(spread) == 100 and T0 + 34 * HOUR_MS <= spread[0] and spread[-1] < T0 + 35 * HOUR_MS
    assert len(set(spread)) > 90  # not every step at 08:00:00.000
    assert max(sum(1 for t in spread if lo <= t < lo + 10 * MINUTE_MS) for lo in spread) < 40


def test_held_mail_that_expires_in_the_quiet_hours_after_the_resume_is_expired_by_the_provider_pause():
    r = held_at_night(expires_after_ms=24 * HOUR_MS)  # due at T0 + 3 h, held 22 h, quiet hours 9 h more
    assert [c for c in r.commands if c["flow"] == "abandoned_cart" and c["step"] == 1] == []
    assert r.engine.stats["dropped:abandoned_cart:expired_by_provider_pause"] == 100
    assert "dropped:abandoned_cart:expired_by_quiet_hours" not in r.engine.stats
