"""The sink's benchmarks: the per-part CPU harness measures every part, and the sink bench runs its child
with the user's concurrency (it used to force 8), from this tree or from another release's."""

from __future__ import annotations

import os

import pytest

from bench.runner import _max_concurrency


def test_the_sink_bench_reads_the_concurrency_the_user_set(monkeypatch):
    monkeypatch.setenv("SHOPMAIL_SES__MAX_CONCURRENCY", "13")
    assert _max_concurrency(None) == 13
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert _max_concurrency(here) == 13  # a tree given as the baseline reads the same user settings


@pytest.mark.integration
def test_the_cpu_harness_measures_every_part_of_the_sinks_work():
    from bench.sink_cpu import measure

    figures = measure(emails=30, concurrency=2)
    for part in ("links_and_context_ms", "render_ms", "mime_ms", "ses_call_ms", "ses_calls_per_s"):
        assert figures[part] > 0, part
    assert figures["mix"] >= 13 * 6  # every template in every shipped locale
    assert figures["total_ms"] == pytest.approx(sum(v for k, v in figures.items() if k.endswith("_ms") and k != "total_ms"),
                                                abs=0.01)
