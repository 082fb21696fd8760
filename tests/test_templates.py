"""Rendered email of every flow: structure, links, money, escaping, URL schemes, optional fields, brand."""

from __future__ import annotations

import json
import re
from email import message_from_bytes, policy
from markupsafe import escape
from html.parser import HTMLParser

import pytest
from prometheus_client import REGISTRY

from sinks.mime import build_mime
from sinks.rendering import RenderError, Renderer, safe_url
from sinks.samples import FULL, MARKETING, MINIMAL, command
from sinks.render_context import render_extra
from streams.config import BrandSettings, Settings, UnsubscribeSettings

HOSTILE = '<script>alert("x")</script>'
UNSUB = "https://shop.example.com/unsubscribe?c=cmd-1&t=abc"
RENDERER = Renderer()
SETTINGS = Settings(unsubscribe=UnsubscribeSettings(secret="test-key"))


class Structure(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.imgs: list[dict[str, str | None]] = []
        self.meta: dict[str, str | None] = {}
        self.html_lang: str | None = None

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        a = dict(attrs)
        self.tags.append(tag)
        self.urls += [v or "" for k, v in attrs if k in ("href", "src")]
        if tag == "img":
            self.imgs.append(a)
        if tag == "meta" and a.get("name"):
            self.meta[a["name"] or ""] = a.get("content")
        if tag == "html":
            self.html_lang = a.get("lang")


def parse(html: str) -> Structure:
    s = Structure()
    s.feed(html)
    return s


def render(flow: str, step: int, context: dict | None = None, **kw):  # type: ignore[no-untyped-def]
    """As the sink renders it: with the coupon's expiry and apply link, the signed review links."""
    cmd = command(flow, step, FULL[(flow, step)] if context is None else context, **kw)
    return RENDERER.render(cmd, UNSUB, render_extra(SETTINGS, cmd))


@pytest.mark.parametrize("flow,step", sorted(FULL))
def test_every_flow_renders_a_branded_responsive_email_with_escaped_hostile_input(flow, step):
    ctx = json.loads(json.dumps(FULL[(flow, step)]))
    for it in ctx.get("items", []):
        it["name"] = HOSTILE
    email = render(flow, step, ctx, first_name=HOSTILE)
    s = parse(email.html)
    assert "<script>" not in email.html and "&lt;script&gt;" in email.html
    assert HOSTILE in email.text  # the text part is not HTML
    assert s.html_lang == "en" and s.meta.get("color-scheme") == "light dark" and "viewport" in s.meta
    assert "Example Shop" in email.html and "1 Example Street" in email.html and "support@example.com" in email.html
    assert email.preheader and escape(email.preheader) in email.html  # hidden preview text
    assert "mso" in email.html  # Outlook conditional centring table from MJML
    assert all(img.get("alt") and img.get("width") and img.get("height") for img in s.imgs)
    if flow in MARKETING:
        assert UNSUB in s.urls and UNSUB in email.text
    else:
        assert "unsubscribe" not in email.html.lower()


def test_money_and_percent_follow_the_locale():
    assert "198,00\xa0€" in render("abandoned_cart", 1, locale="de").html
    assert "€198.00" in render("abandoned_cart", 1).html
    assert "%25" in render("win_back", 1, locale="tr").subject  # Turkish puts the sign first
    assert "25\xa0%" in render("win_back", 1, locale="de").subject
    assert "31. Dezember 2025" in render("abandoned_cart", 3, locale="de").text


def test_every_call_to_action_is_a_bulletproof_button():
    email = render("abandoned_cart", 1)
    button = re.search(r'<td align="center" bgcolor="[^"]+" role="presentation"[^>]*>\s*<a href="([^"]+)"', email.html)
    assert button and button.group(1).startswith("https://shop.example.com/cart/k-1?utm_source=shopmail&amp;")
    assert "utm_campaign=abandoned_cart&amp;utm_content=step1-control" in button.group(1)


@pytest.mark.parametrize("flow,step", sorted(MINIMAL))
@pytest.mark.parametrize("absent", ["missing", "null"])
def test_every_optional_field_absent_renders_sensible_text_without_none_or_empty_links(flow, step, absent):
    ctx = dict(MINIMAL[(flow, step)])
    if absent == "null":  # the engine sends null for carrier/tracking/first_name when it has none
        ctx.update({k: None for k in ("carrier", "tracking_number", "tracking_url", "cart_url", "coupon_code",
                                      "order_number", "feedback_url", "incentive")})
    for locale in ("en", "de"):
        email = render(flow, step, ctx, first_name=None, locale=locale)
        for part in (email.subject, email.preheader, email.text, email.html):
            assert not re.search(r"\b(None|null|undefined)\b", part)
        assert 'href=""' not in email.html and 'src=""' not in email.html
        assert all(u.startswith(("https://", "http://", "mailto:")) for u in parse(email.html).urls)
        assert email.subject.strip() and " ," not in email.text


def test_no_scarcity_claim_without_stock_data():
    no_stock = [{k: v for k, v in it.items() if k != "stock"} for it in FULL[("abandoned_cart", 2)]["items"]]
    plenty = render("abandoned_cart", 2, {**FULL[("abandoned_cart", 2)], "items": no_stock})
    assert "sold out" not in plenty.html and "left" not in plenty.text.split("--")[0].replace("left off", "")
    low = render("abandoned_cart", 2)
    assert "Only 2 left" in low.html and "nearly sold out" in low.text


def test_win_back_story_comes_from_configuration_only():
    default = render("win_back", 2).text
    assert "repair" not in default and "Take a look at what's arrived" in default
    brand = BrandSettings(win_back_story={"en": "Every jacket is made to last a decade."})
    told = Renderer(brand=brand).render(command("win_back", 2, FULL[("win_back", 2)]), UNSUB)
    assert "made to last a decade" in told.html


def test_order_confirmation_shows_what_the_event_carries_and_a_human_order_number():
    email = render("order_confirmation", 1)
    assert email.subject == "Order #1042 confirmed" and "c0000044-o1" not in email.subject
    for text in ("Subtotal", "€4.90", "VAT", "€202.90", "12 Example Road", "https://shop.example.com/account/orders/1042"):
        assert text in email.html
    bare = render("order_confirmation", 1, MINIMAL[("order_confirmation", 1)])
    assert bare.subject == "Your order is confirmed" and "Subtotal" not in bare.html
    assert "Your order" in bare.text and "o-1" not in bare.text and "o-1" not in bare.html  # never the internal id


@pytest.mark.parametrize("bad", ["javascript:alert(1)", "data:text/html;base64,PHNjcmlwdD4=", "vbscript:x",
                                 "/relative/path", "JaVaScRiPt:alert(1)", " javascript:alert(1)"])
def test_only_https_http_and_mailto_urls_render_and_dropped_ones_are_counted(bad):
    before = sum(s.value for m in REGISTRY.collect() if m.name == "shopmail_render_urls_dropped"
                 for s in m.samples if s.name.endswith("_total"))
    ctx = json.loads(json.dumps(FULL[("order_confirmation", 1)]))
    ctx.update(order_url=bad)
    for it in ctx["items"] + ctx["cross_sell"]:
        it.update(url=bad, image_url=bad)
    email = render("order_confirmation", 1, ctx)
    urls = parse(email.html).urls
    assert urls and all(u.startswith(("https://", "http://", "mailto:")) for u in urls)
    assert bad.strip() not in email.html and bad.strip() not in email.text
    after = sum(s.value for m in REGISTRY.collect() if m.name == "shopmail_render_urls_dropped"
                for s in m.samples if s.name.endswith("_total"))
    assert after - before >= 7
    assert safe_url("mailto:a@example.com") == "mailto:a@example.com" and safe_url("https://x.example/a") != ""


def test_a_cta_with_an_unsafe_link_falls_back_to_the_shop():
    email = render("abandoned_cart", 1, {**FULL[("abandoned_cart", 1)], "cart_url": "javascript:alert(1)"})
    assert any(u.startswith("https://shop.example.com?utm_") for u in parse(email.html).urls)
    assert "javascript" not in email.html


@pytest.mark.parametrize("requested,lang", [("xx", "en"), ("pt-BR", "en"), ("", "en"), ("de-AT", "de"),
                                            ("de_CH", "de"), ("th", "th"), ("not a locale!", "en")])
def test_unknown_or_uncatalogued_locales_render_wholly_in_the_default_language(requested, lang):
    email = render("abandoned_cart", 1, locale=requested)
    assert email.locale == lang and parse(email.html).html_lang == lang


def test_swiss_german_formats_money_the_swiss_way_under_the_german_catalog():
    email = render("abandoned_cart", 1, {**FULL[("abandoned_cart", 1)], "currency": "CHF"}, locale="de-CH")
    assert "CHF" in email.html and "Gesamtsumme" in email.html


def test_subject_lines_follow_the_variant():
    assert render("abandoned_cart", 1, variant="control").subject == "You left something in your cart"
    assert render("abandoned_cart", 1, variant="B").subject == "Ada, your cart misses you"
    assert render("abandoned_cart", 1, variant="B", first_name=None).subject == "You left something in your cart"


def test_a_missing_variable_or_template_names_what_is_missing():
    with pytest.raises(RenderError, match="order_id") as err:
        render("order_confirmation", 1, {"items": [], "total": "1.00", "currency": "EUR"})
    assert err.value.reason == "template_variable_missing"
    with pytest.raises(RenderError, match="no_such_flow_step1"):
        RENDERER.render(command("no_such_flow", 1, {}), UNSUB)


def test_mime_is_multipart_alternative_with_the_email_language():
    email = render("win_back", 1, locale="it")
    raw = build_mime(email, sender="shop@example.com", to="c1@example.com", command_id="cmd-1", category="marketing",
                     unsubscribe_url=UNSUB, unsubscribe_mailto="u@example.com", date_ms=1_700_000_000_000)
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg.get_content_type() == "multipart/alternative" and msg["Content-Language"] == "it"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]


@pytest.mark.parametrize("name,old", [("OrderEvent", "OrderEvent.v1.avsc"), ("CartEvent", "CartEvent.v0.avsc")])
def test_records_written_before_the_optional_email_fields_still_read_with_defaults(name, old):
    import io

    import fastavro

    from schemas import serde

    writer = next(e for e in serde.registry().by_fingerprint.values() if e.path.name == old)
    rec = {"event_id": "e", "customer_id": "c", "occurred_at": 1, "type": "placed" if name == "OrderEvent" else
           "item_added", "order_id": "o1", "cart_id": "k1",
           "items": [{"sku": "S", "name": "n", "price": "1.00", "quantity": 1}]}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, writer.parsed, rec)
    decoded = serde.decode(serde.MAGIC + writer.fingerprint_bytes + buf.getvalue()).record
    assert decoded["items"][0]["stock"] is None
    if name == "OrderEvent":
        assert decoded["order_number"] is None and decoded["shipping_address"] is None and decoded["order_id"] == "o1"


def test_tax_follows_the_shops_market_not_the_customers_language_and_a_market_has_a_legal_text():
    order = FULL[("order_confirmation", 1)]  # EUR: 198.00 + 4.90 = 202.90, the 32.40 VAT inside
    for locale, included in (("de", "inkl. 32,40\xa0€ MwSt."), ("en", "Includes €32.40 VAT")):
        email = render("order_confirmation", 1, locale=locale)
        assert included in email.text and "Tax:" not in email.text and "Steuer" not in email.text, locale
    us = {**order, "currency": "USD", "subtotal": "100.00", "shipping": "5.00", "tax": "8.25", "total": "113.25"}
    for locale in ("en", "de"):  # a US shop's German customer: tax on top, as the amounts say
        text = render("order_confirmation", 1, us, locale=locale).text
        assert ("Tax: $8.25" if locale == "en" else "Steuer: 8,25\xa0$") in text and "VAT" not in text, locale
    # amounts that do not tell (no subtotal): the market of the order's currency decides
    bare = {k: v for k, v in order.items() if k != "subtotal"}
    assert "Includes €32.40 VAT" in render("order_confirmation", 1, bare).text
    assert "Tax: $32.40" in render("order_confirmation", 1, {**bare, "currency": "USD"}).text
    from streams.config import MarketSettings

    markets = MarketSettings(tax_display={"default": "included"}, legal_text={"de": "Handelsregister HRB 12345"})
    renderer = Renderer(markets=markets)
    cmd = command("order_confirmation", 1, FULL[("order_confirmation", 1)], locale="de-AT")
    email = renderer.render(cmd, UNSUB)
    assert "Handelsregister HRB 12345" in email.html and "Handelsregister HRB 12345" in email.text
    assert "Includes $32.40 VAT" in renderer.render(command("order_confirmation", 1, {**bare, "currency": "USD"}),
                                                   UNSUB).text


def test_shop_links_carry_utm_parameters_unless_turned_off_and_other_hosts_get_none():
    from streams.config import LinkSettings

    email = render("browse_abandonment", 1)
    urls = parse(email.html).urls
    shop = [u for u in urls if u.startswith("https://shop.example.com/p/")]
    assert shop and all("utm_campaign=browse_abandonment" in u and "utm_content=step1-control" in u for u in shop)
    tracking = render("shipping_confirmation", 1)
    assert "https://track.example.com/JD0148220177" in parse(tracking.html).urls  # the carrier's host: untouched
    plain = Renderer(links=LinkSettings(utm=False)).render(command("browse_abandonment", 1, FULL[("browse_abandonment", 1)]), UNSUB)
    assert "utm_" not in plain.html and "utm_" not in plain.text


def test_every_email_has_one_h1_heading():
    for flow, step in sorted(FULL):
        assert parse(render(flow, step).html).tags.count("h1") == 1, (flow, step)


def test_marketing_footers_link_the_signed_preferences_page_and_the_goodbye_offers_to_keep_subscribing():
    from sinks.mime import list_links
    from sinks.unsubscribe_token import verify

    for flow, step in sorted(FULL):
        cmd = command(flow, step, FULL[(flow, step)])
        links = list_links(SETTINGS.ses, "test-key", cmd)
        unsubscribe = links.pop("unsubscribe")
        email = RENDERER.render(cmd, unsubscribe, render_extra(SETTINGS, cmd), list_links=links)
        urls = parse(email.html).urls
        assert (links["preferences"] in urls) == (flow in MARKETING), flow
        assert (links["keep"] in urls) == ((flow, step) == ("win_back", 3)), flow
    token = dict(kv.split("=") for kv in links["keep"].split("?")[1].split("&"))["t"]
    assert verify("test-key", cmd["customer_id"], cmd["command_id"], "en", token, purpose="keep")
    goodbye = RENDERER.render(command("win_back", 3, FULL[("win_back", 3)]), UNSUB, list_links=links)
    assert "Keep me subscribed" in goodbye.html and "the last email we'll send you" in goodbye.text


def test_without_an_order_number_every_mail_about_the_order_says_your_order_never_the_internal_id():
    for flow, status in (("shipping_confirmation", "label_created"), ("tracking_update", "exception"),
                         ("delivery_feedback", None), ("order_confirmation", None)):
        ctx = {k: v for k, v in FULL[(flow, 1)].items() if k != "order_number"}
        if status:
            ctx["status"] = status
        email = render(flow, 1, ctx)
        shown = (email.subject, email.preheader, re.sub(r"https?://\S+", "", email.text),
                 re.sub(r"<[^>]*>", "", email.html))  # what a reader sees (the review links carry the id for the shop)
        for part in shown:
            assert "c0000044-o1" not in part, (flow, part[:200])
        assert "your order" in email.subject.lower() or "your delivery" in email.subject.lower(), email.subject


def test_a_delivery_problem_without_a_tracking_link_neither_points_to_a_tracking_page_nor_promises_one():
    ctx = {k: v for k, v in FULL[("tracking_update", 1)].items() if k != "tracking_url"}
    email = render("tracking_update", 1, {**ctx, "status": "exception"})
    assert "tracking page" not in email.text and "tracking link" not in email.text
    assert "Reply to this email" in email.text
    linked = render("tracking_update", 1, {**FULL[("tracking_update", 1)], "status": "exception"})
    assert "Check the tracking page" in linked.text and "Track your parcel" in linked.text


def test_a_review_request_asks_to_tap_a_star_only_when_there_are_stars_to_tap():
    signed = render("delivery_feedback", 1)
    assert "Tap a star" in signed.text and "★" in signed.html
    cmd = command("delivery_feedback", 1, FULL[("delivery_feedback", 1)])
    unsigned = RENDERER.render(cmd, UNSUB, render_extra(Settings(), cmd))  # no unsubscribe.secret: no review links
    assert "★" not in unsigned.html and "Tap a star" not in unsigned.text and "tap a star" not in unsigned.html.lower()
    assert "Just reply to this email" in unsigned.text


def test_free_shipping_reads_as_free_not_as_a_zero_amount():
    ctx = {**FULL[("order_confirmation", 1)], "currency": "TRY", "shipping": "0.00", "total": "198.00"}
    tr = render("order_confirmation", 1, ctx, locale="tr")
    assert "Kargo: Ücretsiz" in tr.text and "₺0,00" not in tr.text and "₺0,00" not in tr.html
    assert "Shipping: Free" in render("order_confirmation", 1, ctx).text
