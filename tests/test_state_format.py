"""The changelog format of the partition engine: typed records, versioned, compatible with format 1."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from streams.core.state import (
    CLOCK_KEY, STATE_VERSION, BrowseRun, Cart, Customer, WaitingSku, WinBackRun, decode_customer, decode_partition,
    encode,
)

FIXTURE = Path(__file__).parent / "fixtures" / "state_v1.json"


def _v1(key: str) -> bytes:
    return json.loads(FIXTURE.read_text())["changes"][key].encode()


def test_a_format_1_customer_blob_decodes_into_typed_fields_and_is_written_back_as_the_current_format():
    ann = decode_customer(_v1("ann"))
    assert ann.abandoned_cart is not None
    cart = ann.abandoned_cart.run
    assert isinstance(cart, Cart) and cart.next == 2 and cart.items[0]["sku"] == "MUG"
    assert ann.delivery_feedback is not None and ann.delivery_feedback.requests["oa1"].due == 1794042000000
    assert ann.p.email == "ann@example.com" and ann.p.opt is True
    assert ann.ord is not None and ann.ord.sp == [(1793178000000, "28.00")]
    assert ann.mk == ann.abandoned_cart.last_sent
    bob = decode_customer(_v1("bob"))
    assert bob.win_back is not None
    assert bob.win_back.run == WinBackRun(trig="ord-bob-2", a=1793523600000, next=2, seg="vip")
    written = encode(ann)
    assert json.loads(written)["v"] == STATE_VERSION
    assert decode_customer(written) == ann  # nothing lost on the way through the current format


def test_a_format_1_blob_is_version_1_and_fields_at_their_default_are_not_written():
    raw = msgspec.json.decode(_v1("cat"), type=Customer)
    assert raw.v == 1  # no "v" in format 1
    idle = json.loads(encode(Customer(v=STATE_VERSION)))
    assert idle == {"v": STATE_VERSION, "p": {}}  # an idle customer costs a few bytes, not a key per field


def test_the_partition_record_of_format_1_restores_its_spend_buckets_as_integers():
    part = decode_partition(_v1(CLOCK_KEY))
    assert part.spend == {69: 2, 109: 1} and part.tick == part.clock and part.v == 2
    assert json.loads(encode(part))["spend"] == {"69": 2, "109": 1}


def test_a_format_2_record_moves_each_flows_loose_fields_into_that_flows_struct():
    v2 = {"v": 2, "p": {"email": "eve@example.com"}, "mk": 5, "gb": 7,
          "cart": {"trig": "c1", "next": 2, "id": "cart-1", "a": 100}, "acl": 90, "cx": 10,
          "lap": 1000, "wbd": 800, "wb": {"trig": "o1", "a": 1000, "seg": "vip"},
          "fb": {"o1": {"due": 300, "o": "o1"}}, "bis": {"MUG": {"since": 50, "cur": "EUR"}},
          "bv": {"trig": "v1", "f": 60, "a": 70}, "bvl": 20, "pd": {"w": {"TEE": {"at": 40, "p": "9.00"}}}}
    eve = decode_customer(json.dumps(v2).encode())
    assert eve.v == STATE_VERSION and eve.p.email == "eve@example.com" and (eve.mk, eve.gb) == (5, 7)
    assert eve.abandoned_cart is not None and eve.abandoned_cart.run == Cart(trig="c1", next=2, id="cart-1", a=100)
    assert (eve.abandoned_cart.last_sent, eve.abandoned_cart.cleared_at) == (90, 10)
    assert eve.win_back is not None and (eve.win_back.lapses_at, eve.win_back.done_for) == (1000, 800)
    assert eve.win_back.run == WinBackRun(trig="o1", a=1000, seg="vip")
    assert eve.delivery_feedback is not None and eve.delivery_feedback.requests["o1"].due == 300
    assert eve.back_in_stock is not None and eve.back_in_stock.waiting == {"MUG": WaitingSku(since=50, cur="EUR")}
    assert eve.browse is not None and eve.browse.run == BrowseRun(trig="v1", f=60, a=70) and eve.browse.last_due == 20
    assert eve.price_drop is not None and eve.price_drop.watched["TEE"].price == "9.00"
    written = json.loads(encode(eve))
    assert written["v"] == STATE_VERSION and not {"cart", "acl", "cx", "lap", "wbd", "wb", "fb", "bis", "bv",
                                                  "bvl"} & set(written)
    assert written["ac"] == {"r": {"trig": "c1", "next": 2, "id": "cart-1", "a": 100}, "s": 90, "x": 10}
    assert decode_customer(encode(eve)) == eve  # the current format reads back as it was written


def test_a_customer_without_a_flow_running_carries_no_field_of_that_flow():
    raw = msgspec.json.decode(encode(Customer(v=STATE_VERSION)))
    assert raw == {"v": STATE_VERSION, "p": {}}
    assert decode_customer(encode(Customer(v=STATE_VERSION))).abandoned_cart is None


def test_a_format_3_record_has_its_sunset_pending_from_its_engaged_time_and_is_written_as_format_4():
    consented = {"v": 3, "p": {"email": "ann@example.com", "opt": True, "opt_at": 10}, "eng": 500}
    sunset = {"v": 3, "p": {"email": "bob@example.com", "opt": True, "opt_at": 10}, "eng": 500, "sun": 900}
    without_consent = {"v": 3, "p": {"email": "cat@example.com", "opt": False, "opt_at": 10}}
    ann = decode_customer(json.dumps(consented).encode())
    assert (ann.engaged_at, ann.sunset_pending_from, ann.v) == (500, 500, STATE_VERSION)
    assert decode_customer(json.dumps(sunset).encode()).sunset_pending_from is None  # sunset already: nothing pending
    assert decode_customer(json.dumps(without_consent).encode()).sunset_pending_from is None
    written = json.loads(encode(ann))
    assert written["v"] == 4 and written["spf"] == 500
    assert decode_customer(encode(ann)) == ann
