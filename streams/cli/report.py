"""`shopmail report` and `shopmail export`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    @app.command()
    def report(input_dir: Optional[Path] = typer.Option(None, "--input-dir", help="read `shopmail export` files"),
               by_day: bool = typer.Option(False, "--by-day", help="one row per UTC day of the send"),
               csv_path: Optional[Path] = typer.Option(None, "--csv"),
               json_path: Optional[Path] = typer.Option(None, "--json"),
               chart: Optional[Path] = typer.Option(None, "--chart", help="write a PNG chart"),
               quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
               config: Optional[Path] = typer.Option(None, "--config", "-c")) -> None:
        """Human click rate, placed-order rate and revenue per recipient per flow, step and variant, and
        what each variant adds over its holdout (95 % intervals), with the attribution window."""
        from streams.cli_settings import settings_from
        from streams.analytics import report as rep
        from streams.analytics.attribution import Attribution

        from streams.tools.readable import console_for

        settings = settings_from(config)
        console = console_for()
        try:
            if input_dir is not None:
                inputs = rep.read_avro_dir(settings, input_dir)
            else:
                from streams.kafka.embedded_broker import kafka_bootstrap

                if not settings.kafka.bootstrap_servers:
                    raise typer.BadParameter("set KAFKA_BOOTSTRAP_SERVERS or use --input-dir")
                from streams.tools.readable import progress

                with kafka_bootstrap(settings.kafka.bootstrap_servers, kafka=settings.kafka) as bs, \
                        progress("reading the topics", quiet=quiet) as bar:
                    inputs = rep.read_topics(settings, bs, progress=lambda name: lambda done, total: (
                        bar.total(total), bar.to(done, f"reading {name}")))
            report = rep.build(Attribution(settings.metrics).feed(inputs.records), by_day=by_day, inputs=inputs)
        except rep.EmptyReport as exc:
            Console(stderr=True, soft_wrap=True).print(f"[red]report: {exc}[/red]")
            raise typer.Exit(1) from exc
        rep.print_report(console, report)
        for path, write in ((csv_path, rep.write_csv), (json_path, rep.write_json), (chart, rep.write_chart)):
            if path:
                write(report, path)
                console.print(f"wrote {path}")

    @app.command()
    def export(topics: str = typer.Option("carts,orders,shipments,customers,feedback,commands,outcomes",
                                          help="logical topic names (or full names), comma separated"),
               out: Path = typer.Option(..., "--out", help="directory for the files"),
               start: Optional[str] = typer.Option(None, "--from", help="event time from (ISO-8601 or epoch ms)"),
               end: Optional[str] = typer.Option(None, "--to", help="event time to, exclusive"),
               fmt: str = typer.Option("avro", "--format", help="avro (schema embedded) or parquet (with "
                                       "kafka_partition, kafka_offset, kafka_key, kafka_timestamp columns)"),
               json_path: Optional[Path] = typer.Option(None, "--json", help="write what was exported as JSON"),
               quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
               config: Optional[Path] = typer.Option(None, "--config", "-c")) -> None:
        """Write topic ranges to Avro container files or Parquet files for data teams."""
        import json
        from dataclasses import fields

        from rich.markup import escape

        from streams.cli_settings import settings_from
        from streams.extras import MissingExtra
        from streams.kafka.embedded_broker import kafka_bootstrap
        from streams.timeparse import parse_time_ms
        from streams.tools.export import FORMATS, ExportError, check_range, export_topic, missing_topics, out_dir_problem
        from streams.tools.readable import console_for, iso, progress, table

        err = Console(stderr=True, soft_wrap=True)
        if fmt not in FORMATS:
            raise typer.BadParameter(f"{fmt!r} is not a format: choose {' or '.join(FORMATS)}", param_hint="--format")
        problem = out_dir_problem(out)
        if problem:  # before reading anything
            err.print(f"[red]export: {escape(problem)}[/red]")
            raise typer.Exit(2)
        try:
            start_ms, end_ms = (parse_time_ms(start) if start else None), (parse_time_ms(end) if end else None)
            check_range(start_ms, end_ms)
        except (ValueError, ExportError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--from/--to") from exc
        if fmt == "parquet":
            try:
                from streams.extras import require

                require("pyarrow", "Parquet export")
            except MissingExtra as exc:
                err.print(f"[red]export:[/red] {escape(str(exc))}")
                raise typer.Exit(2) from exc
        settings = settings_from(config)
        logical = {f.name for f in fields(settings.topics) if isinstance(getattr(settings.topics, f.name), str)
                   and f.name != "prefix"}
        asked = [t.strip() for t in topics.split(",") if t.strip()]
        if not asked:
            raise typer.BadParameter("name at least one topic", param_hint="--topics")
        if not settings.kafka.bootstrap_servers:
            raise typer.BadParameter("set KAFKA_BOOTSTRAP_SERVERS")
        names = [settings.topics.name(t) if t in logical else t for t in asked]
        summary: list[dict[str, object]] = []
        with kafka_bootstrap(settings.kafka.bootstrap_servers, kafka=settings.kafka) as bs:
            unknown = missing_topics(bs, names, settings.kafka)
            if unknown:
                err.print(f"[red]export: no such topic: {escape(', '.join(unknown))}[/red] (logical names: "
                          f"{', '.join(sorted(logical))}; or give a full topic name)")
                raise typer.Exit(2)
            for name in names:
                with progress(f"reading {name}", quiet=quiet) as bar:
                    path, n, skipped = export_topic(bs, name, out, start_ms, end_ms, kafka=settings.kafka, fmt=fmt,
                                                    progress=lambda done, total: (bar.total(total), bar.to(done)))
                summary.append({"topic": name, "file": str(path) if path is not None else None, "records": n,
                                "skipped": skipped})
        span = f"{iso(start_ms) if start_ms is not None else 'the beginning'} to " \
               f"{iso(end_ms) if end_ms is not None else 'the end'}"
        if not any(r["records"] for r in summary):  # no file was written: one line, no table
            err.print(f"[red]export: nothing matched: no record in {escape(', '.join(names))} from {span}; "
                      f"no file written[/red]")
            raise typer.Exit(1)
        console_for().print(table(f"Exported ({fmt}, event time from {span})", ("topic", "file", "records", "skipped"),
                              [(r["topic"], r["file"] or "– (no record)", r["records"], r["skipped"])
                               for r in summary],
                              numeric_from=2))
        if json_path:
            json_path.write_text(json.dumps({"format": fmt, "from": start_ms, "to": end_ms,
                                             "from_iso": iso(start_ms) if start_ms is not None else None,
                                             "to_iso": iso(end_ms) if end_ms is not None else None,
                                             "topics": summary}, indent=2) + "\n")
