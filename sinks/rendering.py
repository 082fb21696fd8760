"""Render an EmailCommand into subject + HTML + text with jinja2 (autoescape, StrictUndefined).

Templates live in ``sinks/templates``: a shared layout, one HTML and one text template per flow and
step (``<locale>/<flow>_step<n>.html|.txt``), strings and subject lines per locale
(``<locale>/strings.json``; ``subjects["<flow>/step<n>"][variant]``, falling back to ``default``).
A locale falls back to ``en`` file by file and string by string. A missing template or variable is a
``RenderError`` naming it — never an email with a hole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

from babel.numbers import format_currency
from jinja2 import (Environment, FileSystemLoader, StrictUndefined, TemplateNotFound, UndefinedError,
                    select_autoescape)

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
FALLBACK_LOCALE = "en"


class RenderError(ValueError):
    """``reason`` is ``template_missing`` or ``template_variable_missing``; ``detail`` names it."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str
    locale: str  # the locale actually used for the body


def money(value: Any, currency: str, locale: str) -> str:
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise RenderError("template_variable_invalid", f"{value!r} is not a decimal amount") from exc
    return format_currency(amount, currency or "USD", locale=_babel_locale(locale))


def _babel_locale(locale: str) -> str:
    return locale.replace("-", "_") if locale else FALLBACK_LOCALE


class Renderer:
    def __init__(self, template_dir: Path = TEMPLATE_DIR, shop_url: str = "https://shop.example.com") -> None:
        self.template_dir = template_dir
        self.shop_url = shop_url
        self.env = Environment(loader=FileSystemLoader(str(template_dir)), undefined=StrictUndefined,
                               autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
                               trim_blocks=False, lstrip_blocks=False)
        self.text_env = Environment(loader=FileSystemLoader(str(template_dir)), undefined=StrictUndefined,
                                    autoescape=False)
        for env in (self.env, self.text_env):
            env.filters["money"] = money

    @lru_cache(maxsize=64)  # noqa: B019 - one renderer per process
    def strings(self, locale: str) -> dict[str, Any]:
        base = self._load_strings(FALLBACK_LOCALE)
        if locale != FALLBACK_LOCALE:
            own = self._load_strings(locale)
            subjects = {**base.get("subjects", {})}
            for key, variants in own.get("subjects", {}).items():
                subjects[key] = {**subjects.get(key, {}), **variants}
            base = {**base, **own, "subjects": subjects}
        return base

    def _load_strings(self, locale: str) -> dict[str, Any]:
        path = self.template_dir / locale / "strings.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _resolve(self, locale: str, name: str) -> tuple[str, str]:
        for loc in dict.fromkeys((locale, locale.split("-")[0], FALLBACK_LOCALE)):
            if (self.template_dir / loc / name).exists():
                return f"{loc}/{name}", loc
        raise RenderError("template_missing", f"{name} (locale {locale}, fallback {FALLBACK_LOCALE})")

    def render(self, command: dict[str, Any], unsubscribe_link: str) -> RenderedEmail:
        flow, step, locale = command["flow"], command["step"], command.get("locale") or FALLBACK_LOCALE
        try:
            context = json.loads(command["context"])
        except (TypeError, ValueError) as exc:
            raise RenderError("template_variable_invalid", f"context is not JSON: {exc}") from exc
        strings = self.strings(locale)
        variables = {"first_name": None, "shop_url": self.shop_url, "currency": "USD", **context,
                     "locale": locale, "flow": flow, "step": step, "variant": command.get("variant", "control"),
                     "category": command["category"], "unsubscribe_link": unsubscribe_link, "t": strings}
        html_name, used = self._resolve(locale, f"{flow}_step{step}.html")
        text_name, _ = self._resolve(locale, f"{flow}_step{step}.txt")
        key = f"{flow}/step{step}"
        subjects = strings.get("subjects", {}).get(key)
        if not subjects:
            raise RenderError("template_missing", f"subject for {key} (locale {locale})")
        subject_src = subjects.get(variables["variant"], subjects.get("default"))
        if subject_src is None:
            raise RenderError("template_missing", f"subject for {key} variant {variables['variant']}")
        try:
            subject = " ".join(self.text_env.from_string(subject_src).render(variables).split())
            variables["subject"] = subject
            html = self.env.get_template(html_name).render(variables)
            text = self.text_env.get_template(text_name).render(variables)
        except UndefinedError as exc:
            raise RenderError("template_variable_missing", f"{exc.message} in {key} ({used})") from exc
        except TemplateNotFound as exc:
            raise RenderError("template_missing", f"{exc.name} (needed by {key})") from exc
        return RenderedEmail(subject=subject, html=html, text=text, locale=used)
