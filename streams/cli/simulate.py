"""`shopmail simulate --input events.jsonl [--until TIME] [--config FILE] [--output commands.jsonl]`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import orjson
import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def simulate(input: Path = typer.Option(..., "--input", "-i", help="JSONL: {topic, value} per line"),  # noqa: A002
                 until: Optional[str] = typer.Option(None, "--until", help="advance the clock to (ISO-8601 or epoch ms)"),
                 config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file"),
                 output: Optional[Path] = typer.Option(None, "--output", "-o", help="commands JSONL (default stdout)"),
                 workers: int = typer.Option(0, "--workers", help="processes (partitions are independent); "
                                                                  "0 = one per CPU up to the partition count"),
                 stats: Optional[Path] = typer.Option(None, "--stats", "--json", help="write counts as JSON: "
                                                      "commands and holdouts per flow, steps dropped per flow and "
                                                      "reason, "
                                                      "late events applied per topic and how late"),
                 audiences: Optional[Path] = typer.Option(None, "--audiences", help="write the audience joins "
                                                          "and leaves as JSONL (one process)"),
                 quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar and no per-flow table "
                                            "(the one-line summary stays)")) -> None:
        """Run the processors' domain core over an event file without a broker (exit 3 if any line was bad)."""
        import time

        from streams.cli_settings import settings_from
        from streams.timeparse import parse_time_ms
        from streams.tools.readable import flow_summary, flow_table, progress, stderr_console
        from streams.tools.simulate import (IO_BUFFER, OutputFile, command_line, counter_totals, default_workers,
                                            engine_counters, simulate_parallel, watch_position)
        from streams.tools.simulate import simulate as run

        if not input.is_file():
            print(f"simulate: error: {input} " + ("is a directory" if input.is_dir() else "does not exist")
                  + " (write an event file with `shopmail generate -o FILE`)", file=sys.stderr)
            raise typer.Exit(2)
        size = input.stat().st_size
        settings = settings_from(config)
        from streams.runtime.gc_policy import tune_for_streaming

        tune_for_streaming(settings.worker.gc_young_threshold)  # inherited by the forked workers
        try:
            until_ms = parse_time_ms(until) if until else None
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        n = workers or default_workers(settings)
        if audiences is not None:
            if workers > 1:
                raise typer.BadParameter("--audiences runs in one process: drop --workers or set it to 1")
            n = 1
        started = time.perf_counter()
        # each file is written beside its target and moved into place only on success
        target = OutputFile(output) if output else None
        joins = OutputFile(audiences) if audiences else None
        written = [f for f in (target, joins) if f is not None]
        try:
            out = target.open() if target else sys.stdout.buffer
            members = joins.open() if joins else None
        except OSError:
            for f in written:
                f.discard()
            raise
        with progress(f"simulating {input.name}", total=size, quiet=quiet, unit="bytes") as bar:
            feed = bar.to if bar.shown else None  # nobody watching: no position polling at all
            try:
                if n > 1:
                    try:
                        events, n_commands, bad, counters = simulate_parallel(str(input), settings, until_ms, n, out,
                                                                              progress=feed)
                    except RuntimeError as exc:
                        print(f"simulate: {exc}", file=sys.stderr)
                        raise typer.Exit(1) from exc
                    for b in bad:
                        print(b.as_json(), file=sys.stderr)
                else:
                    with open(input, "rb", buffering=IO_BUFFER) as lines:
                        stop_watching = watch_position(lines, feed) if feed else (lambda: None)
                        result = run(lines, settings, until_ms, keep=False,
                                     on_bad=lambda b: print(b.as_json(), file=sys.stderr),
                                     on_command=lambda cmd: out.write(command_line(cmd)),
                                     on_membership=(lambda m: members.write(orjson.dumps(m) + b"\n"))
                                     if members else None)
                        stop_watching()
                    events, n_commands, bad = result.events, result.count, result.bad_lines
                    counters = engine_counters(result.engines.values())
            except BaseException:
                for f in written:
                    f.discard()
                raise
            if not target:
                out.flush()
        if events == 0:  # nothing simulated: existing output files stay as they were, and no zero summary
            for f in written:
                f.discard()
            print(f"simulate: error: {input} holds no event (one JSON object a line: "
                  '{"topic": ..., "value": {...}})', file=sys.stderr)
            raise typer.Exit(3 if bad else 1)
        for f in written:
            f.commit()
        elapsed = time.perf_counter() - started
        late = counter_totals(counters, "late_applied")
        future = counter_totals(counters, "future")
        if stats:
            stats.write_text(json.dumps({"events": events, "commands": n_commands, "bad_lines": len(bad),
                                         "late_applied": late, "future": future, "counters": counters,
                                         "flows": flow_summary(counters)}, indent=2) + "\n")
        if not quiet and counters:
            stderr_console().print(flow_table("Per flow", counters))
        dropped = sum(v for k, v in counters.items() if k.startswith("dropped:"))
        late_by_topic = f" ({', '.join(f'{t} {n:,}' for t, n in late.items())})" if late else ""
        print(f"simulate: {events:,} events, {n_commands:,} commands, {dropped:,} steps dropped, "
              f"{sum(late.values()):,} late events applied{late_by_topic}, {sum(future.values()):,} ahead of the "
              f"clock, {len(bad):,} bad lines in {elapsed:.1f}s ({events / max(elapsed, 1e-9):,.0f} events/s, "
              f"{n} process(es))", file=sys.stderr)
        if bad:
            raise typer.Exit(3)
