"""The branded tracking page: signed tokens, the per-order view, the localized page, and the service
through the real broker (latest status within a second, restore from the compacted view topic, edited
tokens get 404) and in headless Chromium at 375 px."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from jinja2 import Environment
from jinja2.ext import extract_from_ast
from babel.messages.pofile import read_po

from schemas import serde
from streams.config import Settings, load_settings
from streams.kafka.io import produce_records, read_topic
from streams.kafka.topics import ensure_topics, topic_specs
from streams.tracking import view as views
from streams.tracking.page import LOCALE_DIR, ORDER_STATUS_LABELS, STATUS_LABELS, HERE, PageRenderer, pick_language, safe_link
from streams.tracking.service import TrackingService
from streams.tracking.tokens import make_token, token_order_id, tracking_page_url, verify_token

KEY = b"test-tracking-key"
T0 = 1_780_000_000_000


# ---- helpers shared with test_webhook_ingest ------------------------------------------------

def tracking_settings(settings: Settings) -> Settings:
    settings.tracking.secret = KEY.decode()
    settings.tracking.port = 0
    settings.tracking.web_port = 0
    settings.tracking.group_id = settings.topics.prefix + "tracking"
    settings.tracking.webhook_secrets = {"aftership": "as-secret", "generic": "gen-secret"}
    return settings


def create_topics(kafka: str, settings: Settings) -> None:
    assert ensure_topics(kafka, topic_specs(settings)).healthy  # the view topic is one of them


def start(settings: Settings, kafka: str) -> TrackingService:
    svc = TrackingService(settings, kafka).start()
    assert svc.store.ready.wait(30), svc.health()
    return svc


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def order(order_id: str = "o-1", customer_id: str = "c-1", at: int = T0, **kw: Any) -> dict[str, Any]:
    return {"event_id": f"{order_id}-placed", "customer_id": customer_id, "occurred_at": at, "type": "placed",
            "order_id": order_id, "items": [{"sku": "mug", "name": "Blue mug", "price": "12.50", "quantity": 2}],
            "total": "25.00", "currency": "EUR", **kw}


def shipment(status: str, at: int, order_id: str = "o-1", customer_id: str = "c-1", tn: str = "TN-1",
             url: str | None = "https://carrier.example/track?n=TN-1") -> dict[str, Any]:
    return {"event_id": f"{order_id}-{status}-{at}", "customer_id": customer_id, "occurred_at": at, "type": status,
            "shipment_id": f"{order_id}-s1", "order_id": order_id, "carrier": "DHL", "tracking_number": tn,
            "tracking_url": url}


def wait_for(url: str, text: str, timeout_s: float = 10.0, headers: dict[str, str] | None = None) -> tuple[int, str, float]:
    deadline = time.monotonic() + timeout_s
    code, body = 0, ""
    while time.monotonic() < deadline:
        code, body = get(url, headers)
        if code == 200 and text in body:
            return code, body, time.monotonic()
        time.sleep(0.02)
    raise AssertionError(f"{url} did not show {text!r} within {timeout_s}s (last {code}: {body[:300]})")


# ---- tokens -----------------------------------------------------------------------------------

def test_a_token_verifies_only_for_its_order_and_customer_and_any_edit_breaks_it():
    token = make_token(KEY, "o-1", "c-1")
    assert token_order_id(token) == "o-1"
    assert verify_token(KEY, token, "o-1", "c-1")
    assert not verify_token(KEY, token, "o-1", "c-2")  # same order id, other customer
    assert not verify_token(b"other-key", token, "o-1", "c-1")
    for i in range(len(token)):
        edited = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]
        assert not verify_token(KEY, edited, "o-1", "c-1"), i
    assert "/" not in token and "+" not in token and "=" not in token  # URL-safe
    assert token_order_id("garbage") is None and token_order_id(".x") is None


def test_the_page_url_is_built_from_settings_and_absent_without_a_key():
    s = load_settings(env={})
    assert tracking_page_url(s, "o-1", "c-1") is None
    s.tracking.secret = "k"
    s.tracking.base_url = "https://shop.example/track/"
    url = tracking_page_url(s, "o-1", "c-1", "de")
    assert url == f"https://shop.example/track/{make_token(b'k', 'o-1', 'c-1')}?lang=de"


def test_the_key_is_read_from_a_secret_file(tmp_path):
    (tmp_path / "key").write_text("from-file\n")
    s = load_settings(env={"SHOPMAIL_TRACKING__SECRET_FILE": str(tmp_path / "key")})
    assert s.tracking.signing_key() == b"from-file"
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "aftership").write_text("as\n")
    s = load_settings(env={"SHOPMAIL_TRACKING__WEBHOOK_SECRETS_DIR": str(tmp_path / "secrets"),
                           "SHOPMAIL_TRACKING__WEBHOOK_SECRETS": "generic=g"})
    assert s.tracking.webhook_key("aftership") == b"as" and s.tracking.webhook_key("generic") == b"g"
    assert s.tracking.webhook_key("../secrets/aftership") == b"" and s.tracking.webhook_key("nope") == b""


# ---- the view ---------------------------------------------------------------------------------

def test_the_view_keeps_the_timeline_in_event_time_and_ignores_repeats():
    v = views.new_view("o-1", "c-1")
    assert views.apply_order(v, order())
    assert views.apply_shipment(v, shipment("in_transit", T0 + 2000))
    assert views.apply_shipment(v, shipment("label_created", T0 + 1000))  # late arrival
    rev = v["rev"]
    assert not views.apply_shipment(v, shipment("in_transit", T0 + 2000))
    assert not views.apply_order(v, order())
    assert v["rev"] == rev
    assert [e["status"] for e in v["shipments"]["o-1-s1"]["events"]] == ["label_created", "in_transit"]
    assert views.latest_status(v) == "in_transit"
    assert views.decode(views.encode(v)) == v


def test_commands_bring_cross_sell_locale_and_coupon_but_never_for_a_holdout():
    v = views.new_view("o-1", "c-1")
    oc = {"flow": "order_confirmation", "locale": "de", "variant": "control"}
    assert views.apply_command(v, oc, {"order_id": "o-1", "cross_sell": [{"sku": "tea", "name": "Tea"}]})
    assert v["locale"] == "de" and v["cross_sell"][0]["sku"] == "tea"
    held = {"flow": "delivery_feedback", "locale": "de", "variant": "holdout"}
    assert not views.apply_command(v, held, {"order_id": "o-1", "coupon_code": "THANKS-1", "coupon_percent": 10})
    assert "coupon" not in v
    sent = dict(held, variant="control")
    assert views.apply_command(v, sent, {"order_id": "o-1", "coupon_code": "THANKS-1", "coupon_percent": 10})
    assert v["coupon"] == {"code": "THANKS-1", "percent": 10}


def test_the_store_never_replaces_a_newer_revision_and_indexes_tracking_numbers():
    store = views.ViewStore()
    v = views.new_view("o-1", "c-1")
    views.apply_shipment(v, shipment("in_transit", T0))
    newer = views.decode(views.encode(v))
    views.apply_shipment(newer, shipment("delivered", T0 + 1))
    assert store.put(newer) and not store.put(v)
    assert views.latest_status(store.get("o-1")) == "delivered"
    hit = store.by_tracking_number("TN-1")
    assert hit is not None and hit[1] == "o-1-s1"
    store.delete("o-1")
    assert store.by_tracking_number("TN-1") is None and store.get("o-1") is None


# ---- the page ---------------------------------------------------------------------------------

def _catalog_ids() -> set[str]:
    env = Environment(extensions=["jinja2.ext.i18n"])
    ids = set(STATUS_LABELS.values()) | set(ORDER_STATUS_LABELS.values())
    for path in (HERE / "templates").glob("*.html"):
        for _, _, msg in extract_from_ast(env.parse(path.read_text())):
            ids.add(msg if isinstance(msg, str) else msg[0])
    return ids


def test_every_page_string_has_a_german_translation():
    with (LOCALE_DIR / "de" / "LC_MESSAGES" / "tracking.po").open("rb") as fh:
        catalog = read_po(fh)
    missing = [m for m in sorted(_catalog_ids()) if m not in catalog or not catalog[m].string or catalog[m].fuzzy]
    assert not missing
    assert len(_catalog_ids()) >= 15


def test_the_page_speaks_german_and_renders_nothing_for_absent_parts():
    v = views.new_view("o-1", "c-1")
    views.apply_order(v, order())
    views.apply_shipment(v, shipment("out_for_delivery", T0 + 1000, url="javascript:alert(1)"))
    html = PageRenderer().render(v, "de")
    assert "In Zustellung" in html and "Ihre Bestellung o-1" in html and "25,00\xa0€" in html
    assert 'name="viewport"' in html
    assert "None" not in html and "javascript:" not in html
    assert 'id="coupon"' not in html and 'id="cross-sell"' not in html
    v["coupon"] = {"code": "THANKS-9", "percent": 10}
    v["cross_sell"] = [{"sku": "tea", "name": "Green tea", "url": "https://shop.example/tea", "image_url": None}]
    html = PageRenderer().render(v, "en")
    assert "THANKS-9" in html and "10% off" in html and 'href="https://shop.example/tea"' in html
    assert "Out for delivery" in html and "None" not in html


def test_language_comes_from_the_link_then_the_view_then_the_browser():
    avail = ["en", "de"]
    assert pick_language(["de-AT", "en"], None, avail) == "de"
    assert pick_language([None, None], "fr-FR,de;q=0.8,en;q=0.5", avail) == "de"
    assert pick_language([None, "en"], "de", avail) == "en"
    assert pick_language(["xx"], None, avail) == "en"
    assert safe_link("https://a.example") and not safe_link("javascript:x") and not safe_link("//evil")


# ---- the service through the broker -------------------------------------------------------------

@pytest.fixture
def tracked(kafka: str, settings: Settings) -> Iterator[tuple[Settings, TrackingService]]:
    tracking_settings(settings)
    create_topics(kafka, settings)
    svc = start(settings, kafka)
    try:
        yield settings, svc
    finally:
        svc.close()


@pytest.mark.integration
def test_the_page_shows_the_latest_status_within_a_second_and_survives_a_restart(kafka, tracked):
    settings, svc = tracked
    t = settings.topics
    produce_records(settings, kafka, t.name("orders"), "OrderEvent", [order()])
    produce_records(settings, kafka, t.name("shipments"), "ShipmentEvent", [shipment("label_created", T0 + 1000)])
    page = f"http://127.0.0.1:{svc.http.port}/track/{make_token(KEY, 'o-1', 'c-1')}"
    wait_for(page, "Shipping label created")
    produce_records(settings, kafka, t.name("shipments"), "ShipmentEvent", [shipment("in_transit", T0 + 2000)])
    committed = time.monotonic()  # produce_records returns after the broker acknowledged the write
    _, body, shown = wait_for(page, "<p class=\"status\">In transit</p>", timeout_s=5)
    assert shown - committed < 1.0, f"{shown - committed:.3f}s"
    assert "Blue mug" in body
    code, body = get(page + "?lang=de")
    assert code == 200 and "Unterwegs" in body

    edited = page[:-1] + ("A" if page[-1] != "A" else "B")
    assert get(edited)[0] == 404
    other = f"http://127.0.0.1:{svc.http.port}/track/{make_token(KEY, 'o-1', 'c-2')}"  # swapped customer
    assert get(other)[0] == 404
    assert get(f"http://127.0.0.1:{svc.http.port}/track/{make_token(b'guess', 'o-1', 'c-1')}")[0] == 404
    assert get(f"http://127.0.0.1:{svc.http.port}/track/nonsense")[0] == 404

    svc.close()
    stored = read_topic(kafka, settings.tracking.view_topic_name(t.prefix))
    assert stored and all(r.key == b"o-1" for r in stored)
    restarted = start(settings, kafka)  # same group: its input offsets are committed, so only the view topic helps
    try:
        assert restarted.store.get("o-1") is not None
        code, body = get(f"http://127.0.0.1:{restarted.http.port}/track/{make_token(KEY, 'o-1', 'c-1')}")
        assert code == 200 and "<p class=\"status\">In transit</p>" in body
        produce_records(settings, kafka, t.name("shipments"), "ShipmentEvent", [shipment("delivered", T0 + 3000)])
        wait_for(f"http://127.0.0.1:{restarted.http.port}/track/{make_token(KEY, 'o-1', 'c-1')}",
                 "<p class=\"status\">Delivered</p>")
    finally:
        restarted.close()
    latest = views.decode(read_topic(kafka, settings.tracking.view_topic_name(t.prefix))[-1].value)
    assert [e["status"] for e in latest["shipments"]["o-1-s1"]["events"]] == ["label_created", "in_transit", "delivered"]


@pytest.mark.integration
def test_cross_sell_and_locale_follow_the_engines_order_confirmation(kafka, tracked):
    settings, svc = tracked
    produce_records(settings, kafka, settings.topics.name("orders"), "OrderEvent", [order("o-7", "c-7")])
    cmd = {"command_id": "cmd-1", "customer_id": "c-7", "to": "a@example.com", "flow": "order_confirmation",
           "step": 1, "template": "order_confirmation/step1", "locale": "de", "variant": "control",
           "category": "transactional", "send_at": T0, "expires_at": T0 + 1, "trigger_event_id": "o-7-placed",
           "created_at": T0, "context": serde.canonical_json(
               {"order_id": "o-7", "cross_sell": [{"sku": "tea", "name": "Grüner Tee", "price": "4.00",
                                                   "image_url": None, "url": "https://shop.example/tea"}]})}
    produce_records(settings, kafka, settings.topics.name("commands"), "EmailCommand", [cmd])
    _, body, _ = wait_for(f"http://127.0.0.1:{svc.http.port}/track/{make_token(KEY, 'o-7', 'c-7')}", "Grüner Tee")
    assert "Das könnte Ihnen auch gefallen" in body  # the view's locale (no ?lang, no Accept-Language)


# ---- a real browser -------------------------------------------------------------------------------

def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.integration
@pytest.mark.skipif(_chromium() is None, reason="no chromium/chrome binary on PATH (apt-get install -y chromium)")
def test_headless_chromium_at_375_px_shows_the_latest_status_in_german(kafka, tracked, tmp_path):
    settings, svc = tracked
    produce_records(settings, kafka, settings.topics.name("orders"), "OrderEvent", [order("o-9", "c-9")])
    produce_records(settings, kafka, settings.topics.name("shipments"), "ShipmentEvent",
                    [shipment("out_for_delivery", T0 + 5000, order_id="o-9", customer_id="c-9", tn="TN-9")])
    url = f"http://127.0.0.1:{svc.http.port}/track/{make_token(KEY, 'o-9', 'c-9')}?lang=de"
    wait_for(url, "In Zustellung")
    base = [_chromium() or "", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=375,812", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(base + ["--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert '<p class="status">In Zustellung</p>' in dom.stdout
    assert "Blaue" not in dom.stdout and "Blue mug" in dom.stdout and "DHL · TN-9" in dom.stdout
    shot = tmp_path / "page.png"
    run = subprocess.run(base + [f"--screenshot={shot}", url], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(header[16:20], "big") == 375
