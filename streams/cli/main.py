"""The ``shopmail`` command line.  Each subcommand lives in the module that owns the capability;
this file only wires them into one typer app."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from streams.cli_settings import settings_from
from streams.config import ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="shopmail: Kafka-native lifecycle email pipeline (processors, SES sink, tools).")
console = Console(stderr=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="TOML config file (default: $SHOPMAIL_CONFIG)")


EXIT_KAFKA_UNREACHABLE = 3  # the cluster could not be reached or refused us (README "Exit codes")
_debug = False


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="show the traceback of a failure")) -> None:
    """shopmail: Kafka-native lifecycle email pipeline."""
    global _debug
    _debug = debug


@app.command()
def topics(config: Optional[Path] = ConfigOpt,
           verify_only: bool = typer.Option(False, "--verify", help="only verify; create nothing"),
           as_json: bool = typer.Option(False, "--json", help="print the topic list as JSON and exit")) -> None:
    """Create or verify every shopmail topic (idempotent); exit 1 on a mismatch."""
    from streams.kafka.embedded_broker import kafka_bootstrap
    from streams.kafka.topics import ensure_topics, topic_specs

    settings = settings_from(config)
    specs = topic_specs(settings)
    if as_json:
        print(json.dumps([s.as_dict() for s in specs], indent=2))
        return
    if not settings.kafka.bootstrap_servers:
        console.print("[red]set KAFKA_BOOTSTRAP_SERVERS (or kafka.bootstrap_servers) to the cluster to provision[/red]")
        raise typer.Exit(2)
    with kafka_bootstrap(settings.kafka.bootstrap_servers, kafka=settings.kafka) as bootstrap:
        report = ensure_topics(bootstrap, specs, create=not verify_only, kafka=settings.kafka)
    table = Table("topic", "status")
    for name in report.created:
        table.add_row(name, "[green]created[/green]")
    for name in report.ok:
        table.add_row(name, "ok")
    for line in report.mismatches:
        table.add_row(line.split(":")[0], f"[red]{line.split(':', 1)[1].strip()}[/red]")
    Console().print(table)
    if not report.healthy:
        raise typer.Exit(1)


def _register() -> None:
    """Subcommands owned by other modules; each module imports its heavy dependencies only when its
    command runs, so wiring them here stays cheap."""
    from bench import cli as bench_cli
    from sinks import cli as sink_cli
    from sinks import customer_cli
    from streams.cli import audiences, replay, report, simulate, worker
    from streams.cli import explain as explain_cli
    from streams.cli import schemas as schemas_cli
    from streams.tools import demo
    from streams.tracking import cli as tracking_cli

    for module in (worker, sink_cli, demo, simulate, replay, report, tracking_cli, bench_cli, customer_cli,
                   audiences, schemas_cli):
        module.register(app)
    explain_cli.register(app)


_register()


def main() -> None:
    """Run the app; a cluster that cannot be reached is one line on stderr (the bootstrap servers and the
    cause) and exit code 3, invalid security settings one line and exit code 2; a file that cannot be
    opened (missing, a directory, no permission) or a missing optional extra one line and exit code 2;
    the traceback only with ``--debug``."""
    from schemas.serde import RegistryStartupError
    from streams.compiled import stale_in_checkout, stale_message
    from streams.extras import MissingExtra
    from streams.kafka.io import KafkaConnectError, TopicReadTimeout
    from streams.runtime.gc_policy import own_process

    own_process()  # the collector policy of the streaming commands applies (streams/runtime/gc_policy.py)
    old = stale_in_checkout()
    if old:  # Python imports a compiled module in place of its source: the code edited since would not run
        print(f"shopmail: warning: {stale_message(old)}", file=sys.stderr)
    try:
        app(prog_name="shopmail")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        if _debug or exc.filename is None:  # not a path someone typed: a bug, with its traceback
            raise
        print(f"shopmail: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        sys.exit(2)
    except MissingExtra as exc:  # an optional capability asked for without its extra: the pip command
        if _debug:
            raise
        print(f"shopmail: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except RegistryStartupError as exc:  # registry output framing and no ids for what it writes
        if _debug:
            raise
        print(f"shopmail: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (KafkaConnectError, ConfigError) as exc:  # a ConfigError here: security settings, read at connect
        if _debug:
            raise
        kind = "error" if isinstance(exc, KafkaConnectError) else "config error"
        print(f"shopmail: {kind}: {exc}", file=sys.stderr)
        sys.exit(EXIT_KAFKA_UNREACHABLE if isinstance(exc, KafkaConnectError) else 2)
    except TopicReadTimeout as exc:  # a whole-topic read (replay, export, report) that did not reach the end
        if _debug:
            raise
        print(f"shopmail: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except RuntimeError as exc:  # last (the errors above are RuntimeErrors): the browser `preview --png` needs
        from sinks.preview import BrowserError

        if _debug or not isinstance(exc, BrowserError):
            raise
        print(f"shopmail: error: {exc} (`preview --no-png` renders without a browser)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(main())
