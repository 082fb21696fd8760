"""Rendered email of every flow: structure, links, money formatting, escaping of hostile input."""

from __future__ import annotations

import json
from email import message_from_bytes, policy
from html.parser import HTMLParser

import pytest

from sinks.mime import build_mime
from sinks.rendering import RenderError, Renderer

HOSTILE = '<script>alert("x")</script>'
ITEMS = [{"sku": "EVIL", "name": HOSTILE, "price": "1234.5", "quantity": 2,
          "image_url": "https://shop.example.com/i/evil.jpg", "url": "https://shop.example.com/p/evil"}]
CONTEXTS = {
    ("abandoned_cart", 1): {"cart_id": "k", "cart_url": "https://shop.example.com/cart/k", "items": ITEMS,
                            "cart_total": "2469.00", "currency": "EUR"},
    ("abandoned_cart", 2): {"cart_id": "k", "cart_url": "https://shop.example.com/cart/k", "items": ITEMS,
                            "cart_total": "2469.00", "currency": "EUR"},
    ("abandoned_cart", 3): {"cart_id": "k", "cart_url": "https://shop.example.com/cart/k", "items": ITEMS,
                            "cart_total": "2469.00", "currency": "EUR", "incentive": "coupon",
                            "coupon_code": "CART-1234", "coupon_percent": 10},
    ("order_confirmation", 1): {"order_id": "o-1", "items": ITEMS, "total": "2469.00", "currency": "EUR",
                                "cross_sell": [{"sku": "CAP", "name": "Cap", "price": "20.00", "image_url": None,
                                                "url": "https://shop.example.com/p/cap"}]},
    ("shipping_confirmation", 1): {"order_id": "o-1", "shipment_id": "s", "carrier": "DHL", "tracking_number": "JD1",
                                   "tracking_url": "https://track.example.com/JD1", "status": "label_created"},
    ("tracking_update", 1): {"order_id": "o-1", "shipment_id": "s", "carrier": "DHL", "tracking_number": "JD1",
                             "tracking_url": "https://track.example.com/JD1", "status": "out_for_delivery"},
    ("delivery_feedback", 1): {"order_id": "o-1", "feedback_url": "https://shop.example.com/feedback?order=o-1",
                               "coupon_code": "THANKS-1", "coupon_percent": 10, "currency": "EUR"},
    ("win_back", 1): {"segment": "vip", "offer_percent": 25, "coupon_code": "BACK-1"},
    ("win_back", 2): {"segment": "vip", "offer_percent": 25},
    ("win_back", 3): {"segment": "vip", "offer_percent": 25, "opt_out_url": "https://shop.example.com/unsubscribe?c=x"},
}
MARKETING = {"abandoned_cart", "delivery_feedback", "win_back"}


class Structure(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        self.tags.append(tag)
        self.links += [v for k, v in attrs if k == "href"]
        self.scripts += tag == "script"


def command(flow: str, step: int, locale: str = "en", variant: str = "control") -> dict:
    return {"command_id": "cmd-1", "customer_id": "c1", "to": "c1@example.com", "flow": flow, "step": step,
            "locale": locale, "variant": variant, "category": "marketing" if flow in MARKETING else "transactional",
            "context": json.dumps({**CONTEXTS[(flow, step)], "first_name": "Ada"})}


@pytest.mark.parametrize("flow,step", sorted(CONTEXTS))
def test_every_flow_renders_html_and_text_with_escaped_hostile_input(flow, step):
    email = Renderer().render(command(flow, step), "https://shop.example.com/unsubscribe?c=cmd-1")
    parsed = Structure()
    parsed.feed(email.html)
    assert parsed.tags[:3] == ["html", "head", "meta"] and "body" in parsed.tags
    assert parsed.scripts == 0 and "<script>" not in email.html
    assert email.subject and "Ada" in email.text
    if (flow, step) in {("abandoned_cart", 1), ("order_confirmation", 1)}:
        assert "&lt;script&gt;" in email.html and "€2,469.00" in email.html
        assert "https://shop.example.com/p/evil" in parsed.links
    if flow == "abandoned_cart":
        assert "https://shop.example.com/cart/k" in parsed.links
    if flow in ("shipping_confirmation", "tracking_update"):
        assert "https://track.example.com/JD1" in parsed.links
    if flow in MARKETING:
        assert "https://shop.example.com/unsubscribe?c=cmd-1" in parsed.links
    else:
        assert "unsubscribe" not in email.html.lower()


def test_locale_overrides_fall_back_to_english_per_template_and_string():
    de = Renderer().render(command("abandoned_cart", 1, locale="de"), "https://u")
    assert de.subject == "Sie haben etwas im Warenkorb vergessen" and "Hallo Ada" in de.html
    assert "2.469,00\xa0€" in de.html  # German money format
    de2 = Renderer().render(command("abandoned_cart", 2, locale="de"), "https://u")
    assert de2.locale == "en" and "Hallo" in de2.text  # English template, German strings where present
    assert Renderer().render(command("order_confirmation", 1, locale="pt-BR"), "https://u").locale == "en"


def test_optional_item_fields_may_be_absent():
    cmd = command("order_confirmation", 1)
    cmd["context"] = json.dumps({"order_id": "o", "total": "1.00", "currency": "EUR", "cross_sell": [],
                                 "items": [{"sku": "S", "name": "Plain", "price": "1.00", "quantity": 1}]})
    email = Renderer().render(cmd, "https://u")
    assert "Plain" in email.html and "<img" not in email.html.split("Plain")[0].split("<table")[-1]


def test_subject_lines_follow_the_variant():
    a = Renderer().render(command("abandoned_cart", 1, variant="control"), "https://u")
    b = Renderer().render(command("abandoned_cart", 1, variant="B"), "https://u")
    assert a.subject == "You left something in your cart" and b.subject == "Ada, your cart misses you"


def test_a_missing_variable_or_template_names_what_is_missing():
    cmd = command("order_confirmation", 1)
    cmd["context"] = json.dumps({"items": [], "currency": "EUR"})
    with pytest.raises(RenderError, match="order_id") as err:
        Renderer().render(cmd, "https://u")
    assert err.value.reason == "template_variable_missing"
    cmd = command("order_confirmation", 1) | {"flow": "no_such_flow"}
    with pytest.raises(RenderError, match="no_such_flow_step1.html"):
        Renderer().render(cmd, "https://u")


def test_mime_is_multipart_alternative_and_marketing_gets_rfc8058_headers():
    email = Renderer().render(command("win_back", 1), "https://u")
    raw = build_mime(email, sender="shop@example.com", to="c1@example.com", command_id="cmd-1", category="marketing",
                     unsubscribe_url="https://shop.example.com/unsubscribe?c=cmd-1", unsubscribe_mailto="u@example.com",
                     date_ms=1_700_000_000_000)
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["List-Unsubscribe"].startswith("<https://shop.example.com/unsubscribe?c=cmd-1>, <mailto:u@example.com")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
