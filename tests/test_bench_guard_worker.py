"""`shopmail bench --parts guard-worker`: the guard's cost measured on the worker's runtime, through a real broker."""

from __future__ import annotations

from dataclasses import replace


def test_the_worker_guard_bench_runs_every_record_through_the_runtime_with_the_guard_on_and_off(kafka):
    from bench.guard import bench_input
    from bench.runner import TINY, run_bench

    events = bench_input(TINY.guard_customers, TINY.guard_days)
    figures = run_bench(replace(TINY, guard_rounds=1), ["guard-worker"], kafka).rows
    assert figures["guard_worker.events"] == len(events)  # every round read every record from the start
    assert figures["guard_worker.feedback_events"] == sum(1 for topic, _ in events if topic == "feedback") > 0
    assert len(figures["guard_worker.on_cpu_s"]) == len(figures["guard_worker.off_cpu_s"]) == 1
    assert min(figures["guard_worker.on_cpu_s"] + figures["guard_worker.off_cpu_s"]) > 0
    assert isinstance(figures["guard_worker.cost"], float)
