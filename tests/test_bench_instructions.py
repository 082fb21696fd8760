"""`shopmail bench --instructions`: instructions per event under callgrind, a figure that repeats."""

from __future__ import annotations

import shutil

import pytest

from bench.instructions import REGIONS, count_instructions
from streams.tools.traffic import TrafficSpec, generate

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")]


def test_instruction_counts_repeat_exactly_for_the_same_input_and_grow_with_it():
    events = list(generate(TrafficSpec(customers=150, days=20, seed=7)))
    first = count_instructions(events)
    again = count_instructions(events)
    assert first.total == again.total  # the whole point: a count, not a time
    assert first.events == len(events) and first.commands > 0
    more = count_instructions(events + events)  # the same events again: duplicates, still each decoded
    for region in REGIONS:
        assert first.total[region] > 0
    assert more.total["decode"] > 1.8 * first.total["decode"]
