"""The tracking page: jinja2 with the i18n extension, strings from the Babel catalogs under
``streams/tracking/locale/<lang>/LC_MESSAGES/tracking.po`` compiled to .mo in memory when the page
renderer is created (at service start; no build step, nothing written to a read-only filesystem).
English is the source language. Dates and money are formatted with Babel for the page's language.

Language: ``?lang=`` (the tracking link carries the customer's profile locale) → the locale the view
learnt from the order confirmation → the browser's Accept-Language → English.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

from babel.core import UnknownLocaleError
from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency
from babel.support import NullTranslations, Translations
from jinja2 import Environment, FileSystemLoader, select_autoescape

from prometheus_client import Counter

from streams.tracking.view import latest_status

log = logging.getLogger("shopmail.tracking.page")
RENDER_FAILURES = Counter("shopmail_tracking_page_render_failures_total",
                          "Tracking pages rendered without the parts of the view that could not be shown")

HERE = Path(__file__).resolve().parent
LOCALE_DIR = HERE / "locale"
DOMAIN = "tracking"


def N_(message: str) -> str:  # noqa: N802 - gettext convention: marks a string for the catalog
    return message


STATUS_LABELS = {
    "label_created": N_("Shipping label created"), "in_transit": N_("In transit"),
    "out_for_delivery": N_("Out for delivery"), "delivered": N_("Delivered"),
    "exception": N_("Delivery problem"), "returned": N_("Returned to sender"),
}
ORDER_STATUS_LABELS = {"cancelled": N_("Order cancelled"), "refunded": N_("Order refunded")}


def languages() -> list[str]:
    """Languages with a catalog, plus English (the source)."""
    return ["en"] + sorted(p.name for p in LOCALE_DIR.iterdir() if (p / "LC_MESSAGES" / f"{DOMAIN}.po").is_file())


def compile_catalog(lang: str) -> NullTranslations:
    po = LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not po.is_file():
        return NullTranslations()
    with po.open("rb") as fh:
        catalog = read_po(fh, locale=lang, domain=DOMAIN)
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return Translations(fp=buf, domain=DOMAIN)


def pick_language(candidates: list[str | None], accept_language: str | None, available: list[str]) -> str:
    """The first candidate (e.g. "de_AT", "de-AT") whose language has a catalog, then the browser's
    Accept-Language in its q order, then English."""
    wanted = list(candidates)
    if accept_language:
        ranked = []
        for i, part in enumerate(accept_language.split(",")):
            tag, _, q = part.strip().partition(";q=")
            try:
                weight = float(q) if q else 1.0
            except ValueError:
                weight = 0.0
            ranked.append((-weight, i, tag.strip()))
        wanted += [tag for _, _, tag in sorted(ranked)]
    for cand in wanted:
        if cand:
            lang = cand.replace("-", "_").split("_")[0].lower()
            if lang in available:
                return lang
    return "en"


def safe_link(url: Any) -> str | None:
    """Only absolute http(s) URLs become links (never javascript:, data: or relative ones)."""
    if isinstance(url, str) and url.strip().lower().startswith(("https://", "http://")) and len(url) <= 2048:
        return url.strip()
    return None


def _money(amount: Any, currency: str | None, lang: str) -> str | None:
    if amount is None:
        return None
    try:
        value = Decimal(str(amount))
        if not value.is_finite():
            return None
        return format_currency(value, currency if isinstance(currency, str) and currency else "USD", locale=lang)
    except (ArithmeticError, ValueError, TypeError, UnknownLocaleError):
        return f"{amount} {currency or ''}".strip()[:100]


class PageRenderer:
    """One jinja2 environment per language (gettext installed once; safe across HTTP threads)."""

    def __init__(self) -> None:
        self.available = languages()
        self.translations = {lang: compile_catalog(lang) for lang in self.available}
        self.envs: dict[str, Environment] = {}
        for lang, tr in self.translations.items():
            env = Environment(loader=FileSystemLoader(str(HERE / "templates")),
                              autoescape=select_autoescape(["html"]), extensions=["jinja2.ext.i18n"],
                              trim_blocks=True, lstrip_blocks=True)
            env.install_gettext_translations(tr, newstyle=True)  # type: ignore[attr-defined]
            self.envs[lang] = env

    def render(self, view: dict[str, Any], lang: str) -> str:
        """The page; a view whose data the page cannot show (a defect upstream) still renders: the parts
        that fail are left out, and the failure is logged."""
        try:
            return self._render(view, lang)
        except Exception:  # noqa: BLE001 - logged; the customer still gets the order's page
            log.exception("tracking page of order %.80s: the view's data cannot be shown in full", view.get("order_id"))
            RENDER_FAILURES.inc()
            bare = {"order_id": str(view.get("order_id") or ""), "customer_id": view.get("customer_id"),
                    "shipments": {}, "items": []}
            return self._render(bare, lang)

    def _render(self, view: dict[str, Any], lang: str) -> str:
        gettext: Callable[[str], str] = self.translations[lang].gettext
        currency = view.get("currency")
        shipments = []
        for sid, sh in sorted(view["shipments"].items(), key=lambda kv: min(map(_at, kv[1]["events"]), default=0)):
            events = [{"status": e["status"], "iso": _iso(e["at"]), "when": _when(e["at"], lang)}
                      for e in sorted(sh["events"], key=_at) if e["status"] in STATUS_LABELS]
            shipments.append({"id": sid, "carrier": sh.get("carrier"), "tracking_number": sh.get("tracking_number"),
                              "link": safe_link(sh.get("tracking_url")), "events": events})
        items = [{"name": it.get("name") or it.get("sku"), "quantity": it.get("quantity") or 1,
                  "price": _money(it.get("price"), currency, lang)} for it in view.get("items") or []]
        suggestions = [{"name": s.get("name") or s.get("sku"), "link": safe_link(s.get("url")),
                        "image": safe_link(s.get("image_url"))}
                       for s in view.get("cross_sell") or [] if s.get("name") or s.get("sku")]
        coupon = view.get("coupon") if (view.get("coupon") or {}).get("code") else None
        order_status = view.get("order_status")
        return self.envs[lang].get_template("track.html").render(
            lang=lang, view=view, latest=latest_status(view), shipments=shipments,
            status_labels={k: gettext(v) for k, v in STATUS_LABELS.items()},
            order_status_label=gettext(ORDER_STATUS_LABELS[order_status]) if order_status in ORDER_STATUS_LABELS else None,
            items=items, total=_money(view.get("total"), currency, lang) if items else None,
            coupon=coupon, suggestions=suggestions)

    def not_found(self, lang: str) -> str:
        return self.envs[lang].get_template("not_found.html").render(lang=lang)


def _moment(ms: Any) -> datetime | None:
    """The UTC time of epoch milliseconds, or None for a value no calendar shows (NaN, year 285 million…)."""
    try:
        return datetime.fromtimestamp(float(ms) / 1000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError, TypeError):
        return None


def _iso(ms: Any) -> str:
    at = _moment(ms)
    return at.isoformat() if at else ""


@lru_cache(maxsize=4096)
def _when(ms: Any, lang: str) -> str:
    at = _moment(ms)
    return format_datetime(at, "long", tzinfo=timezone.utc, locale=lang) if at else ""


def _at(event: Any) -> float:
    """Sort key of a timeline event: its time, odd values first."""
    at = event.get("at") if isinstance(event, dict) else None
    return float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) and at == at else float("-inf")
