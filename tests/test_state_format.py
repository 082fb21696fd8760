"""The changelog format of the partition engine: typed records, versioned, compatible with format 1."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from streams.core.state import (
    CLOCK_KEY, STATE_VERSION, Cart, Customer, WinBackRun, decode_customer, decode_partition, encode,
)

FIXTURE = Path(__file__).parent / "fixtures" / "state_v1.json"


def _v1(key: str) -> bytes:
    return json.loads(FIXTURE.read_text())["changes"][key].encode()


def test_a_format_1_customer_blob_decodes_into_typed_fields_and_is_written_back_as_the_current_format():
    ann = decode_customer(_v1("ann"))
    assert isinstance(ann.cart, Cart) and ann.cart.next == 2 and ann.cart.items[0]["sku"] == "MUG"
    assert ann.p.email == "ann@example.com" and ann.p.opt is True and ann.fb["oa1"].due == 1794042000000
    assert ann.ord is not None and ann.ord.sp == [(1793178000000, "28.00")] and ann.mk == ann.cart_last_sent
    bob = decode_customer(_v1("bob"))
    assert bob.wb == WinBackRun(trig="ord-bob-2", a=1793523600000, next=2, seg="vip")
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
