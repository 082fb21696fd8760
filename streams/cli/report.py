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
               config: Optional[Path] = typer.Option(None, "--config", "-c")) -> None:
        """Human click rate, placed-order rate and revenue per recipient per flow, step and variant, and
        what each variant adds over its holdout (95 % intervals), with the attribution window."""
        from streams.cli_settings import settings_from
        from streams.analytics import report as rep
        from streams.analytics.attribution import Attribution

        settings = settings_from(config)
        console = Console()
        try:
            if input_dir is not None:
                inputs = rep.read_avro_dir(settings, input_dir)
            else:
                from streams.kafka.embedded_broker import kafka_bootstrap

                if not settings.kafka.bootstrap_servers:
                    raise typer.BadParameter("set KAFKA_BOOTSTRAP_SERVERS or use --input-dir")
                with kafka_bootstrap(settings.kafka.bootstrap_servers, kafka=settings.kafka) as bs:
                    inputs = rep.read_topics(settings, bs)
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
               out: Path = typer.Option(..., "--out", help="directory for the .avro files"),
               start: Optional[str] = typer.Option(None, "--from", help="event time from (ISO-8601 or epoch ms)"),
               end: Optional[str] = typer.Option(None, "--to", help="event time to, exclusive"),
               config: Optional[Path] = typer.Option(None, "--config", "-c")) -> None:
        """Write topic ranges to Avro container files (schema embedded) for data teams."""
        from streams.kafka.embedded_broker import kafka_bootstrap
        from streams.cli_settings import settings_from
        from streams.tools.export import export_topic
        from streams.timeparse import parse_time_ms

        settings = settings_from(config)
        if not settings.kafka.bootstrap_servers:
            raise typer.BadParameter("set KAFKA_BOOTSTRAP_SERVERS")
        names = [settings.topics.name(t) if hasattr(settings.topics, t) else t for t in topics.split(",") if t]
        with kafka_bootstrap(settings.kafka.bootstrap_servers, kafka=settings.kafka) as bs:
            for name in names:
                path, n, skipped = export_topic(bs, name, out, parse_time_ms(start) if start else None,
                                                parse_time_ms(end) if end else None, kafka=settings.kafka)
                Console().print(f"{path}: {n} records" + (f" ({skipped} undecodable skipped)" if skipped else ""))
