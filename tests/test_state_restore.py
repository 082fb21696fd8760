"""State written by an earlier release restores and continues exactly as that release would have."""

from __future__ import annotations

import json
from pathlib import Path

from streams.config import load_settings
from streams.core.engine import CLOCK_KEY, PartitionEngine

FIXTURE = Path(__file__).parent / "fixtures" / "state_v1.json"


# context fields later releases add to the same commands (the coupon's time zone, win-back's currency)
ADDED_CONTEXT = frozenset({"timezone", "currency", "best_sellers"})


def without_newer_context(command: dict, expected: dict) -> dict:
    """``command`` with the context fields added since the fixture's release removed (only those)."""
    ctx, old = json.loads(command["context"]), json.loads(expected["context"])
    for key in ADDED_CONTEXT - set(old):
        ctx.pop(key, None)
    return {**command, "context": json.dumps(ctx, separators=(",", ":"), sort_keys=True)}


def test_changelog_blobs_of_the_dict_state_release_restore_and_emit_what_that_release_emitted():
    stored = json.loads(FIXTURE.read_text())
    assert CLOCK_KEY in stored["changes"] and len(stored["changes"]) == 5  # a partition record and 4 customers
    eng = PartitionEngine(load_settings(env={}), 0)
    for key, value in stored["changes"].items():
        eng.restore(key, None if value is None else value.encode())
    eng.restored()
    assert len(eng.customers) == 4 and eng.clock_ms == json.loads(stored["changes"][CLOCK_KEY])["clock"]
    out = []
    for topic, record in stored["continuation"]:
        out += eng.process(topic, record).commands
    out += eng.advance(stored["until"]).commands
    assert [without_newer_context(c, e) for c, e in zip(out, stored["commands"])] == stored["commands"]
    assert len(out) == len(stored["commands"])
    assert {(c["flow"], c["step"]) for c in out} >= {("abandoned_cart", 2), ("win_back", 3), ("shipping_confirmation", 1)}
