"""Marketing guards, segments and variants (pure)."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import msgspec

from streams.config import HOUR_MS, Experiment, GuardSettings
from streams.core.guards import decide, quiet_hours_release
from streams.core.segments import SpendHistogram, segment
from streams.core.state import Profile, Suppression
from streams.core.variants import assign, bucket


def ms(text: str, tz: str = "UTC") -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp() * 1000)


def local(at: int, tz: str) -> str:
    return datetime.fromtimestamp(at / 1000, tz=timezone.utc).astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


def test_quiet_hours_release_at_eight_local_in_each_time_zone():
    for tz in ("Europe/Berlin", "America/Los_Angeles", "Asia/Tokyo", "Australia/Sydney"):
        late = ms("2026-06-10T23:15", tz)
        assert local(quiet_hours_release(late, tz, 22, 8), tz) == "2026-06-11 08:00"
        early = ms("2026-06-11T05:00", tz)
        assert local(quiet_hours_release(early, tz, 22, 8), tz) == "2026-06-11 08:00"
        day = ms("2026-06-11T12:00", tz)
        assert quiet_hours_release(day, tz, 22, 8) == day


def test_quiet_hours_across_a_dst_change_still_release_at_eight_local():
    # Berlin springs forward on 2026-03-29 (02:00 → 03:00): the night is an hour shorter
    at = ms("2026-03-28T23:00", "Europe/Berlin")
    release = quiet_hours_release(at, "Europe/Berlin", 22, 8)
    assert local(release, "Europe/Berlin") == "2026-03-29 08:00"
    assert release - at == 8 * HOUR_MS  # 9 wall-clock hours, 8 real ones
    # New York falls back on 2026-11-01: the night is an hour longer
    at = ms("2026-10-31T23:00", "America/New_York")
    release = quiet_hours_release(at, "America/New_York", 22, 8)
    assert local(release, "America/New_York") == "2026-11-01 08:00" and release - at == 10 * HOUR_MS


def test_unknown_time_zone_falls_back_to_utc_and_equal_hours_disable_quiet_hours():
    at = ms("2026-06-10T23:00")
    assert local(quiet_hours_release(at, "Mars/Olympus", 22, 8), "UTC") == "2026-06-11 08:00"
    assert quiet_hours_release(at, "UTC", 0, 0) == at


def test_guards_drop_without_consent_email_or_after_suppression_and_defer_for_the_cap():
    g = GuardSettings()
    profile = Profile(email="a@example.com", opt=True, tz="UTC")
    noon = ms("2026-06-10T12:00")
    assert decide(profile, None, None, noon, noon + HOUR_MS, g).action == "send"
    assert decide(msgspec.structs.replace(profile, opt=False), None, None, noon, noon + HOUR_MS, g).reason == "no_consent"
    assert decide(msgspec.structs.replace(profile, email=None), None, None, noon, noon + HOUR_MS, g).reason == "no_email"
    assert decide(profile, Suppression(u=noon - 1), None, noon, noon + HOUR_MS, g).reason == "unsubscribed"
    assert decide(profile, Suppression(b=noon - 1), None, noon, noon + HOUR_MS, g).reason == "hard_bounced"
    capped = decide(profile, None, noon - 19 * HOUR_MS, noon, noon + 30 * HOUR_MS, g)
    assert capped.action == "defer" and capped.at == noon + HOUR_MS and capped.reason == "frequency_cap"
    night = decide(profile, None, noon - 2 * HOUR_MS, noon, noon + 30 * HOUR_MS, g)  # cap ends 06:00 → 08:00
    assert night.action == "defer" and night.at == noon + 20 * HOUR_MS
    assert decide(profile, None, noon - 2 * HOUR_MS, noon, noon + HOUR_MS, g).reason == "expired_by_frequency_cap"


def test_vip_is_the_top_two_percent_by_spend_within_bucket_precision():
    h = SpendHistogram()
    for spend in range(1, 1001):
        h.move(None, float(spend))
    threshold = h.threshold(0.98)
    assert 970 <= threshold <= 1000  # the top 2 % start at 981; buckets are 5 % wide
    ties = SpendHistogram()
    for _ in range(99):
        ties.move(None, 20.0)
    ties.move(None, 5000.0)
    assert segment(1, 20.0, ties.threshold(0.98)) == "one_time" and segment(1, 5000.0, ties.threshold(0.98)) == "vip"
    assert segment(3, 990.0, threshold) == "vip"
    assert segment(3, 100.0, threshold) == "repeat" and segment(1, 100.0, threshold) == "one_time"


def test_variant_assignment_is_stable_and_follows_the_weights():
    exp = Experiment(name="offer", flow="win_back", step=1, variants={"A": 3, "B": 1}, holdout=0.1)
    picks = [assign(f"c{i}", exp) for i in range(8000)]
    assert picks == [assign(f"c{i}", exp) for i in range(8000)]
    share = {v: picks.count(v) / len(picks) for v in set(picks)}
    assert abs(share["holdout"] - 0.10) < 0.02
    assert abs(share["A"] - 0.675) < 0.03 and abs(share["B"] - 0.225) < 0.03
    assert bucket("c1", "offer") != bucket("c1", "other experiment")


def test_quiet_hours_cached_per_quarter_hour_equals_the_exact_answer_for_every_instant():
    import random

    from streams.core import guards

    rng = random.Random(7)
    zones = ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe",
             "Pacific/Chatham", "UTC", "Not/AZone", None]
    start = ms("2026-01-01T00:00")
    for _ in range(20_000):
        at = start + rng.randrange(400 * 24 * HOUR_MS)
        tz = rng.choice(zones)
        assert quiet_hours_release(at, tz, 22, 8) == (guards._release(at, tz, 22, 8) or at)


def test_vip_threshold_kept_incrementally_equals_one_computed_from_scratch():
    import random

    rng = random.Random(3)
    h = SpendHistogram()
    spend: dict[int, float] = {}
    for _ in range(5_000):
        cid = rng.randrange(400)
        new = round(rng.lognormvariate(4, 1.2), 2)
        h.move(spend.get(cid), new)
        spend[cid] = new
        assert h.threshold(0.98) == SpendHistogram(h.counts).threshold(0.98)


def test_quiet_hours_by_day_offset_equal_the_exact_answer_through_every_transition_of_a_year():
    from streams.core import guards

    zones = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Pacific/Chatham", "America/Santiago"]
    start = ms("2026-01-01T00:00")
    for tz in zones:
        for quiet_start, quiet_end in ((22, 8), (1, 4), (2, 3), (9, 17)):
            for at in range(start, start + 366 * 24 * HOUR_MS, 47 * 60_000 + 7):
                expected = guards._release(at, tz, quiet_start, quiet_end) or at
                assert quiet_hours_release(at, tz, quiet_start, quiet_end) == expected, (at, tz, quiet_start)
