"""The persisted state of a partition engine: typed, versioned, serialised here and nowhere else.

Every changelog record of a partition engine is one of these structs encoded as JSON (msgspec):

- a customer id → ``Customer`` (the shared facts and each flow's instance);
- ``CLOCK_KEY`` → ``Partition`` (the event-time clock, cross-sell tables, spend histogram);
- ``TABLE_PREFIX`` + table + ``:`` + key → a row of a partition table that is not keyed by customer
  (``streams/core/tables.py``).

Stored names are short (``p``, ``sup``, ``ac``, …); a field with a readable attribute name keeps a
short stored name (``msgspec.field(name=...)``), and every field has a default that is omitted when
encoded, so an idle customer costs a few bytes. ``v`` is the format a record was written in: absent in
format 1 (decoded as 1), written first as ``STATE_VERSION`` by this release. Format 2 only added
fields to format 1; format 3 moved each marketing flow's loose fields (``cart``, ``acl``, ``cx``,
``lap``, ``wbd``, ``wb``, ``fb``, ``bis``, ``bv``, ``bvl``) into a struct of its own
(``AbandonedCartState``, ``WinBackState``, …). ``decode_customer`` reads a format-3 record directly and
migrates an older one on restore (``_migrate``); it is written back in format 3 the next time it changes.

The structs themselves are not tracked by Python's cyclic garbage collector (``gc=False``; the lists and
dicts they hold still are): a record holds data and no reference back to what holds it, so it can be in
no cycle, and a full collection has hundreds of thousands fewer objects to traverse
(streams/runtime/gc_policy.py). A record must never hold a flow, the engine or a record that holds it: a
cycle through records alone would never be freed (tests/test_gc_policy.py walks a simulated partition's
state for one).

Line items and buffered records stay the plain dicts the event carried (they go into templates and
commands as they are; converting them on every step would cost the engine its speed).

A flow that keeps state adds its struct and one field of ``Customer`` here, with a readable attribute
name and a short stored name (``price_drop``, stored ``pd``: docs/adding-a-flow.md).
"""

from __future__ import annotations

from typing import Any

import msgspec

STATE_VERSION = 3  # 1: the dict release (no ``v``); 2: these structs; 3: each marketing flow's state in a struct of its own
CLOCK_KEY = "\x00partition"
TABLE_PREFIX = "\x03"  # + "<table>:<key>": cannot collide with a customer id (ids are printable)


class Record(msgspec.Struct, omit_defaults=True, gc=False):
    """A state record: fields by attribute; ``record["field"]`` reads one too (tools, tests)."""

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None


class Profile(Record):
    email: str | None = None
    fn: str | None = None  # first name
    loc: str | None = None  # locale
    tz: str | None = None  # IANA time zone
    at: int | None = None  # time of the profile event the contact details come from
    opt: bool | None = None  # marketing consent
    opt_at: int | None = None  # time of the consent decision


class Suppression(Record):
    """The earliest time of each suppression: unsubscribed, hard bounce, complaint."""

    u: int | None = None
    b: int | None = None
    c: int | None = None


class Orders(Record):
    n: int = 0  # orders placed
    sp: list[tuple[int, str]] = []  # [time, total] of the orders of the last 365 days (≤ 20)
    gaps: list[int] = []  # the last 5 gaps between orders
    last: int | None = None  # time of the last order
    lid: str | None = None  # event id of the last order
    cur: str | None = None  # currency of the last order (the customer's currency in mail without a cart)


class Instance(Record):
    """One running instance of a marketing flow: its trigger, next step and deferral."""

    trig: str = ""  # trigger event id (command ids derive from it)
    next: int = 1  # the next step
    d: int | None = None  # deferred due time (frequency cap, quiet hours)


class Cart(Instance):
    id: str = ""
    items: list[dict[str, Any]] = []
    cur: str = "USD"
    url: str = ""
    a: int = 0  # anchor: the last cart activity
    tot: str | None = None  # cart total, cached per cart version


class WinBackRun(Instance):
    a: int = 0  # the lapse time
    seg: str = "one_time"  # segment when it started


class FeedbackRequest(Instance):
    due: int = 0
    o: str = ""  # order id
    on: str | None = None  # the order's number for people (from the delivery or the order)
    skus: list[str] = []  # the order's products (≤ 5), rated one by one in the mail
    names: list[str] = []  # their names as the customer's order showed them (empty in older state)


class OrderRef(Record):
    """What mail about an order needs after the order event: its number and products."""

    n: str | None = None  # order number for people
    skus: list[str] = []  # ≤ 5
    names: list[str] = []  # the products' names as this customer's order showed them (empty in older state)


class WaitingSku(Instance):
    """Back-in-stock: a SKU of the abandoned cart that went out of stock; ``due`` once it is restocked."""

    since: int = 0  # when it was seen out of stock in the cart
    item: dict[str, Any] = {}  # the cart's line (name, price, image, url) for the mail
    cur: str = "USD"  # the cart's currency
    due: int | None = None  # the restock's time as this partition learnt it (None: still out of stock)


class BrowseRun(Instance):
    """Browse abandonment: products viewed without a cart activity or an order since the first view."""

    f: int = 0  # the run's first view (a cart activity with items or an order at or after it ends the run)
    a: int = 0  # anchor: the last view (the mail is due ``delay_ms`` after it)
    items: list[dict[str, Any]] = []  # viewed products, distinct SKUs, the most recent first (≤ max_items)
    cur: str = "USD"  # currency of the last view


class WatchedPrice(Instance):
    """Price drop: a product the customer viewed or carted, at the price they saw; ``due`` once it got cheaper."""

    seen_at: int = msgspec.field(default=0, name="at")  # when the customer last saw it (view or cart activity)
    price: str = msgspec.field(default="", name="p")  # the price they saw then
    currency: str = msgspec.field(default="", name="c")  # …and its currency (a cut in another one is not a cut)
    name: str = msgspec.field(default="", name="n")  # the product's name as they saw it (for the mail)
    due: int | None = None  # the cut's time as this partition learnt it (None: no cut yet)
    new_price: str | None = msgspec.field(default=None, name="np")  # the price after the cut


class PriceDropState(Record):
    """The price-drop flow's state of one customer (``Customer.price_drop``)."""

    watched: dict[str, WatchedPrice] = msgspec.field(default_factory=dict, name="w")  # sku → watch (≤ max_watched)


class Stock(Record):
    """A row of the partition's ``stock`` table (SKU → the latest inventory record applied)."""

    at: int = 0  # occurred_at of that record (an older record is stale)
    eid: str = ""  # its event id
    out: bool = False  # out of stock
    back: int | None = None  # time of the last restock
    qty: int | None = None
    price: str | None = None
    cur: str | None = None  # the price's currency (None: the record did not say; the price is not shown)
    name: str | None = None
    url: str | None = None
    image_url: str | None = None


class AbandonedCartState(Record):
    """The abandoned-cart flow's state of one customer (``Customer.abandoned_cart``)."""

    run: Cart | None = msgspec.field(default=None, name="r")  # the open cart and its series (None: none)
    last_sent: int | None = msgspec.field(default=None, name="s")  # when the series' last step went out
    cleared_at: int | None = msgspec.field(default=None, name="x")  # when the cart was last cleared


class WinBackState(Record):
    """The win-back flow's state of one customer (``Customer.win_back``)."""

    lapses_at: int | None = msgspec.field(default=None, name="l")  # when the customer lapses (set by every order)
    done_for: int | None = msgspec.field(default=None, name="d")  # the last order (its time) a win-back ran for
    run: WinBackRun | None = msgspec.field(default=None, name="r")  # the running series (None: none)


class BrowseState(Record):
    """The browse-abandonment flow's state of one customer (``Customer.browse``)."""

    run: BrowseRun | None = msgspec.field(default=None, name="r")  # the running instance (None: none)
    last_due: int | None = msgspec.field(default=None, name="l")  # when its last mail was due (weekly cap)


class BackInStockState(Record):
    """The back-in-stock flow's state of one customer (``Customer.back_in_stock``)."""

    waiting: dict[str, WaitingSku] = msgspec.field(default_factory=dict, name="w")  # sku → waiting / due mail


class DeliveryFeedbackState(Record):
    """The delivery-feedback flow's state of one customer (``Customer.delivery_feedback``)."""

    requests: dict[str, FeedbackRequest] = msgspec.field(default_factory=dict, name="r")  # order id → request


class Customer(Record):
    """A customer of the partition: the shared facts (profile, consent, suppression, orders), the
    transactional mails' bookkeeping, and one field per marketing flow holding that flow's own struct
    (None until the flow has something to keep)."""

    v: int = 1  # the format this record was written in (absent = 1)
    p: Profile = msgspec.field(default_factory=Profile)
    seen: dict[str, int] = {}  # event id → time (dedupe)
    buf: list[list[Any]] = []  # events waiting to settle: [time, topic rank, event id, topic, record]
    sup: Suppression | None = None
    ord: Orders | None = None
    hs: float | None = None  # 365-day spend registered in the partition histogram
    x: list[str] = []  # cancelled / returned order ids (≤ 20)
    mk: int | None = None  # last marketing send
    waiting_for_address: dict[str, list[Any]] = msgspec.field(default_factory=dict, name="ptx")  # event id → [flow, trigger, extra]: transactional mail waiting for an address
    sh: dict[str, list[str]] = {}  # shipment id → statuses seen (≤ 10 shipments): shipping and tracking mail
    oi: dict[str, OrderRef] = {}  # order id → number and products (the last 5 orders), for mail about the order
    gb: int | None = None  # win-back goodbye sent at: no marketing after it until a ``resubscribed`` feedback
    aud: list[str] = []  # retargeting audiences the customer is in (sorted; streams/core/audiences.py)
    ah: str | None = None  # digest of the hashed email those memberships were published with
    audience_withdrawn_at: int | None = msgspec.field(default=None, name="aw")  # a consent withdrawal / suppression not settled yet: in no audience until then
    # each marketing flow's own state (streams/core/flows/<flow>.py reads and writes only its own)
    abandoned_cart: AbandonedCartState | None = msgspec.field(default=None, name="ac")
    win_back: WinBackState | None = msgspec.field(default=None, name="wbs")
    browse: BrowseState | None = msgspec.field(default=None, name="ba")
    back_in_stock: BackInStockState | None = msgspec.field(default=None, name="bs")
    delivery_feedback: DeliveryFeedbackState | None = msgspec.field(default=None, name="df")
    price_drop: PriceDropState | None = msgspec.field(default=None, name="pd")
    # sunset (streams/core/flows/sunset.py): the latest human click, order or consent given (None: no
    # consent, or state from before sunset), when the customer was sunset, the latest delivery (message, time)
    engaged_at: int | None = msgspec.field(default=None, name="eng")
    sunset_since: int | None = msgspec.field(default=None, name="sun")
    last_delivery: tuple[str, int] | None = msgspec.field(default=None, name="dlv")  # older state: read, then moved into recent_deliveries
    # the last ``RECENT_DELIVERIES`` messages delivered (message key, first delivery time), oldest first, and
    # the clicks kept to judge a link burst: (time, message key, link, waiting for its verdict), by time
    recent_deliveries: list[tuple[str, int]] = msgspec.field(default_factory=list, name="dlvs")
    recent_clicks: list[tuple[int, str, str, bool]] = msgspec.field(default_factory=list, name="clk")


class _CustomerV2(Customer):
    """Formats 1 and 2: the marketing flows' fields sat loose on the customer. Read only to migrate."""

    cart: Cart | None = None
    acl: int | None = None
    cx: int | None = None
    lap: int | None = None
    wbd: int | None = None
    wb: WinBackRun | None = None
    fb: dict[str, FeedbackRequest] = {}
    bis: dict[str, WaitingSku] = {}
    bv: BrowseRun | None = None
    bvl: int | None = None


class ProviderWindow(Record):
    """The complaint and bounce guard's view of one mailbox provider (streams/core/deliverability.py)."""

    buckets: dict[int, list[int]] = msgspec.field(default_factory=dict, name="b")  # bucket → [delivered, hard bounced, complained]
    history: list[list[Any]] = msgspec.field(default_factory=list, name="h")  # [since, status] transitions, the last ≤ 16
    recheck: bool = msgspec.field(default=False, name="x")  # a late record changed the window: evaluate the next boundary
    sums: list[int] = msgspec.field(default_factory=lambda: [0, 0, 0], name="s")  # the window's buckets summed (recomputed on restore)


class GuardState(Record):
    """The complaint and bounce guard of a partition: the last bucket boundary evaluated, and each provider's window."""

    upto: int = 0  # bucket index of the last boundary evaluated
    providers: dict[str, ProviderWindow] = msgspec.field(default_factory=dict, name="p")


class Partition(Record):
    clock: int = 0
    cooc: dict[str, dict[str, int]] = {}
    catalog: dict[str, dict[str, Any]] = {}
    spend: dict[int, int] = {}
    tick: int = 0
    v: int = 1  # 1: any event could move the clock; 2: a future event never does
    aud: bool = False  # every customer has been through the audience check (streams/core/audiences.py)
    guard: GuardState | None = msgspec.field(default=None, name="dg")  # complaint and bounce guard (deliverability.py)


_encoder = msgspec.json.Encoder()
_customer = msgspec.json.Decoder(Customer)
_partition = msgspec.json.Decoder(Partition)


def encode(record: Record) -> bytes:
    return _encoder.encode(record)


def decode_customer(blob: bytes) -> Customer:
    if blob[:7] in _CURRENT:
        return _customer.decode(blob)
    return _migrate(_customer_v2.decode(blob))


_CURRENT = (b'{"v":%d,' % STATE_VERSION, b'{"v":%d}' % STATE_VERSION)  # ``v`` is the first field, always written
_customer_v2 = msgspec.json.Decoder(_CustomerV2)


def _migrate(old: _CustomerV2) -> Customer:
    """A format-1 or -2 record in this format: the loose flow fields move into each flow's struct."""
    c = Customer(**{f: getattr(old, f) for f in Customer.__struct_fields__})
    c.v = STATE_VERSION
    if old.cart is not None or old.acl is not None or old.cx is not None:
        c.abandoned_cart = AbandonedCartState(run=old.cart, last_sent=old.acl, cleared_at=old.cx)
    if old.lap is not None or old.wbd is not None or old.wb is not None:
        c.win_back = WinBackState(lapses_at=old.lap, done_for=old.wbd, run=old.wb)
    if old.bv is not None or old.bvl is not None:
        c.browse = BrowseState(run=old.bv, last_due=old.bvl)
    if old.bis:
        c.back_in_stock = BackInStockState(waiting=old.bis)
    if old.fb:
        c.delivery_feedback = DeliveryFeedbackState(requests=old.fb)
    return c


def decode_partition(blob: bytes) -> Partition:
    return _partition.decode(blob)


def new_customer() -> Customer:
    return Customer(v=STATE_VERSION)
