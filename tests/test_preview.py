"""`shopmail preview`: HTML, text, .eml and PNG screenshots (600 / 375 px) in headless Chromium."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest
from typer.testing import CliRunner

from sinks.preview import find_browser
from streams.cli.main import app

needs_chromium = pytest.mark.skipif(find_browser() is None,
                                    reason="headless Chromium not installed (Debian: apt-get install chromium)")


def test_preview_writes_html_text_and_an_eml_for_any_flow_locale_and_variant(tmp_path):
    ctx = tmp_path / "ctx.json"
    ctx.write_text('{"order_id": "o-9", "order_number": "#9", "items": [], "total": "5.00", "currency": "PLN"}')
    result = CliRunner().invoke(app, ["preview", "--flow", "order_confirmation", "--locale", "pl", "--context",
                                      str(ctx), "--no-png", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    base = "order_confirmation_step1.pl.control"
    assert "Zamówienie #9" in (tmp_path / f"{base}.txt").read_text() and "5,00" in (tmp_path / f"{base}.html").read_text()
    msg = message_from_bytes((tmp_path / f"{base}.eml").read_bytes(), policy=policy.default)
    assert msg["Subject"] == "Zamówienie #9 potwierdzone" and msg["Content-Language"] == "pl"


def test_preview_all_renders_every_email_in_every_language(tmp_path):
    result = CliRunner().invoke(app, ["preview", "--all", "--no-png", "--minimal", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.glob("*.html"))) == 13 * 6 and len(list(tmp_path.glob("*.eml"))) == 78


@needs_chromium
def test_preview_screenshots_at_600_and_375_px(tmp_path):
    from PIL import Image

    result = CliRunner().invoke(app, ["preview", "--flow", "abandoned_cart", "--step", "2", "--locale", "th",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for width in (600, 375):
        with Image.open(tmp_path / f"abandoned_cart_step2.th.control.{width}.png") as img:
            assert img.width == width and 500 < img.height < 4000
            assert len(set(img.convert("L").getdata())) > 20  # something was drawn, not a blank page


@needs_chromium
def test_the_contact_sheet_shows_dark_mode_beside_light_mode(tmp_path):
    from PIL import Image

    from sinks.preview import Browser, contact_sheet, render_preview
    from sinks.samples import FULL
    from streams.config import Settings

    with Browser(offline=True) as browser:
        previews = [render_preview(Settings(), tmp_path, flow, step, "en", "control", FULL[(flow, step)], browser=browser)
                    for flow, step in (("abandoned_cart", 1), ("order_confirmation", 1))]
    for p in previews:
        assert {"png600", "png375", "png600.dark", "png375.dark"} <= set(p.files)
    with Image.open(contact_sheet(previews, tmp_path / "sheet.png")) as sheet:
        light = Image.open(previews[0].files["png375"])
        top = sheet.convert("L").crop((8, 24 + 40, 8 + light.width // 2, 24 + 80))
        dark = sheet.convert("L").crop((8 + light.width // 2 + 4, 24 + 40, 8 + light.width, 24 + 80))
        assert sum(top.getdata()) / (top.width * top.height) > 150  # the light rendering's page
        assert sum(dark.getdata()) / (dark.width * dark.height) < 60  # beside it, the dark one


def test_the_preview_signs_review_links_like_list_links_without_a_configured_key(tmp_path):
    result = CliRunner().invoke(app, ["preview", "--flow", "delivery_feedback", "--no-png", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "delivery_feedback_step1.en.control.txt").read_text()
    assert "Tap a star" in text and "rating=5" in text and "&t=" in text


def test_the_preview_warns_about_brand_colours_the_sink_would_refuse(tmp_path):
    config = tmp_path / "shop.toml"
    config.write_text('[brand]\nprimary_color = "#f59e0b"\nbutton_text_color = "#ffffff"\n')
    result = CliRunner().invoke(app, ["preview", "--flow", "abandoned_cart", "--no-png", "--out", str(tmp_path),
                                      "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "warning: button text" in result.output and "2.15:1" in result.output
