"""`shopmail bench --parts guard-worker`: the guard's cost measured on the worker's runtime, through a real broker."""

from __future__ import annotations


def test_every_round_of_the_worker_guard_bench_runs_every_record_and_emits_the_same_commands_as_its_modes_first(
        kafka):
    from bench.guard import bench_input
    from bench.guard_worker import bench_guard_worker
    from bench.runner import TINY, Figures

    events = bench_input(TINY.guard_customers, TINY.guard_days)
    out = Figures()
    bench_guard_worker(TINY.guard_customers, TINY.guard_days, 2, kafka, out)  # on, off, off, on
    figures = out.rows
    assert figures["guard_worker.events"] == len(events)  # every round read every record from the start
    assert figures["guard_worker.feedback_events"] == sum(1 for topic, _ in events if topic == "feedback") > 0
    assert len(figures["guard_worker.on_cpu_s"]) == len(figures["guard_worker.off_cpu_s"]) == 2
    # each round has its own commands topic: a later round is not told its commands were already emitted
    assert figures["guard_worker.on_commands"] > 0 and figures["guard_worker.off_commands"] > 0
    assert min(figures["guard_worker.on_cpu_s"] + figures["guard_worker.off_cpu_s"]) > 0
    assert isinstance(figures["guard_worker.cost"], float)
