"""The Quix Streams baseline of `shopmail bench`: the cart-abandonment part of the worker's job as a
small Quix Streams 3.28 application, on the same input topics and broker, exactly-once.

Runs in its own virtualenv (quixstreams pins an older confluent-kafka than shopmail), so it imports
nothing from shopmail: it decodes the Avro single-object encoding itself with fastavro from the
``.avsc`` files (writer schema looked up by fingerprint, no schema resolution).

What it does per record (every record of shop.carts, shop.orders, shop.shipments, shop.customers):
decode; per-customer state in RocksDB with a changelog topic (Quix's own); profile (email, opt-in)
from customers; the open cart from carts (cleared by cart_cleared or an order); when a later event of
the same customer arrives past a step's delay (1 h, 24 h, 72 h) and the customer opted in, one JSON
abandoned-cart command per due step to an output topic — in one Kafka transaction with the state and
offsets (``processing_guarantee="exactly-once"``).

What it does not do, compared with shopmail's worker: no timers (a step fires only when the customer
sends another event, not at its due time on the partition's clock), no other flows (order, shipping,
win-back, post-purchase), no quiet hours, frequency caps, holdouts or locales, no deduplication of
event ids, no dead letters or record limits, no Avro output, no late-event rules.

Usage (the bench runs it): python quix_app.py BOOTSTRAP PREFIX GROUP EXPECTED SCHEMA_DIR COMMIT_EVERY STATE_DIR
[COMMIT_INTERVAL_S] (Quix's default 5 s);
prints one JSON line: {"events", "commands", "seconds", ...}.
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form
from quixstreams import Application, State
from quixstreams.models.serializers import Deserializer

TOPICS = {"carts": "CartEvent", "orders": "OrderEvent", "shipments": "ShipmentEvent", "customers": "CustomerEvent"}
DELAYS_MS = (3_600_000, 86_400_000, 259_200_000)


def load_schemas(directory: Path) -> dict[bytes, Any]:
    """writer fingerprint (8 bytes, little-endian CRC-64-AVRO) → parsed schema, for the current schemas."""
    out: dict[bytes, Any] = {}
    for name in TOPICS.values():
        raw = json.loads((directory / f"{name}.avsc").read_text())
        parsed = fastavro.parse_schema(raw)
        fp = int(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"), 16)
        out[fp.to_bytes(8, "little")] = parsed
    return out


class AvroSingleObject(Deserializer):
    def __init__(self, schemas: dict[bytes, Any], kind: str) -> None:
        super().__init__()
        self.schemas = schemas
        self.kind = kind

    def __call__(self, value: bytes, ctx: Any) -> dict[str, Any]:
        if value[:2] != b"\xc3\x01":
            raise ValueError("not Avro single-object encoding")
        record = fastavro.schemaless_reader(io.BytesIO(value[10:]), self.schemas[value[2:10]], None)
        record["_kind"] = self.kind
        return record


def abandonment(event: dict[str, Any], state: State) -> list[dict[str, Any]] | None:
    kind, at = event["_kind"], event["occurred_at"]
    if kind == "customers":
        state.set("profile", {"email": event.get("email"), "opt_in": bool(event.get("marketing_opt_in"))})
    cart = state.get("cart")
    due: list[dict[str, Any]] = []
    if cart is not None:
        profile = state.get("profile") or {}
        while cart["sent"] < len(DELAYS_MS) and at >= cart["at"] + DELAYS_MS[cart["sent"]]:
            cart["sent"] += 1
            if profile.get("opt_in"):
                due.append({"flow": "abandoned_cart", "step": cart["sent"], "customer_id": event["customer_id"],
                            "to": profile.get("email"), "cart_id": cart["cart_id"], "items": cart["items"],
                            "created_at": at})
        state.set("cart", cart)
    if kind == "carts":
        if event["type"] == "cart_cleared":
            state.delete("cart")
        else:
            state.set("cart", {"cart_id": event["cart_id"], "items": [i["sku"] for i in event.get("items") or []],
                               "at": at, "sent": 0})
    elif kind == "orders" and event["type"] == "placed":
        state.delete("cart")
    return due or None


def main() -> None:
    bootstrap, prefix, group, expected, schema_dir, commit_every, state_dir = sys.argv[1:8]
    commit_interval_s = float(sys.argv[8]) if len(sys.argv) > 8 else 5.0  # Quix's default
    n = int(expected)
    schemas = load_schemas(Path(schema_dir))
    seen = 0
    first: list[float] = []
    apps: list[Application] = []

    def processed(topic: str, partition: int, offset: int) -> None:
        nonlocal seen
        if not first:
            first.append(time.perf_counter())
        seen += 1
        if seen == n:
            apps[0].stop()  # the final checkpoint (transaction) is committed before run() returns

    app = Application(broker_address=bootstrap, consumer_group=group, auto_offset_reset="earliest",
                      processing_guarantee="exactly-once", commit_every=int(commit_every),
                      commit_interval=commit_interval_s, loglevel="WARNING",
                      state_dir=state_dir, on_message_processed=processed)
    apps.append(app)
    sdf = None
    for kind in TOPICS:
        topic = app.topic(prefix + "shop." + kind, value_deserializer=AvroSingleObject(schemas, kind))
        part = app.dataframe(topic)
        sdf = part if sdf is None else sdf.concat(part)
    assert sdf is not None
    out = app.topic(prefix + "quix.commands", value_serializer="json")
    sdf = sdf.apply(abandonment, stateful=True).filter(lambda v: v is not None)
    sdf = sdf.apply(lambda v: v, expand=True)
    commands = 0

    def count(v: dict[str, Any]) -> dict[str, Any]:
        nonlocal commands
        commands += 1
        return v

    sdf = sdf.apply(count)
    sdf.to_topic(out)
    started = time.perf_counter()
    app.run()
    end = time.perf_counter()
    print(json.dumps({"events": seen, "commands": commands, "seconds": round(end - first[0], 3) if first else None,
                      "startup_s": round(first[0] - started, 3) if first else None,
                      "commit_every": int(commit_every), "commit_interval_s": commit_interval_s}))


if __name__ == "__main__":
    main()
