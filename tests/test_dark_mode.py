"""Every email reads in light mode, in dark mode (``prefers-color-scheme: dark``) and in clients that drop
``<style>``: one headless Chromium renders all 78 (13 emails × 6 languages) and measures the WCAG contrast of
every visible text node against the background really behind it. Logos keep their aspect ratio at 600 and
375 px."""

from __future__ import annotations

import http.server
import io
import threading
from collections.abc import Iterator

import pytest

from sinks.render_context import render_extra
from sinks.mime import list_links
from sinks.preview import Browser, Contrast, audit, find_browser, strip_styles
from sinks.rendering import Renderer, shipped_locales
from sinks.samples import FULL, command
from streams.config import BrandSettings, Settings, UnsubscribeSettings

pytestmark = pytest.mark.skipif(find_browser() is None,
                                reason="headless Chromium not installed (Debian: apt-get install chromium)")

LOGO_SIZE = (280, 80)  # a 2x logo: shown at brand.logo_width = 140 px, so 140 × 40
TALL_LOGO_SIZE = (120, 360)  # a tall logo: at logo_width 140 it would be 140 × 420 without a height cap


def _logo_png(size: tuple[int, int] = LOGO_SIZE) -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, "#1f2937")
    ImageDraw.Draw(img).rectangle((10, 10, size[0] - 10, size[1] - 10), fill="#f59e0b")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def logo_url() -> Iterator[str]:
    bodies = {"/logo.png": _logo_png(), "/tall.png": _logo_png(TALL_LOGO_SIZE)}

    class Logo(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = bodies[self.path]
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Logo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/logo.png"
    server.shutdown()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser(offline=True) as b:  # the logo comes from a local server; sample product images from nowhere
        yield b


@pytest.fixture(scope="module")
def emails(logo_url: str) -> list[tuple[str, str]]:
    """(name, html) of every email in every language, rendered as the sink does, with a real logo."""
    settings = Settings(unsubscribe=UnsubscribeSettings(secret="test-key"),
                        brand=BrandSettings(logo_url=logo_url, logo_width=140, logo_height=40))
    renderer = Renderer(brand=settings.brand, markets=settings.markets, links=settings.links)
    out = []
    for lang in shipped_locales():
        for (flow, step), ctx in sorted(FULL.items()):
            cmd = command(flow, step, ctx, locale=lang)
            links = list_links(settings.ses, "test-key", cmd)
            unsubscribe = links.pop("unsubscribe")
            email = renderer.render(cmd, unsubscribe, render_extra(settings, cmd), list_links=links)
            out.append((f"{flow}_step{step}.{lang}", email.html))
    return out


def failures(rows: list[Contrast]) -> list[str]:
    return [f"{r.text!r}: {r.ratio}:1 < {r.need}:1 ({r.color} on {r.background})" for r in rows if not r.ok]


def test_all_78_emails_are_rendered_for_the_check(emails):
    assert len(emails) == 13 * 6 == len({name for name, _ in emails})
    assert len(shipped_locales()) == 6


@pytest.mark.parametrize("mode,stripped", [("light", False), ("dark", False), ("dark", True)],
                         ids=["light", "dark", "dark-without-style"])
def test_every_text_of_every_email_has_enough_contrast(browser, emails, mode, stripped):
    problems = {}
    for name, html in emails:
        rows = audit(browser, strip_styles(html) if stripped else html, mode)
        assert len(rows) > 10, f"{name}: the audit saw almost no text"
        bad = failures(rows)
        if bad:
            problems[name] = bad
    assert problems == {}


def test_the_contrast_check_fails_on_the_dark_rule_that_left_the_card_table_white(browser):
    """The defect this test exists for: the dark rule repainted the wrapper but not the card's table, which
    keeps its inline white background, so the light text of dark mode sat on white."""
    html = ('<html><head><meta name="color-scheme" content="light dark"><style>@media (prefers-color-scheme: dark)'
            ' { .card { background: #18181b !important; } .card div { color: #f4f4f5 !important; } }</style></head>'
            '<body><div class="card"><table style="background:#ffffff"><tr><td><div style="color:#1f2937">'
            'Your cart is waiting</div></td></tr></table></div></body></html>')
    assert failures(audit(browser, html, "light")) == []
    (bad,) = failures(audit(browser, html, "dark"))
    assert "Your cart is waiting" in bad and "on rgb(255, 255, 255)" in bad


def test_footer_text_meets_4_5_to_1_in_light_mode(browser, emails):
    name, html = next(e for e in emails if e[0] == "abandoned_cart_step1.en")
    footer = [r for r in audit(browser, html, "light") if "signed up for news" in r.text]
    assert footer and all(r.ratio >= 4.5 for r in footer), footer


@pytest.mark.parametrize("width", [600, 375])
def test_the_logo_keeps_its_aspect_ratio(browser, emails, width):
    for name, html in emails[:12]:
        browser.load(html, width, "light")
        boxes = browser.evaluate(
            "[...document.images].filter(i => i.src.endsWith('/logo.png')).map(i => {"
            "const r = i.getBoundingClientRect(); return {w: r.width, h: r.height, nw: i.naturalWidth, nh: i.naturalHeight}})")
        assert len(boxes) == 1, name
        (box,) = boxes
        assert (box["nw"], box["nh"]) == LOGO_SIZE, f"{name}: the logo did not load"
        assert box["w"] == pytest.approx(140, abs=1), name  # brand.logo_width, not the column width
        assert box["w"] / box["h"] == pytest.approx(LOGO_SIZE[0] / LOGO_SIZE[1], rel=0.02), name


@pytest.mark.parametrize("width", [600, 375])
def test_a_tall_logo_is_capped_in_height_and_keeps_its_aspect_ratio(browser, logo_url, width):
    tall = logo_url.replace("/logo.png", "/tall.png")
    brand = BrandSettings(logo_url=tall, logo_width=140, logo_max_height=80)
    cmd = command("order_confirmation", 1, FULL[("order_confirmation", 1)])
    browser.load(Renderer(brand=brand).render(cmd, "https://u.example.com/x").html, width, "light")
    (box,) = browser.evaluate(
        "[...document.images].filter(i => i.src.endsWith('/tall.png')).map(i => {"
        "const r = i.getBoundingClientRect(); return {w: r.width, h: r.height, nw: i.naturalWidth, nh: i.naturalHeight}})")
    assert (box["nw"], box["nh"]) == TALL_LOGO_SIZE, "the logo did not load"
    assert box["h"] == pytest.approx(80, abs=1)  # brand.logo_max_height, not 420
    assert box["w"] / box["h"] == pytest.approx(TALL_LOGO_SIZE[0] / TALL_LOGO_SIZE[1], rel=0.02)
