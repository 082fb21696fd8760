"""What the decision log's hooks cost ``simulate`` when nobody asks (and when one customer is asked about).

    python bench/decision_log_overhead.py EVENTS.jsonl BASE_TREE [--rounds 3]

Runs ``simulate`` (one process, commands not kept) over the file, interleaving, round after round: the
tree at ``BASE_TREE`` (a checkout without the hooks), this tree with no log, and this tree with a log
for one customer. Each run is a fresh interpreter; the figure is the CPU seconds of the simulate call
(``time.process_time``); a round runs the variants in turn, every other round in reverse order. Prints each
run, the best of each variant relative to the base, and the median of the rounds' ratios (events/s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

RUN = r"""
import json, sys, time
from streams.config import load_settings
from streams.tools.simulate import simulate
path, watch = sys.argv[1], sys.argv[2]
settings = load_settings(env={})
lines = open(path, "rb").read().splitlines()
if watch:
    from streams.core.decisions import DecisionLog
    from streams.core.engine import PartitionEngine
    from streams.runtime import task as tasks
    log = DecisionLog({watch})
    make = tasks.PartitionEngine

    def watched(s, p):
        engine = make(s, p)
        engine.explain(log)
        return engine
    tasks.PartitionEngine = watched
started = time.process_time()
result = simulate(lines, settings, keep=False)
cpu = time.process_time() - started
print(json.dumps({"events": result.events, "commands": result.count, "cpu_s": cpu}))
"""


def run(tree: Path, path: str, watch: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run([sys.executable, "-c", RUN, path, watch], capture_output=True, text=True, env=env,
                          cwd=tree, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("events")
    ap.add_argument("base_tree")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--watch", default="", help="a customer id for the 'one customer asked about' run")
    args = ap.parse_args()
    variants = {"base": (Path(args.base_tree), ""), "hooks, no log": (HERE, "")}
    if args.watch:
        variants["log for one customer"] = (HERE, args.watch)
    best: dict[str, float] = {}
    ratios: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]  # ABBA: a drift of the machine's load cancels out
        rates: dict[str, float] = {}
        for name in order:
            tree, watch = variants[name]
            out = run(tree, args.events, watch)
            rate = rates[name] = out["events"] / out["cpu_s"]
            best[name] = max(best.get(name, 0.0), rate)
            print(f"round {r + 1} {name:22s} {out['events']} events {out['commands']} commands "
                  f"{out['cpu_s']:.2f} s CPU {rate:,.0f} events/s", flush=True)
        for name in names:
            ratios[name].append(rates[name] / rates["base"])
    base = best["base"]
    for name in names:
        paired = sorted(ratios[name])
        median = paired[len(paired) // 2] if len(paired) % 2 else sum(paired[len(paired) // 2 - 1:len(paired) // 2 + 1]) / 2
        print(f"{name:22s} best {best[name]:,.0f} events/s = {best[name] / base:.3f} of base; "
              f"median of the rounds' ratios {median:.3f} ({(1 - median) * 100:+.1f} % cost)")

if __name__ == "__main__":
    main()
