"""`shopmail bench --parts guard-worker`: what the complaint and bounce guard and sunset cost the worker itself.

`--parts guard` times the partition tasks alone; the issue's figure is the worker's: the same input (a
shop's traffic plus the SES feedback its mail brings back, ``bench.guard.bench_input``) is produced once to
the input topics of a real broker, then the processor runtime the worker runs (``ProcessorRuntime``: fetch,
decode, admission, engine, changelog, commands, transactions) reads all of it from the start, once per
round under its own consumer group and changelog and into its own output topics (commands, audiences,
coupons: a runtime that finds command ids already in its commands topic does not emit them again, so a
shared topic would let later rounds skip work), with the guard and sunset on and off interleaved (on,
off, off, on, …). Each round's figure is the CPU seconds of this process over exactly the window its
events/s is measured in — from the first fetch after assignment and restore to the last record
committed (the runtime's and librdkafka's threads; start-up, restore and shutdown are outside it; the
broker is another process). Every round must process every record and emit its commands: a round of
one mode that emits another number of commands than the first of that mode fails the bench. The cost
is the ratio of the medians: CPU on ÷ CPU off − 1.
"""

from __future__ import annotations

import copy
import statistics
from typing import Any

from bench.guard import bench_input
from bench.runner import _produce_inputs, _quix_specs, _worker, _worker_settings
from streams.kafka.topics import ensure_topics


def bench_guard_worker(customers: int, days: int, rounds: int, bootstrap: str, out: Any) -> None:
    base = _worker_settings("bench-guard-worker")
    assert ensure_topics(bootstrap, _quix_specs(base), kafka=base.kafka).healthy
    events = bench_input(customers, days)
    _produce_inputs(base, bootstrap, events)
    cpu: dict[bool, list[float]] = {True: [], False: []}
    rate: dict[bool, list[float]] = {True: [], False: []}
    commands: dict[bool, list[int]] = {True: [], False: []}
    n = 0
    for r in range(rounds):
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            n += 1
            s = copy.deepcopy(base)
            s.worker.app_id = f"{base.worker.app_id}-r{n}"  # its own group and changelog: reads from the start
            for output in ("commands", "audiences", "coupons"):  # its own outputs: nothing already emitted
                setattr(s.topics, output, f"{getattr(base.topics, output)}-r{n}")
            s.deliverability.enabled = on
            s.flows.sunset.enabled = on
            assert ensure_topics(bootstrap, _quix_specs(s), kafka=s.kafka).healthy
            run = _worker(s, bootstrap, len(events))
            if run.events < len(events):
                raise RuntimeError(f"round {n}: the worker processed {run.events} of {len(events)} records")
            if not run.commands or (commands[on] and run.commands != commands[on][0]):
                raise RuntimeError(f"round {n} (guard {'on' if on else 'off'}): {run.commands} commands, not the "
                                   f"{commands[on][0] if commands[on] else 'some'} of the same mode's first round")
            cpu[on].append(run.cpu_s)
            commands[on].append(run.commands)
            rate[on].append(run.events / run.seconds)
    on_s, off_s = statistics.median(cpu[True]), statistics.median(cpu[False])
    out.add("guard_worker.events", len(events))
    out.add("guard_worker.feedback_events", sum(1 for t, _ in events if t == "feedback"))
    out.add("guard_worker.rounds", rounds)
    out.add("guard_worker.on_cpu_s", [round(x, 2) for x in cpu[True]])
    out.add("guard_worker.off_cpu_s", [round(x, 2) for x in cpu[False]])
    out.add("guard_worker.on_commands", commands[True][0])
    out.add("guard_worker.off_commands", commands[False][0])
    out.add("guard_worker.on_events_per_s", round(statistics.median(rate[True])))
    out.add("guard_worker.off_events_per_s", round(statistics.median(rate[False])))
    # the worker's events/s on a core of its own: events per CPU-second over the same window (wall events/s on
    # a shared machine measures the other jobs as much as the worker)
    out.add("guard_worker.on_events_per_cpu_s", round(len(events) / on_s))
    out.add("guard_worker.off_events_per_cpu_s", round(len(events) / off_s))
    out.add("guard_worker.events_per_cpu_s_lost", round(1 - off_s / on_s, 4))  # the issue: ≤ 0.05 of the worker's events/s
    out.add("guard_worker.cost", round(on_s / off_s - 1, 4))  # CPU on ÷ CPU off − 1
