"""`shopmail replay`: what would the processors (maybe with another config) have sent? And
`shopmail replay cleanup PREFIX`: delete the prefixed topics a replay left behind."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console


def _time_window(start: Optional[str], end: Optional[str]) -> tuple[int | None, int | None]:
    from streams.timeparse import parse_time_ms

    try:
        window = (parse_time_ms(start) if start else None, parse_time_ms(end) if end else None)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if window[0] is not None and window[1] is not None and window[1] <= window[0]:
        raise typer.BadParameter(f"the range is empty: --to ({end}) is not after --from ({start})")
    return window


def _diff_doc(result: Any) -> dict[str, Any]:
    """The diff as JSON: epoch values as they are in the topics, and each change in words too."""
    from streams.tools.readable import change_text, duration, is_time_field

    d = result.diff
    changed = []
    for old, new, fields in d.changed:
        deltas = {f: duration(new[f] - old[f]) for f in fields
                  if is_time_field(f) and isinstance(old.get(f), int) and isinstance(new.get(f), int)}
        changed.append({"production": old, "replay": new, "fields": fields,
                        "changes": [change_text(f, old.get(f), new.get(f)) for f in fields], "deltas": deltas,
                        **_cause(result, new)})
    differing = {str(c["customer_id"]) for c in d.differing()}
    return {"prefix": result.replay_prefix, "order": result.order, "copied": result.copied, "summary": d.summary(),
            "added": [{**c, **_cause(result, c)} for c in d.added],
            "removed": [{**c, **_cause(result, c)} for c in d.removed], "changed": changed,
            "late_facts": {cid: [result.late_fact_doc(x) for x in late]
                           for cid, late in sorted(result.late.items()) if cid in differing},
            "records_before_range": {cid: n for cid, n in sorted(result.before.items()) if cid in differing},
            "arrival_unknown": {cid: n for cid, n in sorted(result.unknown_arrival.items()) if cid in differing}}


def _cause(result: Any, command: dict[str, Any]) -> dict[str, Any]:
    why = result.likely_cause(command)
    return {"likely_cause": why, **result.causes(command)} if why else {}


def _labelled(result: Any) -> list[dict[str, Any]]:
    """The differing commands with a cause other than the config."""
    return [c for c in result.diff.differing() if result.likely_cause(c)]


def _print_diff(console: Console, result: Any, show: int) -> None:
    from streams.tools.readable import change_text, iso, table

    d = result.diff
    prefix = result.replay_prefix
    console.print(table(f"Inputs copied into the topics prefixed {prefix!r}", ("input", "records"),
                        list(result.copied.items())))
    rows: list[tuple[str, ...]] = []
    for c in d.added[:show]:
        rows.append(("[green]added[/green]", c["command_id"], c["flow"], str(c["step"]), c["customer_id"],
                     f"send_at {iso(c['send_at'])}", result.likely_cause(c)))
    for c in d.removed[:show]:
        rows.append(("[red]removed[/red]", c["command_id"], c["flow"], str(c["step"]), c["customer_id"],
                     f"send_at {iso(c['send_at'])}", result.likely_cause(c)))
    for old, new, fields in d.changed[:show]:
        rows.append(("[yellow]changed[/yellow]", new["command_id"], new["flow"], str(new["step"]),
                     new["customer_id"], "\n".join(change_text(f, old.get(f), new.get(f)) for f in fields),
                     result.likely_cause(new)))
    labelled = _labelled(result)
    late, customers = len(labelled), len({c["customer_id"] for c in labelled})
    if rows:
        columns = ("change", "command_id", "flow", "step", "customer", "detail", "likely cause")
        if not late:
            columns, rows = columns[:-1], [r[:-1] for r in rows]
        console.print(table(f"Commands that differ (first {show} of each kind)", columns, rows,
                            numeric_from=len(columns)))
    s = d.summary()
    console.print(table("Replay against production (commands by command_id)", tuple(s), [tuple(s.values())],
                        numeric_from=0))
    console.print("identical to production" if d.identical else
                  f"{s['added']} added, {s['removed']} removed, {s['changed']} changed, {s['unchanged']} unchanged")
    if late:
        remedies = "; ".join(result.remedies(labelled))
        console.print(f"{late} of the differences ({customers} customer(s)) have a likely cause in the log other than "
                      f"the config (see 'likely cause'): " + (f"{remedies}." if remedies else "see the labels.")
                      + (" A replay with production's config shows which differences the config makes."
                         if result.other_config else ""), soft_wrap=True)


def _refuse(production: Any, prefix: str, console: Console) -> None:
    from streams.tools.replay import cleanup_refusal

    why = cleanup_refusal(production, prefix)
    if why:
        console.print(f"[red]replay cleanup: refusing prefix {prefix!r}: {why}[/red]")
        raise typer.Exit(2)


def _cleanup(production: Any, bootstrap: str, prefix: str, yes: bool, console: Console) -> None:
    """List the replay topics under ``prefix`` (the names a replay with it creates; other topics that
    merely start with it are named and left alone), confirm (unless ``yes``), delete, and say what
    happened."""
    from streams.tools.readable import table
    from streams.kafka.topics import delete_topics
    from streams.tools.replay import replay_topics

    _refuse(production, prefix, console)
    names, others = replay_topics(bootstrap, production, prefix)
    if others:
        console.print(f"left alone: {len(others)} topic(s) starting with {prefix!r} that a replay does not create: "
                      + ", ".join(others), soft_wrap=True)
    if not names:
        console.print(f"[red]replay cleanup: no replay topic under {prefix!r}[/red]")
        raise typer.Exit(1)
    console.print(f"replay topics under {prefix!r} ({len(names)}):")
    for name in names:
        console.print(f"  {name}")
    if not yes:
        if not sys.stdin.isatty():
            console.print("[red]replay cleanup: not a terminal, so nothing to confirm with: add --yes[/red]")
            raise typer.Exit(2)
        if not typer.confirm(f"delete these {len(names)} topics?", default=False):
            console.print("nothing deleted")
            raise typer.Exit(1)
    results = delete_topics(bootstrap, names, production.kafka)
    console.print(table("Deleted", ("topic", "result"),
                        [(n, "deleted" if err is None else f"[red]{err}[/red]") for n, err in results.items()],
                        numeric_from=2))
    if any(err is not None for err in results.values()):
        raise typer.Exit(1)


def _cleanup_own(production: Any, bootstrap: str, prefix: str, created: list[str]) -> None:
    """``--cleanup``: delete exactly the topics this run created, never another topic with the prefix
    (a replay refused at start created none, so an earlier replay's topics stay)."""
    from streams.kafka.topics import delete_topics

    err = Console(stderr=True, soft_wrap=True)
    if not created:
        err.print(f"cleanup: nothing to delete: this replay created no topic under {prefix!r}")
        return
    removed = delete_topics(bootstrap, created, production.kafka)
    failed = {n: e for n, e in removed.items() if e is not None}
    err.print(f"cleanup: deleted the {len(removed) - len(failed)} topics this replay created under {prefix!r}"
              + (f"; could not delete {failed}" if failed else ""))


def register(app: typer.Typer) -> None:
    replay_app = typer.Typer(invoke_without_command=True, no_args_is_help=False, add_completion=False)

    @replay_app.callback()
    def replay(ctx: typer.Context,
               prefix: Optional[str] = typer.Option(None, "--prefix",
                                                    help="topic prefix of the replay, e.g. 'replay-nov.'"),
               start: Optional[str] = typer.Option(None, "--from", help="event time from (ISO-8601 or epoch ms)"),
               end: Optional[str] = typer.Option(None, "--to", help="event time to, exclusive"),
               config: Optional[Path] = typer.Option(None, "--config", "-c", help="production config"),
               with_config: Optional[Path] = typer.Option(None, "--with-config",
                                                          help="config to replay with (default: production's)"),
               as_json: Optional[Path] = typer.Option(None, "--json", help="write the diff as JSON"),
               show: int = typer.Option(10, help="rows of each difference to print"),
               cleanup: bool = typer.Option(False, "--cleanup",
                                            help="delete the prefixed topics the replay created when done"),
               order: str = typer.Option("event-time", "--order",
                                         help="event-time: apply the records in event-time order; arrival: in "
                                              "the order they reached production's topics, as a worker that "
                                              "kept up did (a fact that came late is applied late again)"),
               quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress display")) -> None:
        """Re-run the processors over a time range into prefixed topics and diff against production
        (`replay cleanup PREFIX` deletes a replay's topics)."""
        if ctx.invoked_subcommand is not None:
            return
        from streams.kafka.embedded_broker import kafka_bootstrap
        from streams.cli_settings import settings_from
        from streams.tools.readable import console_for, progress
        from streams.tools.replay import EmptyRange, ReplayError, TimeRange, prefix_refusal, run_replay

        if not prefix:
            raise typer.BadParameter("give the replay's topic prefix, e.g. --prefix replay-nov.", param_hint="--prefix")
        if order not in ("arrival", "event-time"):
            raise typer.BadParameter(f"{order!r}: give arrival or event-time", param_hint="--order")
        if as_json is not None and not as_json.parent.is_dir():  # before the work, not after it
            raise typer.BadParameter(f"{as_json}: no such directory {as_json.parent}", param_hint="--json")
        production = settings_from(config)
        other = settings_from(with_config) if with_config else None
        from streams.runtime.gc_policy import check, tune_for_streaming

        if other is not None:  # production's settings are checked too, though the replay runs with these
            check(production.worker.gc_young_threshold)
        tune_for_streaming((other or production).worker.gc_young_threshold)
        window = TimeRange(*_time_window(start, end))
        why = prefix_refusal(production, prefix)
        if why:  # before any work: a replay's topics never sit among production's
            Console(stderr=True, soft_wrap=True).print(f"[red]replay: refusing prefix {prefix!r}: {why}[/red]")
            raise typer.Exit(2)
        if not production.kafka.bootstrap_servers:
            raise typer.BadParameter("set KAFKA_BOOTSTRAP_SERVERS to the cluster holding the production topics")
        console = console_for()
        created: list[str] = []  # what this run created: the only topics --cleanup deletes
        with kafka_bootstrap(production.kafka.bootstrap_servers, kafka=production.kafka) as bootstrap:
            try:
                with progress("copying inputs", quiet=quiet) as bar:
                    result = run_replay(production, bootstrap, prefix, window, other, created=created,
                                        progress=lambda what, done, total: (bar.total(total), bar.to(done, what)),
                                        order=order.replace("-", "_"))
            except EmptyRange as exc:  # nothing to show (the data tools' exit 1), one line
                Console(stderr=True, soft_wrap=True).print(f"[red]replay: {exc}[/red]")
                raise typer.Exit(1) from exc
            except ReplayError as exc:
                console.print(f"[red]replay failed:[/red] {exc}")
                raise typer.Exit(1) from exc
            finally:
                if cleanup:
                    _cleanup_own(production, bootstrap, prefix, created)
        if as_json:
            as_json.write_text(json.dumps(_diff_doc(result), indent=2) + "\n")
        _print_diff(console, result, show)
        if as_json:
            console.print(f"wrote {as_json}")

    @replay_app.command("cleanup")
    def replay_cleanup(prefix: str = typer.Argument(..., help="delete the topics a replay with this prefix created"),
                       yes: bool = typer.Option(False, "--yes", "-y", help="delete without asking"),
                       config: Optional[Path] = typer.Option(None, "--config", "-c", help="production config")) -> None:
        """Delete a replay's topics: the names a replay with PREFIX creates (another topic that merely
        starts with PREFIX is named and left alone).

        Refuses an empty prefix and one that matches a production topic; lists what it deletes and
        asks first (--yes skips that)."""
        from streams.kafka.embedded_broker import kafka_bootstrap
        from streams.cli_settings import settings_from
        from streams.tools.readable import console_for

        production = settings_from(config)
        _refuse(production, prefix, Console(stderr=True))
        if not production.kafka.bootstrap_servers:
            raise typer.BadParameter("set KAFKA_BOOTSTRAP_SERVERS to the cluster holding the replay topics")
        with kafka_bootstrap(production.kafka.bootstrap_servers, kafka=production.kafka) as bootstrap:
            _cleanup(production, bootstrap, prefix, yes, console_for())

    app.add_typer(replay_app, name="replay")
