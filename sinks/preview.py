"""``shopmail preview``: render any flow/step/locale/variant to HTML, text and .eml, and screenshot it at
600 and 375 px in headless Chromium, in light and in dark mode; ``--all`` renders every email in every
language plus a contact sheet per language (light and dark side by side).

Contexts come from ``sinks.samples`` (``--minimal``: only the fields the engine always sends) or from
``--context FILE`` (the JSON an EmailCommand carries).

One browser serves every email: :class:`Browser` drives a single headless Chromium over the DevTools
protocol on a pipe (``--remote-debugging-pipe``: no port, no extra library), loads each email into the same
page and emulates ``prefers-color-scheme`` and the viewport width. :func:`audit` runs the contrast check
(``CONTRAST_AUDIT``) the tests use: every visible text node against its effective background, WCAG 2.x
contrast, 4.5:1 (3:1 for large text)."""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import typer

from sinks.render_context import render_extra
from sinks.brand import brand_problems
from sinks.mime import build_mime, list_links, sender_identity
from sinks.rendering import Renderer, shipped_locales
from sinks.samples import FULL, MINIMAL, command
from streams.config import Settings

PREVIEW_KEY = "preview-only-key"  # signs a preview's links when unsubscribe.secret is unset (never a real key)

WIDTHS = (600, 375)
MODES = ("light", "dark")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_STYLE = re.compile(r"<style\b[^>]*>.*?</style>", re.S | re.I)


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium and one page, driven over the DevTools protocol (JSON messages separated
    by NUL on the pipe file descriptors 3 and 4). Use as a context manager."""

    def __init__(self, path: str | None = None, timeout_s: float = 60.0, offline: bool = False) -> None:
        """``offline``: https requests are refused (tests: sample images on hosts that do not exist)."""
        path = path or find_browser()
        if path is None:
            raise BrowserError("no headless Chromium found (install Debian's `chromium` package)")
        self._profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        to_browser_r, self._w = os.pipe()
        self._r, from_browser_w = os.pipe()

        def wire() -> None:  # in the child: the pipe ends become fds 3 and 4 (inheritable)
            a, b = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self._proc = subprocess.Popen(
            [path, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--remote-debugging-pipe",
             "--force-device-scale-factor=1", f"--user-data-dir={self._profile.name}", "--no-first-run",
             "about:blank"],
            preexec_fn=wire, close_fds=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._timeout_s = timeout_s
        self._buf = b""
        self._id = 0
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self._frame = self.call("Page.getFrameTree")["frameTree"]["frame"]["id"]
        if offline:
            self.call("Network.enable")
            self.call("Network.setBlockedURLs", {"urls": ["https://*"]})

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Ask the browser to quit (its helper processes leave the profile with it), then make sure."""
        if self._proc.poll() is None:
            try:
                os.write(self._w, json.dumps({"id": self._id + 1, "method": "Browser.close"}).encode() + b"\0")
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait(timeout=10)
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._profile.cleanup()

    def _call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self._buf:
                ready, _, _ = select.select([self._r], [], [], self._timeout_s)
                chunk = os.read(self._r, 1 << 20) if ready else b""
                if not chunk:
                    raise BrowserError(f"{method}: no answer from the browser")
                self._buf += chunk
            raw, _, self._buf = self._buf.partition(b"\0")
            answer = json.loads(raw)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                return answer.get("result", {})  # type: ignore[no-any-return]

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._call(method, params, self._session)

    def load(self, html: str, width: int, mode: str = "light") -> None:
        """Show ``html`` at ``width`` px with ``prefers-color-scheme: mode``; wait for its images."""
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": 800, "deviceScaleFactor": 1,
                                                         "mobile": False})
        self.call("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": mode}]})
        self.call("Page.setDocumentContent", {"frameId": self._frame, "html": html})
        self.evaluate("Promise.all([...document.images].map(i => i.decode().catch(() => null)))")

    def evaluate(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise BrowserError(f"script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def screenshot(self, png: Path) -> Path:
        """The whole page (not only the viewport) as PNG."""
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)") or 800)
        width = int(self.evaluate("document.documentElement.clientWidth") or 600)
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                    "clip": {"x": 0, "y": 0, "width": width, "height": height,
                                                             "scale": 1}})["data"]
        png.write_bytes(base64.b64decode(data))
        return png


# Every visible text node: its colour against the colour really behind it (ancestors' backgrounds
# composited, then the canvas: the page's own colour scheme decides it), WCAG 2.x relative luminance.
CONTRAST_AUDIT = r"""
(() => {
  const parse = s => { const m = s.match(/rgba?\(([^)]+)\)/); if (!m) return [0, 0, 0, 0];
    const p = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const over = (top, under) => { const a = top[3] + under[3] * (1 - top[3]); if (a === 0) return [0, 0, 0, 0];
    return [0, 1, 2].map(i => (top[i] * top[3] + under[i] * under[3] * (1 - top[3])) / a).concat([a]); };
  const probe = document.createElement('div'); probe.style.cssText = 'background-color:Canvas;position:absolute';
  document.documentElement.appendChild(probe);
  const canvas = parse(getComputedStyle(probe).backgroundColor); probe.remove();
  const lum = c => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); };
  const background = el => { const layers = [];
    for (let e = el; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor); if (c[3] > 0) layers.push(c); }
    let bg = canvas; for (let i = layers.length - 1; i >= 0; i--) bg = over(layers[i], bg); return bg; };
  const out = []; const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const text = n.textContent.trim(); if (!text) continue;
    const el = n.parentElement; if (!el.checkVisibility({opacityProperty: true, visibilityProperty: true})) continue;
    const r = document.createRange(); r.selectNodeContents(n); const box = r.getBoundingClientRect();
    if (box.width < 2 || box.height < 2) continue;
    const st = getComputedStyle(el); const bg = background(el); const fg = over(parse(st.color), bg);
    const [a, b] = [lum(fg), lum(bg)]; const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(st.fontSize); const large = size >= 24 || (size >= 18.66 && Number(st.fontWeight) >= 700);
    out.push({text: text.slice(0, 60), ratio: Math.round(ratio * 100) / 100, need: large ? 3 : 4.5,
              color: st.color, background: `rgb(${bg.slice(0, 3).map(Math.round).join(', ')})`});
  }
  return out;
})()
"""

LOGO_BOXES = r"""[...document.images].filter(i => i.naturalWidth > 0).map(i => ({src: i.src, natural: i.naturalWidth / i.naturalHeight,
  shown: i.getBoundingClientRect().width / i.getBoundingClientRect().height, width: i.getBoundingClientRect().width,
  page: document.documentElement.clientWidth}))"""


@dataclass(frozen=True)
class Contrast:
    text: str
    ratio: float
    need: float
    color: str
    background: str

    @property
    def ok(self) -> bool:
        return self.ratio >= self.need


def strip_styles(html: str) -> str:
    """The email as clients that drop ``<style>`` show it: inline styles only."""
    return _STYLE.sub("", html)


def audit(browser: Browser, html: str, mode: str = "light", width: int = 600) -> list[Contrast]:
    """The contrast of every visible text node of ``html`` shown in ``mode``."""
    browser.load(html, width, mode)
    return [Contrast(**row) for row in browser.evaluate(CONTRAST_AUDIT)]


@dataclass
class Preview:
    name: str
    files: dict[str, Path]


def render_preview(settings: Settings, out: Path, flow: str, step: int, locale: str, variant: str,
                   context: dict[str, Any], browser: Browser | None = None,
                   renderer: Renderer | None = None) -> Preview:
    """HTML, text and .eml of one email; with ``browser``, PNGs at 600 and 375 px in light and dark mode."""
    renderer = renderer or Renderer(shop_url=settings.flows.shop_url, brand=settings.brand,
                                    markets=settings.markets, links=settings.links)
    cmd = command(flow, step, context, locale=locale, variant=variant)
    # list links and review links are signed alike: with the configured key, else a preview-only one, so the
    # preview shows what a configured sink sends
    key = settings.unsubscribe.secret or PREVIEW_KEY
    links = list_links(settings.ses, key, cmd)
    link = links.pop("unsubscribe")
    signing = replace(settings, unsubscribe=replace(settings.unsubscribe, secret=key))
    email = renderer.render(cmd, link, render_extra(signing, cmd), list_links=links)
    name = f"{flow}_step{step}.{locale}.{variant}"
    out.mkdir(parents=True, exist_ok=True)
    files = {"html": out / f"{name}.html", "text": out / f"{name}.txt", "eml": out / f"{name}.eml"}
    files["html"].write_text(email.html)
    files["text"].write_text(email.text)
    marketing = cmd["category"] == "marketing"
    identity = sender_identity(settings.ses, cmd["category"], email.locale, settings.brand)
    files["eml"].write_bytes(build_mime(email, sender=identity.sender, reply_to=identity.reply_to, to=cmd["to"],
                                        command_id=cmd["command_id"], category=cmd["category"],
                                        unsubscribe_url=link if marketing else None,
                                        unsubscribe_mailto=settings.ses.unsubscribe_mailto if marketing else None,
                                        date_ms=1_767_139_200_000))
    if browser is not None:
        for mode in MODES:
            for width in WIDTHS:
                browser.load(email.html, width, mode)
                suffix = f"{width}" if mode == "light" else f"{width}.dark"
                files[f"png{suffix}"] = browser.screenshot(out / f"{name}.{suffix}.png")
    return Preview(name, files)


def contact_sheet(previews: list[Preview], path: Path, width: int = 375, columns: int = 6) -> Path:
    """Every email's ``width`` px screenshot, light and dark side by side, labelled, in one PNG."""
    from PIL import Image, ImageDraw

    scale = 0.5
    cells = []
    for p in previews:
        pair = [Image.open(p.files[key]).convert("RGB") for key in (f"png{width}", f"png{width}.dark")]
        thumbs = [im.resize((int(im.width * scale), int(im.height * scale))) for im in pair]
        cell = Image.new("RGB", (sum(t.width for t in thumbs) + 4, max(t.height for t in thumbs)), "white")
        cell.paste(thumbs[0], (0, 0))
        cell.paste(thumbs[1], (thumbs[0].width + 4, 0))
        cells.append((f"{p.name} (light | dark)", cell))
    cell_w = max(c.width for _, c in cells) + 16
    rows = [cells[i:i + columns] for i in range(0, len(cells), columns)]
    heights = [max(c.height for _, c in row) + 28 for row in rows]
    sheet = Image.new("RGB", (cell_w * min(columns, len(cells)), sum(heights)), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for row, h in zip(rows, heights):
        for i, (label, cell) in enumerate(row):
            draw.text((i * cell_w + 8, y + 6), label, fill="black")
            sheet.paste(cell, (i * cell_w + 8, y + 24))
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
                png: bool = typer.Option(True, help="screenshots at 600 and 375 px, light and dark, in headless Chromium"),
                config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file")) -> None:
        """Render emails to HTML, text, .eml and PNG (600 / 375 px, light and dark) without sending anything."""
        from streams.cli_settings import settings_from

        settings = settings_from(config)
        for problem in brand_problems(settings.brand):  # the sink refuses these; the preview shows them
            typer.echo(f"warning: {problem} (the sink refuses to start with these colours)", err=True)
        renderer = Renderer(shop_url=settings.flows.shop_url, brand=settings.brand, markets=settings.markets,
                            links=settings.links)
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
        browser = Browser() if png else None
        try:
            done = [render_preview(settings, out, f, s, loc, variant, ctx, browser=browser, renderer=renderer)
                    for f, s, loc, ctx in jobs]
        finally:
            if browser is not None:
                browser.close()
        for p in done:
            typer.echo("  ".join(str(path) for path in p.files.values()))
        if all_emails and png:
            for loc in shipped_locales():
                typer.echo(contact_sheet([p for p in done if f".{loc}." in p.name], out / f"contact-sheet.{loc}.png"))
