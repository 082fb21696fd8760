"""Message catalogs: every string of every template is translated in every shipped language, placeholders
intact, and no email mixes languages."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from sinks.rendering import I18N_DIR, TEMPLATE_DIR, Renderer, shipped_locales
from sinks.samples import FULL, MINIMAL, command

SHIPPED = ["de", "en", "it", "pl", "th", "tr"]
METHODS = [("**.mjml", "jinja2"), ("**.txt", "jinja2"), ("**.html", "jinja2")]
OPTIONS = {pattern: {"extensions": "jinja2.ext.i18n", "trimmed": "true"} for pattern, _ in METHODS}
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def template_messages() -> set[str | tuple[str, str]]:
    out: set[str | tuple[str, str]] = set()
    for _file, _line, message, _comments, _ctx in extract_from_dir(str(TEMPLATE_DIR), METHODS, OPTIONS):
        out.add(tuple(message) if isinstance(message, tuple) else message)  # type: ignore[arg-type]
    return out


def catalog_problems(i18n_dir: Path) -> list[str]:
    wanted = template_messages()
    problems = []
    for lang in shipped_locales(i18n_dir):
        with open(i18n_dir / lang / "LC_MESSAGES" / "messages.po", "rb") as fh:
            catalog = read_po(fh, locale=lang)
        for msgid in wanted:
            key = msgid[0] if isinstance(msgid, tuple) else msgid
            msg = catalog.get(key)
            strings = [] if msg is None else (list(msg.string) if isinstance(msg.string, tuple) else [msg.string])
            if msg is None or msg.fuzzy or not strings or not all(strings):
                problems.append(f"{lang}: missing {key!r}")
                continue
            if len(strings) != (catalog.num_plurals if isinstance(msgid, tuple) else 1):
                problems.append(f"{lang}: {key!r} has {len(strings)} forms")
            for s in strings:
                if set(PLACEHOLDER.findall(s)) != set(PLACEHOLDER.findall(key)):
                    problems.append(f"{lang}: {key!r} placeholders differ in {s!r}")
    return problems


def test_the_six_shop_languages_are_shipped():
    assert shipped_locales() == SHIPPED


def test_every_template_string_is_translated_in_every_shipped_language():
    assert template_messages(), "no messages extracted: templates must use {% trans %}"
    assert catalog_problems(I18N_DIR) == []


def test_a_language_missing_a_message_is_reported(tmp_path):
    shutil.copytree(I18N_DIR, tmp_path / "i18n")
    po = tmp_path / "i18n" / "pl" / "LC_MESSAGES" / "messages.po"
    po.write_text(po.read_text().replace('msgstr "Wróć do koszyka"', 'msgstr ""'))
    assert catalog_problems(tmp_path / "i18n") == ["pl: missing 'Return to your cart'"]


def english_fragments(lang: str) -> list[str]:
    """Literal English pieces (between placeholders, ≥ 8 chars) of messages this language translates differently."""
    with open(I18N_DIR / lang / "LC_MESSAGES" / "messages.po", "rb") as fh:
        catalog = read_po(fh, locale=lang)
    out = []
    for msg in catalog:
        if not msg.id or isinstance(msg.id, tuple):
            continue
        if msg.string == msg.id:
            continue
        out += [frag.strip() for frag in PLACEHOLDER.split(msg.id)[::2] if len(frag.strip()) >= 8]
    return out


@pytest.mark.parametrize("lang", [lang for lang in SHIPPED if lang != "en"])
def test_no_email_mixes_languages(lang):
    fragments = english_fragments(lang)
    renderer = Renderer()
    for samples in (FULL, MINIMAL):
        for (flow, step), ctx in sorted(samples.items()):
            for variant in ("control", "B"):
                email = renderer.render(command(flow, step, ctx, locale=lang, variant=variant), "https://u.example.com/x")
                assert email.locale == lang and f'<html lang="{lang}"' in email.html
                for part in (email.subject, email.preheader, email.text, email.html):
                    leaked = [f for f in fragments if re.search(rf"(?<!\w){re.escape(f)}(?!\w)", part)]
                    assert not leaked, f"{flow}/step{step} {lang}: English {leaked}"


def test_the_mixing_check_would_catch_an_untranslated_string():
    assert "Return to your cart" in english_fragments("de")
