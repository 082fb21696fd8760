# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""A compiled batch engine, prototype: raw Avro records of the input topics in, EmailCommand Avro bytes and
changelog bytes out, per batch. The cart-abandonment part only (what bench/quix_app.py does); see README.md.

Decoding is driven by a small op program per input topic, made from the shipped ``.avsc`` files by
``layout.py`` (every field is walked and checked; only the fields the engine needs are captured as byte
ranges or integers). Per-customer state is a typed extension object (C fields); the hot path makes no
Python call but one dict look-up per record. Commands are rare (≈ 4 % of events): their context JSON,
command id and line items are built at Python level, their Avro body is written in C.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

import hashlib
from decimal import Decimal
from heapq import heappop, heappush

# op codes of a program (triples: op, arg, slot); OPT_NULL_FIRST / OPT_NULL_SECOND flag a [null, T] union
DEF OP_STR = 1
DEF OP_LONG = 2
DEF OP_BOOL = 3
DEF OP_ENUM = 4
DEF OP_ARRAY = 5
DEF OP_DOUBLE = 6
DEF OP_FLOAT = 7
DEF OPT_NULL_FIRST = 0x100
DEF OPT_NULL_SECOND = 0x200
DEF MAX_OPS = 256
DEF MAX_SLOTS = 16
DEF MAX_PARTITIONS = 256
DEF NEVER = 0x7FFFFFFFFFFFFFFF

# what a topic is, and the slots ``layout.CAPTURES`` gives its fields
DEF K_CARTS = 0
DEF K_ORDERS = 1
DEF K_SHIPMENTS = 2
DEF K_CUSTOMERS = 3
DEF S_EVENT = 0
DEF S_CID = 1
DEF S_AT = 2
DEF S_TYPE = 3
DEF S_4 = 4
DEF S_5 = 5
DEF S_6 = 6
DEF S_7 = 7
DEF S_8 = 8

DEF CART_CLEARED = 3  # CartEventType symbol index (checked by layout.py)
DEF ORDER_PLACED = 0  # OrderEventType symbol index (checked by layout.py)


class Unreadable(ValueError):
    """A record this prototype cannot read (framing, fingerprint or body)."""


cdef struct Cur:
    const unsigned char* p
    const unsigned char* end
    const unsigned char* base


cdef struct Caps:
    int64_t val[MAX_SLOTS]
    Py_ssize_t start[MAX_SLOTS]  # -1: null
    Py_ssize_t size[MAX_SLOTS]


cdef int _bail(str why) except -1:
    raise Unreadable(why)


cdef inline int64_t _long(Cur* c) except? -1:
    cdef uint64_t n = 0
    cdef uint64_t b
    cdef int shift = 0
    while True:
        if c.p >= c.end:
            _bail("ends early")
        b = c.p[0]
        c.p += 1
        n |= (b & 0x7F) << shift
        if not (b & 0x80):
            return <int64_t>((n >> 1) ^ (0 - (n & 1)))
        shift += 7
        if shift >= 70:
            _bail("varint too long")


cdef inline int _skip(Cur* c, int64_t n) except -1:
    if n < 0 or n > c.end - c.p:
        _bail("ends early")
    c.p += n
    return 0


cdef int _walk(Cur* c, const int* prog, int first, int last, Caps* caps) except -1:
    """Read the fields of ops ``first`` ≤ i < ``last`` (triples), capturing the slotted ones."""
    cdef int i = first
    cdef int op, arg, slot, kind, null_at
    cdef int64_t n, b, items
    cdef const unsigned char* at
    while i < last:
        op = prog[3 * i]
        arg = prog[3 * i + 1]
        slot = prog[3 * i + 2]
        kind = op & 0xFF
        if op & (OPT_NULL_FIRST | OPT_NULL_SECOND):
            null_at = 0 if op & OPT_NULL_FIRST else 1
            b = _long(c)
            if b != 0 and b != 1:
                _bail("union branch out of range")
            if b == null_at:
                if slot >= 0:
                    caps.start[slot] = -1
                    caps.size[slot] = 0
                i += 1 + (arg if kind == OP_ARRAY else 0)
                continue
        if kind == OP_STR:
            n = _long(c)
            at = c.p
            _skip(c, n)
            if slot >= 0:
                caps.start[slot] = at - c.base
                caps.size[slot] = n
        elif kind == OP_LONG:
            n = _long(c)
            if slot >= 0:
                caps.val[slot] = n
                caps.start[slot] = 0
        elif kind == OP_BOOL:
            if c.p >= c.end:
                _bail("ends early")
            if c.p[0] > 1:
                _bail("boolean byte not 0 or 1")
            if slot >= 0:
                caps.val[slot] = c.p[0]
            c.p += 1
        elif kind == OP_ENUM:
            n = _long(c)
            if n < 0 or n >= arg:
                _bail("enum index out of range")
            if slot >= 0:
                caps.val[slot] = n
        elif kind == OP_DOUBLE:
            _skip(c, 8)
        elif kind == OP_FLOAT:
            _skip(c, 4)
        elif kind == OP_ARRAY:
            at = c.p
            items = 0
            while True:
                n = _long(c)
                if n == 0:
                    break
                if n < 0:  # a block with its byte size
                    n = -n
                    _long(c)
                for b in range(n):
                    _walk(c, prog, i + 1, i + 1 + arg, caps)
                items += n
            if slot >= 0:
                caps.start[slot] = at - c.base
                caps.size[slot] = c.p - at
                caps.val[slot] = items
            i += arg
        else:
            _bail("unknown op")
        i += 1
    return 0


cdef class Program:
    cdef int ops[3 * MAX_OPS]
    cdef int n
    cdef bytes fingerprint

    def __init__(self, list triples, bytes fingerprint):
        if len(triples) > MAX_OPS:
            raise ValueError("schema too large for the prototype")
        self.n = len(triples)
        for i, (op, arg, slot) in enumerate(triples):
            if slot >= MAX_SLOTS:
                raise ValueError("slot out of range")
            self.ops[3 * i] = op
            self.ops[3 * i + 1] = arg
            self.ops[3 * i + 2] = slot
        self.fingerprint = fingerprint


cdef class Customer:
    """One customer's state: the profile from shop.customers and the open cart with its next step."""
    cdef public bytes cid
    cdef public object email, first_name, locale, timezone  # bytes or None
    cdef public bint opt_in
    cdef public bint has_cart
    cdef public int64_t cart_at
    cdef public int sent  # steps already due (sent or not: Quix's ``sent``)
    cdef public bytes cart_id, trigger, items_raw, currency
    cdef public object cart_url  # bytes or None
    cdef public int64_t n_items
    cdef public int64_t generation  # a new cart version: its earlier timers are stale
    cdef bint dirty


# ---- Avro writing ------------------------------------------------------------------------------

cdef class _Out:
    cdef bytearray buf

    def __init__(self):
        self.buf = bytearray()

    cdef inline void long_(self, int64_t v):
        cdef uint64_t z = <uint64_t>((v << 1) ^ (v >> 63))
        cdef unsigned char tmp[10]
        cdef int k = 0
        while z >= 0x80:
            tmp[k] = <unsigned char>((z & 0x7F) | 0x80)
            z >>= 7
            k += 1
        tmp[k] = <unsigned char>z
        self.buf += (<char*>tmp)[:k + 1]

    cdef inline void raw(self, bytes b):
        self.long_(PyBytes_GET_SIZE(b))
        self.buf += b

    cdef inline void opt(self, object b):
        if b is None:
            self.long_(0)
        else:
            self.long_(1)
            self.raw(b)


cdef inline object _slice(const unsigned char* base, Caps* caps, int slot):
    if caps.start[slot] < 0:
        return None
    return PyBytes_FromStringAndSize(<const char*>base + caps.start[slot], caps.size[slot])


cdef class _Queue:
    """One topic-partition's fetched records not processed yet, in offset order."""
    cdef str topic
    cdef int partition, kind
    cdef list times, values, offsets
    cdef Py_ssize_t head, size
    cdef int64_t reached  # the latest event time fetched

    def __init__(self, str topic, int partition, int kind):
        self.topic, self.partition, self.kind = topic, partition, kind
        self.times, self.values, self.offsets = [], [], []
        self.head = self.size = 0
        self.reached = -NEVER

    cdef void push(self, int64_t at, object value, int64_t offset):
        self.times.append(at)
        self.values.append(value)
        self.offsets.append(offset)
        self.size += 1
        if at > self.reached:
            self.reached = at

    cdef void pop(self):
        self.values[self.head] = None
        self.head += 1
        if self.head == self.size:
            self.times, self.values, self.offsets = [], [], []
            self.head = self.size = 0
        elif self.head >= 4096 and 2 * self.head >= self.size:
            del self.times[:self.head], self.values[:self.head], self.offsets[:self.head]
            self.size -= self.head
            self.head = 0


cdef class Engine:
    """Per batch: ``process_records([(topic, value), ...])`` (in that order) or ``process_merged(confluent-kafka
    messages, …)`` (merged by event time) → (commands, changelog, dead[, held]): lists of (key, value) to
    produce (dead: the unreadable records with the reason as value)."""
    cdef dict kinds  # topic → kind
    cdef list programs  # kind → Program
    cdef Program items_program  # a LineItem record body (the element of a cart's items)
    cdef list item_names  # LineItem field names, in order
    cdef dict customers
    cdef list changed
    cdef list commands
    cdef list dead
    cdef int64_t delays[3]
    cdef bytes command_header
    cdef int64_t expires_ms
    cdef str shop_url, incentive
    cdef int coupon_percent
    cdef public int64_t events, dead_letters, changelog_records, transitions
    cdef public list commands_by_step
    # timers (``timers=True``): a step fires when its partition's clock (the latest event time seen in it)
    # passes its due time, as the worker's do; otherwise (Quix's rule) when the customer's next event comes
    cdef readonly bint timers
    cdef int64_t clock[MAX_PARTITIONS]
    cdef int64_t next_due[MAX_PARTITIONS]  # the earliest timer of each partition (NEVER: none)
    cdef list heaps  # partition → heap of (due, sequence, generation, Customer)
    cdef int64_t sequence
    # the event-time merge (``process_merged``): records held per partition, the latest time per topic-partition
    cdef dict held  # (topic, partition) → its fetched records not processed yet (a _Queue)
    cdef dict queues  # partition → its topics' _Queues

    def __init__(self, dict kinds, list programs, Program items_program, list item_names, bytes command_header,
                 list delays_ms, int64_t expires_ms, str shop_url, str incentive, int coupon_percent,
                 bint timers=False):
        if len(delays_ms) != 3:
            raise ValueError("the prototype knows three steps")
        self.kinds = kinds
        self.programs = programs
        self.items_program = items_program
        self.item_names = item_names
        self.customers = {}
        self.changed = []
        self.commands = []
        self.dead = []
        for i in range(3):
            self.delays[i] = delays_ms[i]
        self.command_header = command_header
        self.expires_ms = expires_ms
        self.shop_url = shop_url
        self.incentive = incentive
        self.coupon_percent = coupon_percent
        self.events = self.dead_letters = self.changelog_records = self.transitions = 0
        self.commands_by_step = [0, 0, 0]
        self.timers = timers
        self.heaps = [[] for _ in range(MAX_PARTITIONS)]
        self.held = {}
        self.queues = {}
        self.sequence = 0
        for i in range(MAX_PARTITIONS):
            self.clock[i] = -NEVER
            self.next_due[i] = NEVER

    def customer(self, bytes cid):
        return self.customers.get(cid)

    def process_records(self, list records, int partition=0):
        """``records``: (topic, value) pairs, all of ``partition``."""
        cdef object topic, value
        for topic, value in records:
            self._one(self.kinds[topic], value, partition)
        return self._flush()

    def process_merged(self, list messages, dict fetching):
        """The worker's order: the records of a partition's topics merged by event time. A record is
        processed once every input topic of its partition has reached its time or has nothing left to
        fetch (``fetching``: (topic, partition) → whether records remain to be fetched); the others are
        held. Each topic-partition's records are taken in offset order (a k-way merge of their heads).
        Returns (commands, changelog, dead, held) with held = {(topic, partition): the first held offset}
        (the offsets to commit stop there)."""
        cdef dict kinds = self.kinds
        cdef _Queue q, best
        cdef int64_t bound, head_at
        cdef list queues
        for m in messages:
            if m.error() is not None:
                continue
            topic = m.topic()
            p = m.partition()
            q = self.held.get((topic, p))
            if q is None:
                q = self.held[(topic, p)] = _Queue(topic, p, kinds[topic])
                self.queues.setdefault(p, []).append(q)
            q.push(self._time_of(q.kind, m.value()), m.value(), m.offset())
        first = {}
        for p, queues in self.queues.items():
            bound = NEVER
            for topic in kinds:  # the time every topic of the partition has reached (or nothing left)
                if fetching.get((topic, p), False):
                    q = self.held.get((topic, p))
                    if q is None:
                        bound = -NEVER
                    elif q.reached < bound:
                        bound = q.reached
            while True:
                best = None
                for q in queues:
                    if q.head < q.size and (best is None or q.times[q.head] < best.times[best.head]):
                        best = q
                if best is None:
                    break
                head_at = best.times[best.head]
                if head_at > bound:
                    break
                self._one(best.kind, best.values[best.head], p)
                best.pop()
            for q in queues:
                if q.head < q.size:
                    first[(q.topic, p)] = q.offsets[q.head]
        return self._flush() + (first,)

    @property
    def held_records(self):
        cdef _Queue q
        cdef Py_ssize_t n = 0
        for q in self.held.values():
            n += q.size - q.head
        return n

    cdef int64_t _time_of(self, int kind, object value) except? -2:
        """The record's event time (the smallest time for one it cannot read: processed at once, then
        dead-lettered by ``_one``)."""
        cdef Caps caps
        cdef Cur cur
        cdef Program prog = <Program>self.programs[kind]
        if not isinstance(value, bytes) or PyBytes_GET_SIZE(value) < 10:
            return -NEVER
        cur.base = <const unsigned char*>PyBytes_AS_STRING(value)
        cur.p = cur.base + 10
        cur.end = cur.base + PyBytes_GET_SIZE(value)
        if cur.base[0] != 0xC3 or cur.base[1] != 0x01 or memcpy_cmp(cur.base + 2, PyBytes_AS_STRING(prog.fingerprint), 8):
            return -NEVER
        try:
            _walk(&cur, prog.ops, 0, prog.n, &caps)
        except Unreadable:
            return -NEVER
        return caps.val[S_AT]

    cdef int _schedule(self, Customer c, int partition) except -1:
        """The timer of the customer's next step (its partition's heap)."""
        cdef int64_t due = c.cart_at + self.delays[c.sent]
        self.sequence += 1
        heappush(self.heaps[partition], (due, self.sequence, c.generation, c))
        if due < self.next_due[partition]:
            self.next_due[partition] = due
        return 0

    cdef int _advance(self, int partition, int64_t at) except -1:
        """The partition's clock moves to ``at``: every step due by then fires, earliest first."""
        cdef list heap = self.heaps[partition]
        cdef Customer c
        cdef int64_t due, generation
        self.clock[partition] = at
        while heap and heap[0][0] <= at:
            due, _, generation, c = heappop(heap)
            if generation != c.generation or not c.has_cart:
                continue  # the cart changed, was cleared or bought since
            c.sent += 1
            if c.opt_in:
                self._command(c, c.sent)
            if c.sent < 3:
                self._schedule(c, partition)
            self._touch(c)
        self.next_due[partition] = heap[0][0] if heap else NEVER
        return 0

    cdef tuple _flush(self):
        cdef Customer c
        cdef list log = []
        for c in self.changed:
            log.append((c.cid, self._state_bytes(c)))
            c.dirty = False
        self.changelog_records += len(log)
        self.changed = []
        out = (self.commands, log, self.dead)
        self.commands = []
        self.dead = []
        return out

    cdef inline void _touch(self, Customer c):
        if not c.dirty:
            c.dirty = True
            self.changed.append(c)

    cdef int _one(self, int kind, object value, int partition) except -1:
        cdef Caps caps
        cdef Cur cur
        cdef Program prog = <Program>self.programs[kind]
        cdef const unsigned char* base
        cdef Py_ssize_t size
        cdef Customer c
        cdef bytes cid
        cdef int64_t at
        self.events += 1
        if not isinstance(value, bytes):
            self._dead(value, "no value")
            return 0
        base = <const unsigned char*>PyBytes_AS_STRING(value)
        size = PyBytes_GET_SIZE(value)
        if size < 10 or base[0] != 0xC3 or base[1] != 0x01:
            self._dead(value, "not Avro single-object encoding")
            return 0
        if memcpy_cmp(base + 2, PyBytes_AS_STRING(prog.fingerprint), 8):
            self._dead(value, "writer schema unknown to the prototype")
            return 0
        cur.base = base
        cur.p = base + 10
        cur.end = base + size
        try:
            _walk(&cur, prog.ops, 0, prog.n, &caps)
            if cur.p != cur.end:
                _bail("trailing bytes")
        except Unreadable as exc:
            self._dead(value, str(exc))
            return 0
        cid = <bytes>_slice(base, &caps, S_CID)
        at = caps.val[S_AT]
        if self.timers:
            if partition < 0 or partition >= MAX_PARTITIONS:
                raise ValueError(f"partition {partition} beyond the prototype's {MAX_PARTITIONS}")
            if at > self.clock[partition]:
                if at >= self.next_due[partition]:
                    self._advance(partition, at)
                else:
                    self.clock[partition] = at
        c = self.customers.get(cid)
        if c is None:
            c = Customer()
            c.cid = cid
            self.customers[cid] = c
        if kind == K_CUSTOMERS:
            c.email = _slice(base, &caps, S_4)
            c.first_name = _slice(base, &caps, S_5)
            c.locale = _slice(base, &caps, S_6)
            c.timezone = _slice(base, &caps, S_7)
            c.opt_in = caps.val[S_8] != 0
            self._touch(c)
        if not self.timers and c.has_cart and c.sent < 3 and at >= c.cart_at + self.delays[c.sent]:
            while c.sent < 3 and at >= c.cart_at + self.delays[c.sent]:
                c.sent += 1
                if c.opt_in:
                    self._command(c, c.sent)
            self._touch(c)
        if kind == K_CARTS:
            if caps.val[S_TYPE] == CART_CLEARED:
                if c.has_cart:
                    c.has_cart = False
                    self._touch(c)
            else:
                c.has_cart = True
                c.cart_at = at
                c.sent = 0
                c.trigger = <bytes>_slice(base, &caps, S_EVENT)
                c.cart_id = <bytes>_slice(base, &caps, S_4)
                c.items_raw = <bytes>_slice(base, &caps, S_5)
                c.n_items = caps.val[S_5]
                c.currency = <bytes>_slice(base, &caps, S_6)
                c.cart_url = _slice(base, &caps, S_7)
                c.generation += 1
                if self.timers:
                    self._schedule(c, partition)
                self._touch(c)
        elif kind == K_ORDERS and caps.val[S_TYPE] == ORDER_PLACED and c.has_cart:
            c.has_cart = False
            self._touch(c)
        return 0

    cdef void _dead(self, object value, str reason):
        self.dead_letters += 1
        self.dead.append((value, reason.encode()))

    # ---- the rare path: one command ------------------------------------------------------------

    def _items(self, bytes raw):
        """The cart's line items as the worker keeps them (``stock`` only where the shop sent it)."""
        cdef Cur cur
        cdef Caps caps
        cdef int64_t n, k
        out = []
        cur.base = <const unsigned char*>PyBytes_AS_STRING(raw)
        cur.p = cur.base
        cur.end = cur.base + PyBytes_GET_SIZE(raw)
        while True:
            n = _long(&cur)
            if n == 0:
                break
            if n < 0:
                n = -n
                _long(&cur)
            for k in range(n):
                _walk(&cur, self.items_program.ops, 0, self.items_program.n, &caps)
                line = {}
                for slot, name in enumerate(self.item_names):
                    if name in ("quantity", "stock"):
                        line[name] = None if caps.start[slot] < 0 else caps.val[slot]
                    else:
                        b = _slice(cur.base, &caps, slot)
                        line[name] = None if b is None else b.decode()
                if line.get("stock") is None:
                    line.pop("stock", None)
                out.append(line)
        return out

    cdef int _command(self, Customer c, int step) except -1:
        from schemas.serde import canonical_json_bytes  # the worker's JSON form (sorted keys, ASCII)

        cdef _Out w = _Out()
        cdef int64_t due = c.cart_at + self.delays[step - 1]
        cid = c.cid.decode()
        trigger = c.trigger.decode()
        raw = "\x1f".join(("abandoned_cart", str(step), cid, trigger)).encode()
        cmd_id = hashlib.sha256(raw).hexdigest()[:32]
        loc = c.locale.decode() if c.locale else "en"
        lines = self._items(c.items_raw)
        ctx = {"first_name": None if c.first_name is None else c.first_name.decode(), "shop_url": self.shop_url,
               "locale": loc, "unsubscribe_url": f"{self.shop_url}/unsubscribe?c={cmd_id}",
               "cart_id": c.cart_id.decode(),
               "cart_url": c.cart_url.decode() if c.cart_url else f"{self.shop_url}/cart",
               "items": lines,
               "cart_total": str(sum((Decimal(it["price"]) * it["quantity"] for it in lines),
                                     Decimal(0)).quantize(Decimal("0.01"))),
               "currency": c.currency.decode() or "USD"}
        if step == 3:
            ctx["incentive"] = self.incentive
            prefix = {"coupon": "CART", "free_shipping": "SHIP"}.get(self.incentive)
            if prefix:  # streams.core.ids.stable_code(prefix, customer, cart)
                code = hashlib.sha256("\x1f".join((cid, ctx["cart_id"])).encode()).hexdigest().upper()[:8]
                ctx["coupon_code"] = f"{prefix}-{code}"
            if self.incentive == "coupon":
                ctx["coupon_percent"] = self.coupon_percent
            if "coupon_code" in ctx:
                ctx["timezone"] = c.timezone.decode() if c.timezone else "UTC"
        w.buf += self.command_header
        w.raw(cmd_id.encode())
        w.raw(c.cid)
        w.raw(c.email if c.email is not None else b"")
        w.raw(b"abandoned_cart")
        w.long_(step)
        w.raw(f"abandoned_cart/step{step}".encode())
        w.raw(loc.encode())
        w.raw(b"control")
        w.long_(1)  # EmailCategory.marketing
        w.long_(due)
        w.long_(due + self.expires_ms)
        w.raw(canonical_json_bytes(ctx))
        w.raw(c.trigger)
        w.long_(due)
        self.commands.append((c.cid, bytes(w.buf)))
        self.commands_by_step[step - 1] += 1
        return 0

    # ---- the changelog: the customer's state, compact ------------------------------------------

    cdef bytes _state_bytes(self, Customer c):
        cdef _Out w = _Out()
        w.long_(1)  # format version
        w.opt(c.email)
        w.opt(c.first_name)
        w.opt(c.locale)
        w.opt(c.timezone)
        w.long_(c.opt_in)
        w.long_(c.has_cart)
        if c.has_cart:
            w.long_(c.cart_at)
            w.long_(c.sent)
            w.raw(c.cart_id)
            w.raw(c.trigger)
            w.raw(c.currency)
            w.opt(c.cart_url)
            w.raw(c.items_raw)
        return bytes(w.buf)


cdef inline bint memcpy_cmp(const unsigned char* a, const char* b, int n):
    cdef int i
    for i in range(n):
        if a[i] != <unsigned char>b[i]:
            return True
    return False
