"""Chaos: valid and hostile records mixed, worker and sink killed with SIGKILL at random moments, while
every HTTP listener is being fuzzed.

Real `shopmail worker` and `shopmail sink` processes, the real broker and moto's HTTP server. Every
valid order must be confirmed by exactly one command and emailed at most once (or reported), the
pipeline must keep going after every kill, and every hostile record must end with a reason: a dead
letter, or a `failed` outcome that names it. Meanwhile real `shopmail tracking`, `shopmail
unsubscribe-server` and `shopmail ses-bridge --http-port` processes are fuzzed from their OpenAPI
descriptions: none answers 5xx, hangs or drops a connection, none exits, and the tracking page of the
30,000-item order is served."""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter

import pytest
from confluent_kafka import Producer

from schemas import serde
from streams.kafka.io import producer_config, read_topic
from streams.kafka.topics import ensure_topics, topic_specs
from streams.tracking.tokens import make_token
from tests.support.fuzz import FuzzReport, fuzz
from tests.support.procs import CliProcess, settings_env, wait_for
from tests.support.sink import point_at_ses, verify_sender
from tests.support.sns import TOPIC

pytestmark = pytest.mark.integration

COMMAND_HEADER = re.compile(r"X-Shopmail-Command-Id: ([^\r\n]+)")


def _now() -> int:
    return int(time.time() * 1000)


def _profile(cid: str, **extra: object) -> dict:
    rec = {"event_id": f"{cid}-p", "customer_id": cid, "occurred_at": _now(), "type": "upserted",
           "email": f"{cid}@example.com", "first_name": "Ann", "locale": "en", "timezone": "UTC",
           "marketing_opt_in": True}
    rec.update(extra)
    return serde.from_json("CustomerEvent", rec)


def _order(cid: str, **extra: object) -> dict:
    rec = {"event_id": f"{cid}-o", "customer_id": cid, "occurred_at": _now(), "type": "placed",
           "order_id": f"{cid}-order", "email": f"{cid}@example.com", "total": "9.00", "currency": "EUR",
           "items": [{"sku": "MUG", "name": "Mug", "price": "9.00", "quantity": 1}]}
    rec.update(extra)
    return serde.from_json("OrderEvent", rec)


class Shop:
    def __init__(self, kafka: str, settings) -> None:
        self.settings = settings
        self.producer = Producer(producer_config(settings, kafka, **{"message.max.bytes": 8_000_000}))

    def send(self, topic: str, schema: str, rec: dict | bytes, key: bytes | None = None) -> None:
        value = rec if isinstance(rec, bytes) else serde.encode(schema, rec)
        if key is None and isinstance(rec, dict):
            key = rec["customer_id"].encode()
        self.producer.produce(self.settings.topics.name(topic), key=key, value=value)
        self.producer.poll(0)

    def flush(self) -> None:
        self.producer.flush(30)


def _hostile(shop: Shop) -> None:
    """One of every record that stopped a worker or the sink before (issue table)."""
    shop.send("customers", "CustomerEvent", _profile("h-locale", locale="xx"))
    shop.send("orders", "OrderEvent", _order("h-locale"))
    shop.send("orders", "OrderEvent", _order("h-crlf", email="crlf@example.com\r\nBcc: evil@x.com"))
    shop.send("customers", "CustomerEvent", _profile("h-bigname", first_name="N" * 400_000))
    shop.send("orders", "OrderEvent", _order("h-bigname"))
    shop.send("orders", "OrderEvent", _order("h-5mb", items=[{"sku": f"S{i}", "name": "x" * 500, "price": "1.00",
                                                               "quantity": 1} for i in range(10_000)]))
    shop.send("orders", "OrderEvent", _order("", event_id="h-empty-o"), key=b"")
    shop.send("orders", "OrderEvent", _order("h-key"), key=b"someone-else")
    shop.send("orders", "OrderEvent", b"\xc3\x01garbage, not avro", key=b"h-garbage")
    shop.send("orders", "OrderEvent", _order("h-future", occurred_at=32_503_680_000_000))  # the year 3000
    shop.send("orders", "OrderEvent", _order("h-30k", items=[{"sku": f"S{i}", "name": "x", "price": "0.01",
                                                              "quantity": 1} for i in range(30_000)]))  # 440 KB


TRACKING_KEY = "chaos-tracking-key"
LISTENERS = {  # command → (extra environment, the log line that names its public port)
    "tracking": (["tracking"], {"SHOPMAIL_TRACKING__SECRET": TRACKING_KEY, "SHOPMAIL_TRACKING__PORT": "0",
                                "SHOPMAIL_TRACKING__WEB_PORT": "0", "SHOPMAIL_TRACKING__WEBHOOK_SECRETS": "generic=g"},
                 r"tracking page and webhooks on \S+:(\d+)"),
    "unsubscribe": (["unsubscribe-server", "--port", "0"], {"SHOPMAIL_UNSUBSCRIBE__SECRET": "chaos-unsubscribe-key",
                                                           "SHOPMAIL_UNSUBSCRIBE__WEB_PORT": "0"},
                    r"unsubscribe endpoint on \S+:(\d+)"),
    "ses-bridge": (["ses-bridge", "--http-port", "0"], {"SHOPMAIL_BRIDGE__TOPIC_ARNS": TOPIC,
                                                        "SHOPMAIL_BRIDGE__WEB_PORT": "0"},
                   r"SNS endpoint on \S+:(\d+)"),
}


class FuzzedListeners:
    """The three HTTP services as real processes, fuzzed one after the other on a thread until stopped."""

    def __init__(self, env: dict[str, str], settings, tmp_path) -> None:
        env = dict(env, SHOPMAIL_TRACKING__GROUP_ID=settings.topics.prefix + "tracking-chaos")
        self.procs = {name: CliProcess(args, {**env, **extra}, tmp_path / f"{name}.log")
                      for name, (args, extra, _) in LISTENERS.items()}
        self.ports = {name: int(wait_for(lambda n=name: re.search(LISTENERS[n][2], self.procs[n].log()), 60,
                                         what=f"the {name} listener").group(1)) for name in LISTENERS}
        # like a Service that routes only to ready pods: fuzzing starts once the views are restored
        # (before that the page answers 503 "starting", tested on its own in test_tracking)
        wait_for(lambda: _status(f"http://127.0.0.1:{self.ports['tracking']}/track/0") == 404, 120,
                 what="the tracking views restored")
        self.reports: list[tuple[str, FuzzReport]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fuzz-listeners", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, port in self.ports.items():
                try:
                    self.reports.append((name, fuzz(f"http://127.0.0.1:{port}", 10)))
                except Exception as exc:  # noqa: BLE001 - reported by the test
                    self.errors.append(f"{name}: {type(exc).__name__}: {exc}")

    def __enter__(self) -> "FuzzedListeners":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)
        for p in self.procs.values():
            p.terminate()


def _status(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_valid_mail_goes_out_exactly_once_through_hostile_records_and_random_sigkills(kafka, moto_ses, settings,
                                                                                      tmp_path):
    rng = random.Random(13)
    settings.worker.tick_interval_s = 0.5
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    point_at_ses(settings, moto_ses.endpoint_url)
    verify_sender(settings, moto_ses.endpoint_url)
    env = settings_env(settings, kafka, SHOPMAIL_WORKER__BATCH_SIZE="50", SHOPMAIL_SINK__BATCH_SIZE="20",
                       SHOPMAIL_SES__ENDPOINT_URL=moto_ses.endpoint_url, SHOPMAIL_SES__USE_ACCOUNT_RATE="false",
                       SHOPMAIL_SES__MAX_SEND_RATE="400")
    shop = Shop(kafka, settings)
    valid = [f"v{i}" for i in range(400)]
    runs = {"worker": 0, "sink": 0}
    procs: dict[str, CliProcess] = {}

    def start(kind: str) -> None:
        runs[kind] += 1
        procs[kind] = CliProcess([kind, "--instance-id", f"{kind}-0"], env, tmp_path / f"{kind}{runs[kind]}.log")

    start("worker")
    start("sink")
    listeners = FuzzedListeners(env, settings, tmp_path).__enter__()
    try:
        for n, chunk in enumerate(range(0, len(valid), 100)):
            for cid in valid[chunk:chunk + 100]:
                shop.send("customers", "CustomerEvent", _profile(cid, locale=rng.choice(["en", "de"])))
                shop.send("orders", "OrderEvent", _order(cid))
            if n == 1:
                _hostile(shop)
            shop.flush()
            time.sleep(rng.uniform(0.5, 2.0))
            kind = "worker" if n % 2 == 0 else "sink"
            procs[kind].kill9()  # SIGKILL mid-stream, then a restart under the same instance id
            start(kind)
        commands_topic = settings.topics.name("commands")

        def confirmations() -> dict[str, list[dict]]:
            out: dict[str, list[dict]] = {}
            for r in read_topic(kafka, commands_topic, idle_s=0.5, timeout_s=20):
                c = r.decoded().record
                if c["flow"] == "order_confirmation":
                    out.setdefault(c["customer_id"], []).append(c)
            return out

        wait_for(lambda: set(valid) <= set(confirmations()), 120, interval_s=1.0, what="every valid order confirmed")
        confirmed = confirmations()
        wanted = {c["command_id"] for cid in valid for c in confirmed[cid]}

        def settled() -> dict[str, dict]:
            outs = (r.decoded().record for r in read_topic(kafka, settings.topics.name("outcomes"), idle_s=0.5,
                                                           timeout_s=20))
            return {o["command_id"]: o for o in outs}

        wait_for(lambda: wanted <= set(settled()), 180, interval_s=1.0, what="an outcome for every valid command")
        page = f"http://127.0.0.1:{listeners.ports['tracking']}/track/" + make_token(TRACKING_KEY.encode(),
                                                                                    "h-30k-order", "h-30k")
        wait_for(lambda: _status(page) == 200, 60, what="the 30,000-item order's tracking page")
        alive = {name: p.alive() for name, p in listeners.procs.items()}
    finally:
        logs = {k: p.log() for k, p in procs.items()}
        for p in procs.values():
            p.terminate()
        listeners.__exit__()
    # the listeners were fuzzed all along: no 5xx, no hang, no dropped connection, none exited
    assert alive == {name: True for name in LISTENERS}, {n: p.log(2000) for n, p in listeners.procs.items()}
    assert listeners.errors == []
    fuzzed = {name: sum(r.requests for n, r in listeners.reports if n == name) for name in LISTENERS}
    print(f"chaos: listeners fuzzed with {fuzzed} requests")
    assert all(n >= 20 for n in fuzzed.values()), fuzzed
    assert [(name, p) for name, r in listeners.reports for p in r.problems()] == []
    # exactly one command per valid order, each emailed at most once, and sent or reported
    assert all(len(confirmed[cid]) == 1 for cid in valid), "an order was confirmed twice"
    emailed = Counter(m.group(1) for msg in moto_ses.sent_messages()
                      for m in [COMMAND_HEADER.search(msg.get("raw_data") or "")] if m and m.group(1) in wanted)
    assert [c for c, n in emailed.items() if n > 1] == [], "a command was emailed twice"
    outcomes = settled()
    for cmd_id in wanted:
        o = outcomes[cmd_id]
        assert o["outcome"] == "sent" or o["reason"], f"{cmd_id}: {o}"
        if o["outcome"] == "sent":
            assert emailed[cmd_id] == 1, f"{cmd_id} is reported sent but moto has no message"
    not_sent = [o for c, o in outcomes.items() if c in wanted and o["outcome"] != "sent"]
    assert len(not_sent) <= 2 * settings.ses.max_concurrency, f"{len(not_sent)} valid commands not sent: {not_sent[:3]}"
    # every hostile record has a reason: a dead letter, or a failed outcome
    dead = {}
    for r in read_topic(kafka, settings.topics.dlq("orders"), idle_s=0.5, timeout_s=20):
        d = r.decoded().record
        dead[(d["original_key"] or b"").decode(errors="replace")] = d
    assert dead["h-5mb"]["error"] == "too_large"
    assert dead[""]["error"] == "invalid_key"
    assert dead["someone-else"]["error"] == "key_mismatch"
    assert dead["h-garbage"]["error"] in ("unknown_fingerprint", "truncated", "invalid")
    by_customer = {o["customer_id"]: o for o in outcomes.values()}
    assert by_customer["h-crlf"]["outcome"] == "failed" and by_customer["h-crlf"]["reason"]
    assert by_customer["h-locale"]["outcome"] in ("sent", "failed")
    assert by_customer["h-bigname"]["outcome"] == "sent"
    assert "h-future" in dead or "h-future" in confirmations(), "the year-3000 order vanished"
    if "h-future" in by_customer:  # confirmed for the year 3000: reported, not held for 974 years
        assert (by_customer["h-future"]["outcome"], by_customer["h-future"]["reason"].split(":")[0]) == \
            ("failed", "far_future")
    assert runs == {"worker": 3, "sink": 3}, logs
