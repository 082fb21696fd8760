"""What the decision log's hooks cost ``simulate`` when nobody asks (and when one customer is asked about).

    python bench/decision_log_overhead.py EVENTS.jsonl BASE_TREE [--chunk 5000] [--watch CUSTOMER_ID]

One ``simulate`` (one process, commands not kept) per variant runs side by side over the same file: the
tree at ``BASE_TREE`` (a checkout without the hooks), this tree with no log and, with ``--watch``, this
tree with a log for one customer. They take turns a chunk of lines at a time — the order of the turns
reversed every other chunk — and each reports the CPU seconds (``time.process_time``) its chunk took,
so every variant runs each chunk under the same load of the machine. Prints the total events/s of
each variant and the median over the chunks of its CPU time relative to the base's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
from streams.config import load_settings
from streams.tools.simulate import simulate
path, watch, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
settings = load_settings(env={})
lines = open(path, "rb").read().splitlines()
if watch:
    from streams.core.decisions import DecisionLog
    from streams.runtime import task
    log = DecisionLog({watch})
    make = task.PartitionEngine

    def watched(s, p):
        engine = make(s, p)
        engine.explain(log)
        return engine
    task.PartitionEngine = watched

def turns():
    sys.stdin.readline()  # wait for the first turn
    for start in range(0, len(lines), chunk):
        begun = time.process_time()
        yield from lines[start:start + chunk]
        print(json.dumps({"cpu_s": time.process_time() - begun}), flush=True)
        sys.stdin.readline()

result = simulate(turns(), settings, keep=False)
print(json.dumps({"events": result.events, "commands": result.count}), flush=True)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("events")
    ap.add_argument("base_tree")
    ap.add_argument("--chunk", type=int, default=5000)
    ap.add_argument("--watch", default="", help="a customer id for the 'one customer asked about' variant")
    args = ap.parse_args()
    variants = {"base": (Path(args.base_tree), ""), "hooks, no log": (HERE, "")}
    if args.watch:
        variants["log for one customer"] = (HERE, args.watch)
    procs = {name: subprocess.Popen([sys.executable, "-c", CHILD, args.events, watch, str(args.chunk)],
                                    cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for name, (tree, watch) in variants.items()}
    names = list(variants)
    cpu: dict[str, list[float]] = {name: [] for name in names}
    chunks = -(-sum(1 for _ in open(args.events, "rb")) // args.chunk)
    for i in range(chunks):
        for name in (names if i % 2 == 0 else names[::-1]):
            proc = procs[name]
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
            cpu[name].append(json.loads(proc.stdout.readline())["cpu_s"])
    totals = {}
    for name, proc in procs.items():
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        totals[name] = json.loads(proc.stdout.readline())
        proc.wait()
    base_cpu = sum(cpu["base"])
    for name in names:
        ratios = sorted(a / b for a, b in zip(cpu[name], cpu["base"]))
        median = ratios[len(ratios) // 2]
        t = totals[name]
        print(f"{name:22s} {t['events']} events {t['commands']} commands {sum(cpu[name]):.2f} s CPU "
              f"{t['events'] / sum(cpu[name]):,.0f} events/s; total CPU {sum(cpu[name]) / base_cpu:.3f} of base, "
              f"median chunk {median:.3f} of base ({(median - 1) * 100:+.1f} %)", flush=True)


if __name__ == "__main__":
    main()
