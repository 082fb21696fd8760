"""`shopmail worker` / `shopmail sink` with per-command timestamps for the latency bench's per-hop split.

``python -m bench.traced worker|sink ...`` wraps a few methods of the unchanged runtime and sink (a
timestamp before and after each; nothing else changes) and appends one JSON line per event to
``$SHOPMAIL_BENCH_TRACE``:

- worker: ``{"w": command_id, "start": batch start, "end": batch committed}`` for every command of a batch;
- sink: ``{"f": id, "t": fetched}``, ``{"r": id, "s": render s}``, ``{"p": id, "t0", "t1"}`` (render +
  MIME), ``{"x": id, "t0", "t1"}`` (the SES call), ``{"o": [ids], "t": outcome committed}``.

Times are ``time.time()`` seconds (one clock for every process on the machine).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

_lock = threading.Lock()
_out = open(os.environ.get("SHOPMAIL_BENCH_TRACE", os.devnull), "a", buffering=1)  # noqa: SIM115


def _write(row: dict[str, Any]) -> None:
    line = json.dumps(row) + "\n"
    with _lock:
        _out.write(line)


def trace_worker() -> None:
    from streams.runtime.worker import ProcessorRuntime

    process_batch = ProcessorRuntime._process_batch

    def traced(self: ProcessorRuntime, ticks: list[int], turn_started: float) -> None:
        start = time.time()
        process_batch(self, ticks, turn_started)
        end = time.time()
        for _, cmd in self._out.commands:
            _write({"w": cmd["command_id"], "start": start, "end": end})

    ProcessorRuntime._process_batch = traced  # type: ignore[method-assign]


def trace_sink() -> None:
    from sinks import intake, ledger, preparation, rendering, sending

    route, prepare = intake.Intake.route, preparation.Preparation._prepare
    send, commit = sending.Sending.send, ledger.Commit.run
    render = rendering.Renderer.render

    def traced_route(self: Any, w: Any, *args: Any) -> Any:
        r = route(self, w, *args)
        if w.command_id:
            _write({"f": w.command_id, "t": time.time()})
        return r

    def traced_render(self: Any, command: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return render(self, command, *args, **kwargs)
        finally:
            _write({"r": command.get("command_id"), "s": time.perf_counter() - t0})

    def traced_prepare(self: Any, w: Any, *args: Any) -> None:
        t0 = time.time()
        prepare(self, w, *args)
        _write({"p": w.command_id, "t0": t0, "t1": time.time()})

    def traced_send(self: Any, w: Any, *args: Any) -> Any:
        t0 = time.time()
        r = send(self, w, *args)
        _write({"x": w.command_id, "t0": t0, "t1": time.time()})
        return r

    def traced_commit(self: Any, step: Any, *args: Any) -> Any:
        settled = [w.command_id for w in step.done if w.outcome == "sent"]
        r = commit(self, step, *args)
        if settled:
            _write({"o": settled, "t": time.time()})
        return r

    intake.Intake.route = traced_route  # type: ignore[method-assign]
    preparation.Preparation._prepare = traced_prepare  # type: ignore[method-assign]
    sending.Sending.send = traced_send  # type: ignore[method-assign]
    ledger.Commit.run = traced_commit  # type: ignore[method-assign]
    rendering.Renderer.render = traced_render  # type: ignore[method-assign]


if __name__ == "__main__":
    from streams.cli.main import main

    (trace_worker if sys.argv[1] == "worker" else trace_sink)()
    sys.argv = ["shopmail", *sys.argv[1:]]
    sys.exit(main())
