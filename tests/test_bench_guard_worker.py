"""`shopmail bench --parts guard-worker`: the guard's cost measured on the worker's runtime, through a real broker."""

from __future__ import annotations


def test_the_worker_guard_bench_runs_every_record_through_the_runtime_with_the_guard_on_and_off(kafka):
    from bench.guard import bench_input
    from bench.guard_worker import bench_guard_worker
    from bench.runner import TINY, Figures

    events = bench_input(TINY.guard_customers, TINY.guard_days)
    out = Figures()
    bench_guard_worker(TINY.guard_customers, TINY.guard_days, 1, kafka, out)
    figures = out.rows
    assert figures["guard_worker.events"] == len(events)  # every round read every record from the start
    assert figures["guard_worker.feedback_events"] == sum(1 for topic, _ in events if topic == "feedback") > 0
    assert len(figures["guard_worker.on_cpu_s"]) == len(figures["guard_worker.off_cpu_s"]) == 1
    assert min(figures["guard_worker.on_cpu_s"] + figures["guard_worker.off_cpu_s"]) > 0
    assert isinstance(figures["guard_worker.cost"], float)
