"""``shopmail preview``: render any flow/step/locale/variant to HTML, text and .eml, and screenshot it at
600 and 375 px in headless Chromium; ``--all`` renders every email in every language plus a contact sheet.

Contexts come from ``sinks.samples`` (``--minimal``: only the fields the engine always sends) or from
``--context FILE`` (the JSON an EmailCommand carries)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer

from sinks.mime import build_mime, unsubscribe_link
from sinks.rendering import Renderer, shipped_locales
from sinks.samples import FULL, MINIMAL, command
from streams.config import Settings

WIDTHS = (600, 375)
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def screenshot(browser: str, html_file: Path, png: Path, width: int, max_height: int = 4000) -> Path:
    """Full-page PNG at ``width`` px: a tall headless window, then the empty background below the email cropped."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--force-device-scale-factor=1", f"--user-data-dir={profile}", "--no-first-run",
                        f"--window-size={width},{max_height}", f"--screenshot={png}", html_file.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
    with Image.open(png) as img:
        rgb = img.convert("RGB")
        background = rgb.getpixel((0, rgb.height - 1))
        bottom = rgb.height
        while bottom > 1 and all(rgb.getpixel((x, bottom - 1)) == background for x in range(0, rgb.width, 3)):
            bottom -= 1
        rgb.crop((0, 0, rgb.width, min(rgb.height, bottom + 24))).save(png)
    return png


@dataclass
class Preview:
    name: str
    files: dict[str, Path]


def render_preview(settings: Settings, out: Path, flow: str, step: int, locale: str, variant: str,
                   context: dict[str, Any], png: bool = True, renderer: Renderer | None = None) -> Preview:
    renderer = renderer or Renderer(shop_url=settings.flows.shop_url, brand=settings.brand)
    cmd = command(flow, step, context, locale=locale, variant=variant)
    link = unsubscribe_link(settings.ses.unsubscribe_base_url, cmd["command_id"], cmd["customer_id"],
                            key=settings.unsubscribe.secret or "preview-only-key", locale=locale)
    email = renderer.render(cmd, link)
    name = f"{flow}_step{step}.{locale}.{variant}"
    out.mkdir(parents=True, exist_ok=True)
    files = {"html": out / f"{name}.html", "text": out / f"{name}.txt", "eml": out / f"{name}.eml"}
    files["html"].write_text(email.html)
    files["text"].write_text(email.text)
    files["eml"].write_bytes(build_mime(email, sender=settings.ses.from_address, to=cmd["to"],
                                        command_id=cmd["command_id"], category=cmd["category"],
                                        unsubscribe_url=link if cmd["category"] == "marketing" else None,
                                        unsubscribe_mailto=settings.ses.unsubscribe_mailto
                                        if cmd["category"] == "marketing" else None, date_ms=1_767_139_200_000))
    if png:
        browser = find_browser()
        if browser is None:
            raise RuntimeError("no headless Chromium found (install Debian's `chromium` package) — or use --no-png")
        for width in WIDTHS:
            files[f"png{width}"] = screenshot(browser, files["html"], out / f"{name}.{width}.png", width)
    return Preview(name, files)


def contact_sheet(previews: list[Preview], path: Path, width: int = 375, columns: int = 6) -> Path:
    """Every email's ``width`` px screenshot side by side, labelled, in one PNG."""
    from PIL import Image, ImageDraw

    shots = [(p.name, Image.open(p.files[f"png{width}"]).convert("RGB")) for p in previews]
    scale = 0.5
    thumbs = [(n, im.resize((int(im.width * scale), int(im.height * scale)))) for n, im in shots]
    cell_w = max(t.width for _, t in thumbs) + 16
    rows = [thumbs[i:i + columns] for i in range(0, len(thumbs), columns)]
    heights = [max(t.height for _, t in row) + 28 for row in rows]
    sheet = Image.new("RGB", (cell_w * min(columns, len(thumbs)), sum(heights)), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for row, h in zip(rows, heights):
        for i, (label, thumb) in enumerate(row):
            draw.text((i * cell_w + 8, y + 6), label, fill="black")
            sheet.paste(thumb, (i * cell_w + 8, y + 24))
        y += h
    sheet.save(path)
    return path


def register(app: typer.Typer) -> None:
    @app.command()
    def preview(flow: str = typer.Option("abandoned_cart", help="flow name"),
                step: int = typer.Option(1, help="step number"),
                locale: str = typer.Option("en", help="customer locale, e.g. de, th, pl-PL"),
                variant: str = typer.Option("control", help="experiment variant (subject lines differ)"),
                context: Optional[Path] = typer.Option(None, help="JSON file with the command's context"),
                minimal: bool = typer.Option(False, help="sample with only the fields the engine always sends"),
                out: Path = typer.Option(Path("preview"), help="output directory"),
                all_emails: bool = typer.Option(False, "--all", help="every flow, step and language + contact sheet"),
                png: bool = typer.Option(True, help="screenshots at 600 and 375 px through headless Chromium"),
                config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file")) -> None:
        """Render emails to HTML, text, .eml and PNG (600 / 375 px) without sending anything."""
        from streams.cli.main import settings_from

        settings = settings_from(config)
        renderer = Renderer(shop_url=settings.flows.shop_url, brand=settings.brand)
        samples = MINIMAL if minimal else FULL
        if all_emails:
            jobs = [(f, s, loc, samples[(f, s)]) for loc in shipped_locales() for (f, s) in sorted(samples)]
        else:
            if context is not None:
                ctx = json.loads(context.read_text())
            elif (flow, step) in samples:
                ctx = samples[(flow, step)]
            else:
                raise typer.BadParameter(f"no sample for {flow}/step{step}; give --context")
            jobs = [(flow, step, locale, ctx)]
        done = [render_preview(settings, out, f, s, loc, variant, ctx, png=png, renderer=renderer)
                for f, s, loc, ctx in jobs]
        for p in done:
            typer.echo("  ".join(str(path) for path in p.files.values()))
        if all_emails and png:
            for loc in shipped_locales():
                typer.echo(contact_sheet([p for p in done if f".{loc}." in p.name], out / f"contact-sheet.{loc}.png"))
