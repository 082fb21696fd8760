"""The compiled engine's decode programs, made from the shipped ``.avsc`` files, and the engine built from
the settings. A program is a flat list of (op, arg, slot) triples the compiled walker follows: every field
of the writer schema is read and checked; the fields in ``CAPTURES`` are kept (a slot each), the others are
skipped. A schema the walker cannot follow, or a captured field of another type than the engine expects,
is refused here (``LayoutError``), never guessed at run time.
"""

from __future__ import annotations

from typing import Any

from schemas import serde
from schemas.entries import MAGIC
from streams.config import Settings

OP_STR, OP_LONG, OP_BOOL, OP_ENUM, OP_ARRAY, OP_DOUBLE, OP_FLOAT = 1, 2, 3, 4, 5, 6, 7
OPT_NULL_FIRST, OPT_NULL_SECOND = 0x100, 0x200

KINDS = ("carts", "orders", "shipments", "customers")  # the kind numbers the compiled engine uses
SCHEMAS = {"carts": "CartEvent", "orders": "OrderEvent", "shipments": "ShipmentEvent", "customers": "CustomerEvent"}
COMMON = {"event_id": (0, OP_STR), "customer_id": (1, OP_STR), "occurred_at": (2, OP_LONG), "type": (3, OP_ENUM)}
CAPTURES: dict[str, dict[str, tuple[int, int]]] = {
    "carts": {**COMMON, "cart_id": (4, OP_STR), "items": (5, OP_ARRAY), "currency": (6, OP_STR),
              "cart_url": (7, OP_STR)},
    "orders": dict(COMMON),
    "shipments": dict(COMMON),
    "customers": {**COMMON, "email": (4, OP_STR), "first_name": (5, OP_STR), "locale": (6, OP_STR),
                  "timezone": (7, OP_STR), "marketing_opt_in": (8, OP_BOOL)},
}
# enum symbols the compiled engine compares by index
SYMBOLS = {("carts", "type", 3): "cart_cleared", ("orders", "type", 0): "placed"}
ITEM_FIELDS = ("sku", "name", "price", "quantity", "image_url", "url", "stock")


class LayoutError(ValueError):
    """The shipped schemas changed in a way this prototype's engine does not follow."""


def _ops(schema: Any, slot: int) -> list[tuple[int, int, int]]:
    """The triples reading one value of ``schema`` (its first triple carries ``slot``)."""
    if isinstance(schema, list):
        if len(schema) != 2 or "null" not in schema:
            raise LayoutError(f"union {schema} is not [null, T]")
        flag = OPT_NULL_FIRST if schema[0] == "null" else OPT_NULL_SECOND
        inner = _ops(schema[1 - schema.index("null")], slot)
        op, arg, s = inner[0]
        return [(op | flag, arg, s), *inner[1:]]
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind == "enum":
            return [(OP_ENUM, len(schema["symbols"]), slot)]
        if kind == "array":
            body = _ops(schema["items"], -1)
            return [(OP_ARRAY, len(body), slot), *body]
        if kind == "record":
            if slot >= 0:
                raise LayoutError("a nested record cannot be captured whole")
            return [t for f in schema["fields"] for t in _ops(f["type"], -1)]
        return _ops(kind, slot)  # a primitive with a logical type: the encoding is the primitive's
    simple = {"string": OP_STR, "bytes": OP_STR, "int": OP_LONG, "long": OP_LONG, "boolean": OP_BOOL,
              "double": OP_DOUBLE, "float": OP_FLOAT}
    if schema not in simple:
        raise LayoutError(f"type {schema!r} not supported by the prototype")
    return [(simple[schema], 0, slot)]


def program(kind: str, raw: dict[str, Any]) -> list[tuple[int, int, int]]:
    """The triples reading a record of ``kind`` written with ``raw``, capturing ``CAPTURES[kind]``."""
    captures = CAPTURES[kind]
    fields = {f["name"]: f for f in raw["fields"]}
    missing = sorted(set(captures) - set(fields))
    if missing:
        raise LayoutError(f"{raw['name']} lacks {', '.join(missing)}")
    out: list[tuple[int, int, int]] = []
    for f in raw["fields"]:
        slot, expected = captures.get(f["name"], (-1, 0))
        ops = _ops(f["type"], slot)
        if slot >= 0 and ops[0][0] & 0xFF != expected:
            raise LayoutError(f"{raw['name']}.{f['name']} is not of the type the engine reads")
        if slot >= 0 and expected == OP_ARRAY and [t[0] for t in ops[1:]] != [t[0] for t in items_program(f)]:
            raise LayoutError(f"{raw['name']}.{f['name']}'s elements are not the LineItem the engine reads")
        out += ops
    for (k, name, index), symbol in SYMBOLS.items():
        if k == kind and fields[name]["type"]["symbols"][index] != symbol:
            raise LayoutError(f"{raw['name']}.{name}: symbol {index} is no longer {symbol!r}")
    return out


def items_program(items_field: dict[str, Any]) -> list[tuple[int, int, int]]:
    """A LineItem body with every field captured (slot = its position in ``ITEM_FIELDS``)."""
    record = items_field["type"]["items"]
    names = [f["name"] for f in record["fields"]]
    if tuple(names) != ITEM_FIELDS:
        raise LayoutError(f"LineItem fields are {names}, the engine reads {list(ITEM_FIELDS)}")
    return [t for i, f in enumerate(record["fields"]) for t in _ops(f["type"], i)]


def build_engine(settings: Settings, timers: bool = False) -> Any:
    """The compiled engine for the settings' input topics and the shipped schemas (ImportError if the
    module is not built). ``timers``: a step fires when its partition's clock passes its due time (the
    worker's rule), else when the customer's next event arrives past it (bench/quix_app.py's rule)."""
    from prototypes.compiled_engine import _engine

    reg = serde.registry()
    programs = []
    for kind in KINDS:
        entry = reg.get(SCHEMAS[kind])
        programs.append(_engine.Program(program(kind, entry.raw), entry.fingerprint_bytes))
    cart = reg.get("CartEvent").raw
    items_field = next(f for f in cart["fields"] if f["name"] == "items")
    items = _engine.Program(items_program(items_field), b"")
    ac = settings.flows.abandoned_cart
    return _engine.Engine({settings.topics.name(k): i for i, k in enumerate(KINDS)}, programs, items,
                          list(ITEM_FIELDS), MAGIC + reg.get("EmailCommand").fingerprint_bytes, list(ac.delays_ms),
                          int(ac.expires_after_ms), settings.flows.shop_url, ac.incentive, int(ac.coupon_percent), timers)
