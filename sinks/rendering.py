"""Render an EmailCommand into subject, preheader, HTML and text.

Layout: MJML (``sinks/templates/layout.mjml`` around ``emails/<flow>_step<n>.mjml``), compiled once per
process by MRML (``mjml-python``) into responsive HTML that still holds the jinja2 tags; jinja2 then fills
it per send. The text part, subject and preheader come from ``emails/<flow>_step<n>.txt`` (blocks
``subject``, ``preheader``, ``body``).

Words: jinja2's i18n extension (``{% trans %}``) with Babel message catalogs in ``sinks/i18n/<lang>/
LC_MESSAGES/messages.po``, compiled in memory (``babel.messages.mofile``) when a renderer first needs a
language — only the ``.po`` files are committed, so a catalog edit can never ship with a stale ``.mo``.
Money, percentages and dates are formatted by Babel for the customer's locale (``de-AT`` formats as
Austria under the German catalog). A locale without a catalog, or one Babel does not know (``xx``), is
rendered whole in ``brand.default_locale`` and counted — an email is never in two languages.

Every ``href``/``src`` goes through ``safe_url``: only ``https``, ``http`` and ``mailto`` URLs render; others
(``javascript:``, ``data:``, relative…) are dropped and counted. Links to the shop go through ``link``, which
adds the UTM parameters (``links``). A missing required field or template is a ``RenderError`` naming it;
optional fields may be absent or null and render sensible text.

Prices: a price is shown only in a currency the mail can vouch for. The mail's lines (cart, order) are in
the mail's ``currency``; a line that names its own ``currency`` (a back-in-stock price from the inventory
feed) and every suggestion (cross-sell, new arrivals) is shown with its price only when that currency is
known and is the mail's — otherwise as a name and a link. A mail whose own currency is unknown shows no line
prices, and its totals as plain numbers without a currency (never a guessed one). Markets (``markets``): tax
shown as included in the total or as an added charge — told by the order's own amounts when they add up one
way only, else by the order's currency (the shop's market) — and a legal text per market. Brand values that shape the layout (the logo's width, colours)
are compiled into the MJML, so MJML lays the logo out at its real width (``[[ brand.logo_width ]]``).
"""

from __future__ import annotations

import io
import json
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_time, get_timezone
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal, format_percent, get_currency_symbol
from babel.support import Translations
from jinja2 import (Environment, FileSystemLoader, StrictUndefined, Template, TemplateNotFound, UndefinedError,
                    pass_context)
from mjml import mjml2html
from prometheus_client import Counter

from sinks.links import utm_params, with_utm
from streams.config import BrandSettings, LinkSettings, MarketSettings

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
I18N_DIR = Path(__file__).resolve().parent / "i18n"
SAFE_SCHEMES = ("https", "http", "mailto")

URLS_DROPPED = Counter("shopmail_render_urls_dropped_total",
                       "Template URLs not rendered because their scheme is not https/http/mailto", ["scheme"])
LOCALE_FALLBACKS = Counter("shopmail_render_locale_fallback_total",
                           "Emails rendered in the default locale instead of the customer's", ["reason"])
_KNOWN_BAD = ("javascript", "data", "vbscript", "file", "ftp")

# Fields a flow's context always carries (the engine emits them); anything else is optional.
REQUIRED: dict[str, tuple[str, ...]] = {
    "abandoned_cart": ("items", "cart_total", "currency"),
    "order_confirmation": ("order_id", "items", "total"),
    "shipping_confirmation": ("order_id", "status"),
    "tracking_update": ("order_id", "status"),
    "delivery_feedback": ("order_id",),
    "win_back": ("offer_percent",),
    "browse_abandonment": ("items", "currency", "product_url"),
    "price_drop": ("items", "currency", "product_url", "price", "previous_price"),
}
OPTIONAL: dict[str, Any] = {
    "first_name": None, "currency": None, "cart_url": None, "order_number": None, "subtotal": None,
    "shipping": None, "tax": None, "shipping_address": None, "order_url": None, "cross_sell": [], "carrier": None,
    "tracking_number": None, "tracking_url": None, "tracking_page_url": None, "feedback_url": None, "incentive": None, "coupon_code": None,
    "coupon_percent": None, "coupon_expires_at": None, "coupon_apply_url": None, "timezone": None, "items": [],
    "new_arrivals": [], "best_sellers": [], "review_links": [],
}
ITEM_OPTIONAL = ("image_url", "url", "stock", "quantity", "currency")


class RenderError(ValueError):
    """``reason`` is ``template_missing``, ``template_variable_missing`` or ``template_variable_invalid``;
    ``detail`` names it."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str
    locale: str  # the language of the whole email (html lang, Content-Language)
    preheader: str = ""


# ---- filters ----------------------------------------------------------------------------------

def safe_url(value: Any, fallback: str = "") -> str:
    """``value`` if it is an absolute https/http/mailto URL, else ``fallback`` (a dropped non-empty URL is counted)."""
    if value is None or value == "":
        return fallback
    url = str(value).strip()
    scheme = urlsplit(url).scheme.lower() if ":" in url else ""
    if scheme in SAFE_SCHEMES and (scheme == "mailto" or urlsplit(url).netloc) and not any(c in url for c in "\r\n\x00"):
        return url
    URLS_DROPPED.labels(scheme if scheme in _KNOWN_BAD else ("relative" if not scheme else "other")).inc()
    return fallback


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise RenderError("template_variable_invalid", f"{value!r} is not a decimal amount") from exc


@dataclass(frozen=True)
class MailFormat:
    """What one mail's amounts, dates and shop links are formatted with: the Babel locale, the recipient's
    time zone, the mail's currency, the UTM parameters of its flow, step and variant, and the shop's hosts.

    One per mail, in its context as ``mail``. The filters (``money``, ``percent``, ``date``,
    ``time_of_day``, ``link``) read it from the context; the shared macros (``common.txt``,
    ``macros.html``, ``macros.txt``) take it, and every other per-mail value, as arguments. They are
    imported without context, so jinja2 builds each macro module once per process, not on every import
    of every render; what they read from outside their arguments is per process (the language's
    catalog, ``brand``: globals of the renderer's environments)."""

    locale: str  # Babel formatting locale ("de_AT")
    timezone: str | None = None
    currency: str | None = None
    utm: tuple[tuple[str, str], ...] | None = None
    shop_hosts: frozenset[str] = frozenset()

    def money(self, value: Any, currency: str | None = None, quantity: Any = None) -> str:
        """The amount in the locale's currency format; without a currency a plain number (never a guessed one)."""
        amount = _decimal(value) * (int(quantity) if quantity is not None else 1)
        return _money_text(str(amount), currency or None, self.locale)

    def percent(self, value: Any) -> str:
        return _percent_text(str(_decimal(value)), self.locale)

    def date(self, epoch_ms: Any) -> str:
        """The day (in the recipient's time zone), long form; Thai in the Buddhist era."""
        return _date_text(int(epoch_ms), str(self.timezone) if self.timezone else None, self.locale)

    def time_of_day(self, epoch_ms: Any) -> str:
        return _time_text(int(epoch_ms), str(self.timezone) if self.timezone else None, self.locale)

    def link(self, value: Any, fallback: str = "") -> str:
        """``safe_url``, plus the UTM parameters when the URL is the shop's (flow, step, variant)."""
        url = safe_url(value, fallback)
        if not url or not self.utm:
            return url
        return _tagged(url, self.utm, self.shop_hosts)


@pass_context
def money(ctx: Any, value: Any, currency: str | None = None, quantity: Any = None) -> str:
    return ctx["mail"].money(value, currency, quantity)


@lru_cache(maxsize=16384)
def _money_text(digits: str, currency: str | None, fmt: str) -> str:
    """Babel's formatting of one amount (a pure function of its arguments: the same prices recur in mail
    after mail, so each is formatted once per process). Keyed by the digits, not the Decimal, whose equal
    values (``-0`` and ``0``) would share an entry."""
    amount = Decimal(digits)
    if not currency:
        return format_decimal(amount, format="#,##0.00", locale=fmt)
    text = format_currency(amount, currency, locale=fmt)
    # CLDR currency spacing (as ICU applies it, Babel does not): a symbol made of letters ("THB") is kept
    # apart from the digits by a no-break space — "THB 1,980.00", not "THB1,980.00"
    symbol = get_currency_symbol(currency, locale=fmt)
    if symbol[-1:].isalpha() and text.startswith(symbol) and text[len(symbol):][:1].isdigit():
        text = f"{symbol}\xa0{text[len(symbol):]}"
    elif symbol[:1].isalpha() and text.endswith(symbol) and text[:-len(symbol)][-1:].isdigit():
        text = f"{text[:-len(symbol)]}\xa0{symbol}"
    return text


# Percentages, dates and times: pure functions of a few values that recur in mail after mail (a flow's
# offer, a coupon valid until the end of the recipient's day), so each is formatted by Babel once per process.

@lru_cache(maxsize=4096)
def _percent_text(digits: str, fmt: str) -> str:
    return format_percent(Decimal(digits) / 100, locale=fmt)


@lru_cache(maxsize=4096)
def _date_text(epoch_ms: int, timezone: str | None, fmt: str) -> str:
    when = datetime.fromtimestamp(epoch_ms / 1000, UTC).astimezone(_zone(timezone))
    if fmt.split("_")[0] == "th":  # Babel knows only the Gregorian calendar; Thai dates count from 543 BC
        return f"{format_date(when, format='d MMMM', locale=fmt)} พ.ศ. {when.year + 543}"
    return format_date(when, format="long", locale=fmt)


@lru_cache(maxsize=4096)
def _time_text(epoch_ms: int, timezone: str | None, fmt: str) -> str:
    when = datetime.fromtimestamp(epoch_ms / 1000, UTC).astimezone(_zone(timezone))
    return format_time(when, format="short", locale=fmt)


@pass_context
def percent(ctx: Any, value: Any) -> str:
    return ctx["mail"].percent(value)


@pass_context
def date(ctx: Any, epoch_ms: Any) -> str:
    return ctx["mail"].date(epoch_ms)


@pass_context
def time_of_day(ctx: Any, epoch_ms: Any) -> str:
    return ctx["mail"].time_of_day(epoch_ms)


def _zone(name: Any) -> Any:
    try:
        return get_timezone(str(name)) if name else UTC
    except LookupError:
        return UTC


# ---- catalogs and templates -------------------------------------------------------------------

def shipped_locales(i18n_dir: Path = I18N_DIR) -> list[str]:
    return sorted(p.parent.parent.name for p in i18n_dir.glob("*/LC_MESSAGES/messages.po"))


def load_translations(lang: str, i18n_dir: Path = I18N_DIR) -> Translations:
    """The ``.po`` catalog compiled to ``.mo`` in memory (fuzzy entries excluded, as msgfmt does)."""
    with open(i18n_dir / lang / "LC_MESSAGES" / "messages.po", "rb") as fh:
        catalog = read_po(fh, locale=lang)
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    buf.seek(0)
    return Translations(fp=buf)


_BRAND_MARK = re.compile(r"\[\[ brand\.(\w+) \]\]")


def compile_mjml(template_dir: Path, name: str, brand: BrandSettings | None = None) -> str:
    """layout.mjml around emails/<name>.mjml → responsive HTML (jinja tags kept) via MRML. Jinja statements
    before the first MJML tag of the body (imports) are put in front of the document. ``[[ brand.x ]]``
    marks are brand values MJML itself must see (sizes it lays out), filled in before compiling."""
    brand = brand or BrandSettings()
    layout = _BRAND_MARK.sub(lambda m: str(getattr(brand, m.group(1))), (template_dir / "layout.mjml").read_text())
    body = (template_dir / "emails" / f"{name}.mjml").read_text()
    cut = body.find("<mj-")
    prefix, mjml_body = body[:cut].strip(), body[cut:]
    html = mjml2html(layout.replace("<!-- content -->", mjml_body))
    return prefix + html


def _discounted(total: Any, percent: Any) -> str | None:
    """The cart total after a percentage coupon (rounded half up to the cent), or None without one."""
    if total is None or not isinstance(percent, int) or not 0 < percent < 100:
        return None
    return str((_decimal(total) * (100 - percent) / 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _one_line(text: str) -> str:
    """Collapse line breaks and runs of spaces; keep no-break spaces (``25\xa0%``, ``€\xa0198``)."""
    return re.sub(r"[ \t\r\n]+", " ", text).strip()


def email_names(template_dir: Path = TEMPLATE_DIR) -> list[str]:
    return sorted(p.stem for p in (template_dir / "emails").glob("*.mjml"))


def make_environment(template_dir: Path, translations: Translations, html: bool,
                     brand: BrandSettings | None = None) -> Environment:
    """``brand``: a global of the environment (the shared macros read it; it is per process, not per mail)."""
    # the HTML environment escapes every template it loads, including the macros shared with the text part
    # (common.txt): a macro's output is trusted by its caller, so it must escape its own variables
    # auto_reload off: a loaded template (a layout, the shared macros) is not checked against its file on
    # every include — templates ship with the release and never change under a running sink
    env = Environment(loader=FileSystemLoader(str(template_dir)), undefined=StrictUndefined, autoescape=html,
                      extensions=["jinja2.ext.i18n"], auto_reload=False)
    env.policies["ext.i18n.trimmed"] = True
    env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
    env.filters.update(safe_url=safe_url, money=money, percent=percent, date=date, time_of_day=time_of_day,
                       link=link)
    if brand is not None:
        env.globals["brand"] = brand
    return env


@pass_context
def link(ctx: Any, value: Any, fallback: str = "") -> str:
    return ctx["mail"].link(value, fallback)


@lru_cache(maxsize=16384)
def _tagged(url: str, utm: tuple[tuple[str, str], ...], shop_hosts: frozenset[str]) -> str:
    """``url`` with the UTM parameters if it is the shop's — the same few product and page links recur in
    mail after mail (a flow's step and variant set the parameters), so each is parsed and rebuilt once."""
    if urlsplit(url).netloc not in shop_hosts:
        return url
    return with_utm(url, dict(utm))


@lru_cache(maxsize=1024)
def _parsed_locale(requested: str) -> tuple[str, str] | None:
    """(language, Babel locale) of a locale tag, or None when Babel does not know it (customers' locales are
    a few tags recurring in mail after mail: each is parsed once per process)."""
    try:
        parsed = Locale.parse(requested.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return None
    return parsed.language, str(parsed)


class Renderer:
    def __init__(self, template_dir: Path = TEMPLATE_DIR, shop_url: str = "https://shop.example.com",
                 brand: BrandSettings | None = None, i18n_dir: Path = I18N_DIR,
                 markets: MarketSettings | None = None, links: LinkSettings | None = None) -> None:
        self.template_dir = template_dir
        self.shop_url = shop_url
        self.brand = brand or BrandSettings()
        self.markets = markets or MarketSettings()
        self.links = links or LinkSettings()
        self.i18n_dir = i18n_dir
        self.locales = shipped_locales(i18n_dir)
        if self.brand.default_locale not in self.locales:
            raise ValueError(f"brand.default_locale {self.brand.default_locale!r} has no catalog ({self.locales})")
        self.compiled = {name: compile_mjml(template_dir, name, self.brand) for name in email_names(template_dir)}
        self._lock = threading.Lock()
        self._templates: dict[tuple[str, str, bool], Template] = {}
        self._envs: dict[str, tuple[Environment, Environment]] = {}

    def resolve_locale(self, requested: str | None) -> tuple[str, str]:
        """(catalog language, Babel formatting locale) for a customer's locale."""
        default = self.brand.default_locale
        parsed = _parsed_locale(requested or default)
        if parsed is None:
            LOCALE_FALLBACKS.labels("unknown_locale").inc()
            return default, default
        if parsed[0] not in self.locales:
            LOCALE_FALLBACKS.labels("no_catalog").inc()
            return default, default
        return parsed

    def _template(self, lang: str, name: str, html: bool) -> Template:
        key = (lang, name, html)
        with self._lock:
            if key not in self._templates:
                if lang not in self._envs:
                    tr = load_translations(lang, self.i18n_dir)
                    self._envs[lang] = (make_environment(self.template_dir, tr, True, self.brand),
                                        make_environment(self.template_dir, tr, False, self.brand))
                html_env, text_env = self._envs[lang]
                if html:
                    if name not in self.compiled:
                        raise RenderError("template_missing", f"emails/{name}.mjml")
                    self._templates[key] = html_env.from_string(self.compiled[name])
                else:
                    self._templates[key] = text_env.get_template(f"emails/{name}.txt")
            return self._templates[key]

    def variables(self, command: dict[str, Any], unsubscribe_link: str, lang: str, fmt: str,
                  extra: dict[str, Any] | None = None, list_links: dict[str, str] | None = None) -> dict[str, Any]:
        flow = command["flow"]
        try:
            context = json.loads(command["context"])
        except (TypeError, ValueError) as exc:
            raise RenderError("template_variable_invalid", f"context is not JSON: {exc}") from exc
        if extra:
            context.update(extra)
        for required in REQUIRED.get(flow, ()):
            if context.get(required) is None:
                raise RenderError("template_variable_missing",
                                  f"'{required}' is undefined in {flow}/step{command['step']}")
        v: dict[str, Any] = {**OPTIONAL, "shop_url": self.shop_url,
                             **{k: val for k, val in context.items() if val is not None}}
        currency = v["currency"]
        v["items"] = [self._item(it, currency, own_line=True) for it in v["items"]]
        v["cross_sell"] = [self._item(it, currency) for it in v["cross_sell"] or []]
        v["new_arrivals"] = [self._item(it, currency) for it in v["new_arrivals"] or []]
        v["best_sellers"] = [self._item(it, currency) for it in v["best_sellers"] or []]
        brand = self.brand
        links = list_links or {}
        market_locale = fmt.replace("_", "-")
        shop_link = safe_url(v["shop_url"]) or safe_url(self.shop_url)
        support = (f"mailto:{brand.support_email}" if brand.support_email else "") or safe_url(brand.support_url)
        address = v["shipping_address"]
        v.update({
            "lang": lang, "locale": lang, "flow": flow, "step": command["step"],
            "variant": command.get("variant") or "control", "category": command["category"], "brand": brand,
            "shop_link": shop_link, "logo_url": safe_url(brand.logo_url), "support_link": safe_url(support),
            "support_label": brand.support_email or brand.support_url,
            "unsubscribe_link": unsubscribe_link, "unsubscribe_href": safe_url(unsubscribe_link, shop_link),
            "order_label": v.get("order_number") or None,  # no number → "your order", never the internal id
            "order_link": safe_url(v["order_url"]), "tracking_link": safe_url(v["tracking_page_url"] or v["tracking_url"]),
            "shipping_address": address.splitlines() if isinstance(address, str) else address,
            "story": brand.win_back_story.get(lang, ""),
            "preferences_href": safe_url(links.get("preferences")), "keep_href": safe_url(links.get("keep")),
            "tax_included": self._tax_included(v),
            "legal_text": self.markets.for_locale(self.markets.legal_text, market_locale),
            "discounted_total": _discounted(v.get("cart_total"), v.get("coupon_percent")),
            "low_stock_items": any(it["stock"] is not None and 0 < it["stock"] <= brand.low_stock_threshold
                                   for it in v["items"]),
        })
        utm = utm_params(self.links, command)
        v["mail"] = MailFormat(locale=fmt, timezone=v["timezone"], currency=currency,
                               utm=tuple(utm.items()) if utm else None,
                               shop_hosts=frozenset({urlsplit(self.shop_url).netloc, urlsplit(shop_link).netloc}))
        return v

    def _tax_included(self, v: dict[str, Any]) -> bool:
        """Whether the order's total includes its tax: the amounts tell when they add up one way only
        (subtotal + shipping = total → included; + tax = total → added), else the market of the order's
        currency (``markets.tax_display``)."""
        if v.get("tax") is not None and v.get("subtotal") is not None and v.get("total") is not None:
            base = _decimal(v["subtotal"]) + _decimal(v["shipping"] if v.get("shipping") is not None else 0)
            total, tax = _decimal(v["total"]), _decimal(v["tax"])
            if base == total and base + tax != total:
                return True
            if base + tax == total and base != total:
                return False
        return self.markets.tax_for(v.get("currency")) == "included"

    @staticmethod
    def _item(item: dict[str, Any], currency: str | None, own_line: bool = False) -> dict[str, Any]:
        """A line with every optional field; its price kept only in a currency the mail can vouch for: the
        mail's own ``currency``, named by the line (or implied, for the mail's ``own_line``s without one)."""
        if not isinstance(item, dict) or item.get("name") is None or "price" not in item:
            raise RenderError("template_variable_invalid", f"line item without name/price: {item!r}"[:200])
        line = {**{k: None for k in ITEM_OPTIONAL}, **item}
        priced_in = item["currency"] if "currency" in item else (currency if own_line else None)
        if currency is None or priced_in != currency:
            line["price"] = None  # unknown or another currency: never shown as if it were the mail's
        return line

    def render(self, command: dict[str, Any], unsubscribe_link: str, extra: dict[str, Any] | None = None,
               list_links: dict[str, str] | None = None) -> RenderedEmail:
        """``extra``: variables the sink adds to the command's context (e.g. a coupon's expiry);
        ``list_links``: the signed ``preferences`` and ``keep`` links (:func:`sinks.mime.list_links`)."""
        flow, step = command["flow"], command["step"]
        name = f"{flow}_step{step}"
        lang, fmt = self.resolve_locale(command.get("locale"))
        variables = self.variables(command, unsubscribe_link, lang, fmt, extra, list_links)
        try:
            text_tmpl = self._template(lang, name, html=False)
            html_tmpl = self._template(lang, name, html=True)
            blocks = text_tmpl.new_context(variables)
            subject = _one_line("".join(text_tmpl.blocks["subject"](blocks)))
            preheader = _one_line("".join(text_tmpl.blocks["preheader"](blocks)))
            variables.update(subject=subject, preheader=preheader)
            text = text_tmpl.render(variables)
            html = html_tmpl.render(variables)
        except UndefinedError as exc:
            raise RenderError("template_variable_missing", f"{exc.message} in {flow}/step{step} ({lang})") from exc
        except TemplateNotFound as exc:
            raise RenderError("template_missing", f"{exc.name} (needed by {flow}/step{step})") from exc
        except KeyError as exc:
            raise RenderError("template_missing", f"block {exc} in emails/{name}.txt") from exc
        return RenderedEmail(subject=subject, html=html, text=text.strip() + "\n", locale=lang, preheader=preheader)
