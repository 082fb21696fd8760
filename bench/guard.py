"""`shopmail bench --parts guard`: what the complaint and bounce guard and sunset cost the worker.

The input is a shop's traffic (``TrafficSpec``) plus the SES feedback its mail would bring back: the
commands of a first, untimed pass are answered with a delivery a minute after ``send_at`` (1 % hard
bounces instead, 0.2 % of deliveries complained about two hours later, 5 % clicked by a person an hour
later), addresses spread over the five mailbox providers. Then the same records go through the partition
tasks the worker drives (``Simulator.apply``: admission, limits, engine) with the guard and sunset on and
off, interleaved (on, off, off, on, …) so a machine that slows down mid-run slows both alike; each pass is
timed in CPU seconds of this process. The figure is the ratio of the medians: on ÷ off − 1.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from schemas import serde
from streams.config import HOUR_MS, MINUTE_MS, Settings, load_settings
from streams.tools.simulate import Simulator
from streams.kafka.topics import VALUE_SCHEMA
from streams.tools.traffic import TrafficSpec, generate

DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "icloud.com", "example.com")
Event = tuple[str, dict[str, Any]]


def guard_settings(on: bool) -> Settings:
    return load_settings(env={}, overrides={"deliverability": {"enabled": on}, "flows": {"sunset": {"enabled": on}}})


def with_providers(events: list[Event]) -> list[Event]:
    """The traffic with each customer's address at one of the five providers (by customer id)."""
    out: list[Event] = []
    for topic, rec in events:
        email = rec.get("email")
        if email:
            rec = dict(rec, email=email.replace("@example.com", "@" + DOMAINS[hash_id(rec["customer_id"]) % 5]))
        out.append((topic, rec))
    return out


def hash_id(customer_id: str) -> int:
    return sum(customer_id.encode())


def feedback_for(commands: list[dict[str, Any]]) -> list[Event]:
    """The SES events the commands' mail brings back (deterministic: every n-th command)."""
    out: list[Event] = []
    for n, cmd in enumerate(commands):
        if cmd["variant"] == "holdout":
            continue
        cid, at, mid = cmd["customer_id"], cmd["send_at"] + MINUTE_MS, cmd["command_id"]
        base = {"customer_id": cid, "command_id": mid, "message_id": mid}
        if n % 100 == 7:
            out.append(("feedback", dict(base, event_id=f"b-{mid}", occurred_at=at, type="bounced",
                                         bounce_type="permanent")))
            continue
        out.append(("feedback", dict(base, event_id=f"d-{mid}", occurred_at=at, type="delivered")))
        if n % 500 == 3:
            out.append(("feedback", dict(base, event_id=f"c-{mid}", occurred_at=at + 2 * HOUR_MS, type="complained")))
        elif n % 20 == 11:
            out.append(("feedback", dict(base, event_id=f"k-{mid}", occurred_at=at + HOUR_MS, type="clicked",
                                         link="https://shop.example.com/p/1", user_agent="Mozilla/5.0 Firefox/130")))
    return out


def bench_input(customers: int, days: int) -> list[Event]:
    """The shop's traffic and its feedback in log order, records in their JSON form."""
    shop = with_providers(list(generate(TrafficSpec(customers=customers, days=days, seed=5))))
    sim = Simulator(guard_settings(True))
    commands: list[dict[str, Any]] = []
    for topic, rec in shop:
        commands.extend(cmd for _, cmd in sim.apply(topic, serde.from_json(VALUE_SCHEMA[topic], rec)).commands)
    merged = shop + feedback_for(commands)
    merged.sort(key=lambda e: e[1]["occurred_at"])  # stable: the shop's log order is kept
    return merged


def decoded(events: list[Event]) -> list[Event]:
    return [(t, serde.from_json(VALUE_SCHEMA[t], r)) for t, r in events]


def cpu_pass(settings: Settings, events: list[Event]) -> float:
    sim = Simulator(settings)
    apply = sim.apply
    started = time.process_time()
    for topic, rec in events:
        apply(topic, rec)
    return time.process_time() - started


def bench_guard(customers: int, days: int, rounds: int, out: Any) -> None:
    events = decoded(bench_input(customers, days))
    on, off = guard_settings(True), guard_settings(False)
    times: dict[bool, list[float]] = {True: [], False: []}
    for r in range(rounds):
        for mode in ((True, False) if r % 2 == 0 else (False, True)):
            times[mode].append(cpu_pass(on if mode else off, events))
    on_s, off_s = statistics.median(times[True]), statistics.median(times[False])
    out.add("guard.events", len(events))
    out.add("guard.feedback_events", sum(1 for t, _ in events if t == "feedback"))
    out.add("guard.rounds", rounds)
    out.add("guard.on_cpu_s", round(on_s, 2))
    out.add("guard.off_cpu_s", round(off_s, 2))
    out.add("guard.on_events_per_cpu_s", round(len(events) / on_s))
    out.add("guard.off_events_per_cpu_s", round(len(events) / off_s))
    out.add("guard.cost", round(on_s / off_s - 1, 4))  # target: ≤ 0.05


def bench_guard_instructions(customers: int, days: int, out: Any) -> None:
    """Instructions per event (callgrind, bench/instructions.py) of the same input with the guard and sunset
    on and off: a count that repeats whatever else the machine is doing."""
    from bench.instructions import InstructionsUnavailable, count_instructions

    events = bench_input(customers, days)
    counts = {}
    for on in (True, False):
        try:
            counts[on] = count_instructions(events, {"deliverability": {"enabled": on}, "flows": {"sunset": {"enabled": on}}})
        except InstructionsUnavailable as exc:
            out.add("guard.instructions.skipped", str(exc))
            return
    out.add("guard.instructions.events", counts[True].events)
    for region in ("engine", "task"):
        on_i, off_i = counts[True].per_event(region), counts[False].per_event(region)
        out.add(f"guard.instructions.{region}_on_per_event", round(on_i))
        out.add(f"guard.instructions.{region}_off_per_event", round(off_i))
        out.add(f"guard.instructions.{region}_cost", round(on_i / off_i - 1, 4))
