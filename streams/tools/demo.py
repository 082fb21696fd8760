"""`shopmail demo`: the whole pipeline on one machine.

Embedded Tansu broker + moto SES server (HTTP, loopback) + topics + the processors (`shopmail
worker`) and the SES sink (`shopmail sink`) as child processes, a little live synthetic shop traffic,
then a wait for the emails, a table of what was sent, a tracking page from a shipping mail (fetched, and
saved), an audience export (hashed emails) and a clean shutdown (also on Ctrl-C). The tracking page
server (`shopmail tracking`) runs as a third child with a per-run token key.

Demo timing (documented in the README): abandoned-cart steps after 4 s / 8 s / 12 s instead of
1 h / 24 h / 72 h, browse abandonment after 6 s instead of 2 h, a 2 s lateness grace, clock ticks
every second, the marketing frequency cap at 1 s and quiet hours off, so a run takes about a minute
rather than three days.
"""

from __future__ import annotations

import json
import os
import random
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from schemas import serde
from streams.tools.traffic import live_traffic
from streams.config import Settings, load_settings
from streams.tools.cli_process import CliProcess

DEMO_OVERRIDES: dict[str, Any] = {
    "topics": {"partitions": 3},
    "worker": {"tick_interval_s": 1.0, "late_grace_ms": 2000, "store": "memory://", "batch_size": 200},
    "flows": {"abandoned_cart": {"delays_ms": [4000, 8000, 12000], "no_respam_ms": 1000},
              "browse_abandonment": {"delay_ms": 6000},
              "guards": {"frequency_cap_ms": 1000, "quiet_start_hour": 0, "quiet_end_hour": 0}},
    "ses": {"max_send_rate": 50.0},
    # time runs in seconds here: recipients open 1 s and click 2 s after the delivery
    "metrics": {"machine_open_within_ms": 500, "bot_click_within_ms": 1500},
}
DEMO_TOML = """# written by `shopmail demo` for its worker and sink
[[flows.experiments]]
name = "demo-cart-subject"
flow = "abandoned_cart"
step = 1
holdout = 0.2
variants = { control = 1.0, B = 1.0 }
"""


def demo_settings(config: Path | None, work: Path) -> Settings:
    import secrets

    from streams.kafka.embedded_broker import free_port

    demo_toml = work / "demo.toml"
    demo_toml.write_text(DEMO_TOML + ("" if config is None else f"# user config: {config}\n"))
    settings = load_settings(config or demo_toml, overrides=DEMO_OVERRIDES)
    settings.tracking.port = free_port()
    settings.tracking.base_url = f"http://127.0.0.1:{settings.tracking.port}/track"
    settings.tracking.secret = secrets.token_hex(16)  # per run: the demo's pages die with it
    if config is None:
        os.environ["SHOPMAIL_CONFIG"] = str(demo_toml)  # the children read the experiment from it
    return settings


def env_for(settings: Settings, bootstrap: str, ses_endpoint: str, data_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SHOPMAIL_TOPICS__PARTITIONS": str(settings.topics.partitions),
        "SHOPMAIL_TOPICS__PREFIX": settings.topics.prefix,
        "SHOPMAIL_WORKER__TICK_INTERVAL_S": str(settings.worker.tick_interval_s),
        "SHOPMAIL_WORKER__LATE_GRACE_MS": str(settings.worker.late_grace_ms),
        "SHOPMAIL_WORKER__STORE": settings.worker.store,
        "SHOPMAIL_WORKER__BATCH_SIZE": str(settings.worker.batch_size),
        "SHOPMAIL_WORKER__DATA_DIR": data_dir,
        "SHOPMAIL_WORKER__WEB_PORT": "0",
        "SHOPMAIL_SINK__WEB_PORT": "0",
        "SHOPMAIL_FLOWS__ABANDONED_CART__DELAYS_MS": ",".join(map(str, settings.flows.abandoned_cart.delays_ms)),
        "SHOPMAIL_FLOWS__ABANDONED_CART__NO_RESPAM_MS": str(settings.flows.abandoned_cart.no_respam_ms),
        "SHOPMAIL_FLOWS__BROWSE_ABANDONMENT__DELAY_MS": str(settings.flows.browse_abandonment.delay_ms),
        "SHOPMAIL_FLOWS__GUARDS__FREQUENCY_CAP_MS": str(settings.flows.guards.frequency_cap_ms),
        "SHOPMAIL_FLOWS__GUARDS__QUIET_START_HOUR": str(settings.flows.guards.quiet_start_hour),
        "SHOPMAIL_FLOWS__GUARDS__QUIET_END_HOUR": str(settings.flows.guards.quiet_end_hour),
        "SHOPMAIL_TRACKING__SECRET": settings.tracking.secret,
        "SHOPMAIL_TRACKING__BASE_URL": settings.tracking.base_url,
        "SHOPMAIL_TRACKING__PORT": str(settings.tracking.port),
        "SHOPMAIL_TRACKING__WEB_PORT": "0",
        "SHOPMAIL_SES__ENDPOINT_URL": ses_endpoint,
        "SHOPMAIL_SES__REGION": settings.ses.region,
        "SHOPMAIL_SES__MAX_SEND_RATE": str(settings.ses.max_send_rate),
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "demo"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "demo"),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def produce_traffic(settings: Settings, bootstrap: str, events: list[tuple[str, dict[str, Any]]]) -> None:
    """Events in their JSON form (validated here) to the input topics."""
    from streams.kafka.io import produce_events
    from streams.kafka.topics import VALUE_SCHEMA

    produce_events(settings, bootstrap, ((lt, serde.from_json(VALUE_SCHEMA[lt], obj)) for lt, obj in events))


def _read_outcomes(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    from streams.kafka.io import read_topic

    return [r.decoded().record for r in read_topic(bootstrap, topic, idle_s=0.3, timeout_s=10)]


def run_demo(customers: int = 40, config: Path | None = None, timeout_s: float = 120.0,
             console: Console | None = None) -> int:
    from moto.server import ThreadedMotoServer

    from streams.kafka.embedded_broker import EmbeddedBroker
    from streams.kafka.topics import ensure_topics, topic_specs

    import logging

    from streams.extras import require

    require("moto", "the demo's SES emulator")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    console = console or Console(width=max(Console().width, 132))
    work = Path(tempfile.mkdtemp(prefix="shopmail-demo-"))
    settings = demo_settings(config, work)
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    children: dict[str, CliProcess] = {}
    broker = EmbeddedBroker(log_path=work / "tansu.log")
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    try:
        with console.status("starting the embedded Kafka broker (Tansu)…"):
            broker.start()
        console.print(f"[green]✓[/green] broker on {broker.bootstrap}")
        with console.status("starting the SES emulator (moto server)…"):
            moto.start()
            host, port = moto.get_host_and_port()
            ses_endpoint = f"http://{host}:{port}"
            import boto3

            boto3.client("sesv2", endpoint_url=ses_endpoint, region_name=settings.ses.region,
                         aws_access_key_id="demo", aws_secret_access_key="demo").create_email_identity(
                EmailIdentity=settings.ses.from_address)
        console.print(f"[green]✓[/green] SES emulator on {ses_endpoint} (sender {settings.ses.from_address} verified)")
        report = ensure_topics(broker.bootstrap, topic_specs(settings), kafka=settings.kafka)
        console.print(f"[green]✓[/green] {len(report.created) + len(report.ok)} topics ready")
        env = env_for(settings, broker.bootstrap, ses_endpoint, str(work / "state"))
        for name, args in (("worker", ["worker", "--instance-id", "demo-worker-0"]), ("sink", ["sink"]),
                           ("tracking", ["tracking"])):
            children[name] = CliProcess(args, env, work / f"{name}.log")
        events, traffic = live_traffic(customers, shop_url=settings.flows.shop_url)
        produce_traffic(settings, broker.bootstrap, events)
        console.print(f"[green]✓[/green] produced {len(events)} shop events: {traffic.customers} customers, "
                      f"{traffic.orders} orders, {traffic.abandoned} abandoned carts, {traffic.shipments} shipments, "
                      f"{traffic.browsing} buyers browsing on")
        outcomes_topic = settings.topics.name("outcomes")
        deadline = time.monotonic() + timeout_s
        outcomes: list[dict[str, Any]] = []
        with console.status("waiting for emails (abandoned-cart steps fire after 4 s / 8 s / 12 s)…") as status:
            settled_since: float | None = None
            while not stop.is_set() and time.monotonic() < deadline:
                for name, child in children.items():
                    if not child.alive():
                        raise RuntimeError(f"{name} exited ({child.proc.returncode}):\n{child.log(1500)}")
                outcomes = _read_outcomes(broker.bootstrap, outcomes_topic)
                ac3 = sum(1 for o in outcomes if o["flow"] == "abandoned_cart" and o["step"] == 3)
                status.update(f"waiting for emails… {len(outcomes)} outcomes so far, {ac3} third reminders")
                transactional = sum(1 for o in outcomes if o["category"] == "transactional")
                browse = sum(1 for o in outcomes if o["flow"] == "browse_abandonment")
                if transactional >= traffic.expected_transactional and ac3 > 0 and (browse or not traffic.browsing):
                    settled_since = settled_since or time.monotonic()
                    if time.monotonic() - settled_since > 4:
                        break
                time.sleep(1.0)
        if stop.is_set():
            console.print("[yellow]interrupted: shutting down cleanly[/yellow]")
        print_sent_table(console, outcomes)
        if not stop.is_set() and outcomes:
            with console.status("recipients open and click; some come back and buy…"):
                n_events, n_orders = simulate_recipients(settings, broker.bootstrap, outcomes)
                time.sleep(3)
            console.print(f"[green]✓[/green] {n_events} SES events through the bridge, {n_orders} orders from clicks")
            show_tracking_page(console, settings, broker.bootstrap, work)
            show_audiences(console, settings, broker.bootstrap, work)
        _print_metrics_report(console, settings, broker.bootstrap, work)
        console.print(f"logs and outputs: {work}")
        return 0 if outcomes or stop.is_set() else 1
    finally:
        with console.status("shutting down…"):
            for child in reversed(children.values()):
                child.terminate(20)
            try:
                moto.stop()
            except Exception:  # noqa: BLE001 - never started
                pass
            broker.stop()
        signal.signal(signal.SIGINT, previous)
        console.print("[green]✓[/green] stopped broker, SES emulator, worker, sink and tracking page")


def simulate_recipients(settings: Settings, bootstrap: str, outcomes: list[dict[str, Any]],
                        seed: int = 3) -> tuple[int, int]:
    """SES events for the sent emails (delivery, opens, clicks) fed through the SES events bridge, and
    orders from some of the clickers (attributed to the clicked email by the shop)."""
    from datetime import datetime, timezone

    from sinks.ses_bridge import Bridge

    rnd = random.Random(seed)
    bridge = Bridge(settings, bootstrap)
    orders: list[tuple[str, dict[str, Any]]] = []
    n = 0
    now = int(time.time() * 1000)
    iso = lambda ms: datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()  # noqa: E731
    for o in outcomes:
        if o["outcome"] != "sent":
            continue
        mail = {"messageId": o["message_id"], "timestamp": iso(now),
                "tags": {"command_id": [o["command_id"]], "customer_id": [o["customer_id"]], "flow": [o["flow"]]}}
        kinds = ["Delivery"] + (["Open"] if o["category"] == "marketing" and rnd.random() < 0.55 else [])
        if "Open" in kinds and rnd.random() < 0.45:
            kinds.append("Click")
        timed = [(kind, 1000 * (i + 1)) for i, kind in enumerate(kinds)]
        if o["category"] == "marketing" and "Open" not in kinds and n % 2:  # a pre-fetch at delivery: a machine open
            timed.append(("Open", 1200))
        for kind, after_ms in timed:
            detail = {"timestamp": iso(now + after_ms)}
            if kind == "Click":
                detail["link"] = "https://shop.example.com/cart"
            event = {"eventType": kind, "mail": mail, kind[0].lower() + kind[1:]: detail}
            bridge.handle(json.dumps(event).encode(), "demo-ses-events", n)
            n += 1
        if "Click" in kinds and o["flow"] == "abandoned_cart" and rnd.random() < 0.5:
            oid = f"{o['customer_id']}-back-{o['step']}"
            orders.append(("orders", {"event_id": f"{oid}-placed", "customer_id": o["customer_id"],
                                      "occurred_at": now + 5000, "type": "placed", "order_id": oid,
                                      "email": f"{o['customer_id']}@example.com", "currency": "EUR",
                                      "items": [{"sku": "MUG-01", "name": "Enamel camp mug", "price": "14.00",
                                                 "quantity": 1}], "total": "14.00",
                                      "attributed_command_id": o["command_id"]}))
    bridge.flush()
    produce_traffic(settings, bootstrap, orders)
    return n, len(orders)


def show_tracking_page(console: Console, settings: Settings, bootstrap: str, work: Path,
                       timeout_s: float = 15.0) -> str | None:
    """The tracking page a shipping mail links to: fetched from the running `shopmail tracking`, saved."""
    import urllib.error
    import urllib.request

    from streams.kafka.io import read_topic
    from streams.tracking.tokens import tracking_page_url

    urls = []
    for r in read_topic(bootstrap, settings.topics.name("commands"), idle_s=0.3, timeout_s=10):
        cmd = r.decoded().record
        if cmd["flow"] in ("shipping_confirmation", "tracking_update"):
            # the link the sink signs into the mail at render time (the command carries the order id)
            url = tracking_page_url(settings, json.loads(cmd["context"]).get("order_id") or "", cmd["customer_id"],
                                    cmd.get("locale"))
            if url:
                urls.append(url)
    if not urls:
        console.print("[yellow]no shipping mail links a tracking page (is tracking.secret set?)[/yellow]")
        return None
    url = urls[-1]  # the latest status mail
    deadline = time.monotonic() + timeout_s
    problem = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - the demo's own loopback server
                html = resp.read()
            page = work / "tracking-page.html"
            page.write_bytes(html)
            console.print(f"[green]✓[/green] tracking page from a shipping mail opens (HTTP 200, {len(html):,} bytes): "
                          f"{url}\n  saved as {page}")
            return url
        except (urllib.error.URLError, OSError) as exc:  # the view may trail the commands by a moment
            problem = str(exc)
            time.sleep(0.5)
    console.print(f"[red]tracking page did not open: {problem}[/red] {url}")
    return None


def show_audiences(console: Console, settings: Settings, bootstrap: str, work: Path) -> Path:
    """The retargeting audiences now, and one exported as an ad platform's customer list."""
    from streams.tools.audiences import read_topic, write_csv

    state = read_topic(settings, bootstrap)
    table = Table("audience", "members", "left", title="Retargeting audiences (audience.memberships)")
    for name, (members, left) in state.counts().items():
        table.add_row(name, str(members), str(left))
    console.print(table)
    path = work / "audience-abandoned_cart_open.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        n = write_csv(state.members("abandoned_cart_open"), f, "meta")
    console.print(f"[green]✓[/green] audience export: {n} hashed emails of abandoned_cart_open for Meta → {path}")
    return path


def print_sent_table(console: Console, outcomes: list[dict[str, Any]]) -> None:
    counts: dict[tuple[str, int, str], int] = {}
    for o in outcomes:
        key = (o["flow"], o["step"], o["outcome"] + (f" ({o['reason']})" if o.get("reason") else ""))
        counts[key] = counts.get(key, 0) + 1
    table = Table("flow", "step", "outcome", "emails", title="What the sink did")
    for (flow, step, outcome), n in sorted(counts.items()):
        table.add_row(flow, str(step), outcome, str(n))
    console.print(table)


def _print_metrics_report(console: Console, settings: Settings, bootstrap: str, work: Path) -> None:
    from streams.analytics.report import demo_report

    demo_report(console, settings, bootstrap, work)


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(customers: int = typer.Option(40, help="synthetic customers"),
             config: Path | None = typer.Option(None, "--config", "-c", help="TOML config file"),
             timeout: float = typer.Option(120.0, help="seconds to wait for the emails")) -> None:
        """Run the whole pipeline on an embedded broker + SES emulator with synthetic traffic."""
        raise typer.Exit(run_demo(customers, config, timeout))

