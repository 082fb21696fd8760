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


# Words that agree in gender with the noun they describe (Polish adjectives and past tenses, Italian
# participles and adjectives in -o/-a, German inflected attributive adjectives and articles): next to a
# product name they are wrong for half the products ("Kurtka … jest znowu dostępny").
# (pattern, words looked at before and after the name, fixed phrases that do not agree)
GENDERED = {
    "pl": (re.compile(r"\w+(?:ny|na|ne|ty|ta|ły|ła|ło|wy|wa|iony|iona)$"), (3, 3), None),
    "it": (re.compile(r"\w+(?:at[oa]|it[oa]|ut[oa]|ov[oa])$|^(?:il|la|lo|un|una)$"), (3, 3), re.compile(r"\bdi nuovo\b", re.I)),
    # German predicate adjectives do not inflect ("ist wieder verfügbar"); an article or attributive
    # adjective right before the name does ("Ihr neuer …")
    "de": (re.compile(r"^(?:der|die|das|dem|den|des|ein|eine|einen|einem|einer|ihr\w+|unser\w*)$|\w+(?:er|es|em|en)$"),
           (1, 0), None),
}
PRODUCT = "%(product)s"


def gendered_neighbours(lang: str, text: str) -> list[str]:
    """Words near a product name in ``text`` that agree in gender in ``lang``."""
    if lang not in GENDERED or PRODUCT not in text:
        return []
    pattern, (before, after), idioms = GENDERED[lang]
    words = re.findall(r"%\(\w+\)s|\w+", idioms.sub(" ", text) if idioms else text)
    spots = [i for i, w in enumerate(words) if w == PRODUCT]
    return [words[j] for i in spots for j in range(max(0, i - before), min(len(words), i + after + 1))
            if j != i and not words[j].startswith("%(") and pattern.search(words[j].lower())]


def catalog_strings(lang: str) -> list[tuple[str, str]]:
    with open(I18N_DIR / lang / "LC_MESSAGES" / "messages.po", "rb") as fh:
        catalog = read_po(fh, locale=lang)
    out = []
    for msg in catalog:
        if msg.id:
            ids = msg.id if isinstance(msg.id, tuple) else (msg.id,)
            strings = msg.string if isinstance(msg.string, tuple) else (msg.string,)
            out += [(ids[0], s) for s in strings]
    return out


# Verbs that agree in number with their subject: a product name is singular for one product and plural for
# another ("Merino socks (3 pairs) is back"), so no catalog puts one within four words of a product name;
# nor a Polish preposition right before it (it would decline the name: "o kurtce").
AGREEING = {
    "en": re.compile(r"^(?:is|are|was|were|has|have|does|do|waits|wait|sells|sell|isn|aren)$"),
    "de": re.compile(r"^(?:ist|sind|war|waren|hat|haben|wartet|warten|kommt|kommen)$"),
    "it": re.compile(r"^(?:è|sono|era|erano|ha|hanno|aspetta|aspettano|torna|tornano)$"),
    "pl": re.compile(r"^(?:jest|są|był\w*|czeka|czekają|wrócił\w*|ma|mają)$"),
    "tr": re.compile(r"^\w+(?:ler|lar)$"),
}
DECLINING = {"pl": re.compile(r"^(?:o|w|we|na|z|ze|do|od|dla|przy|po|bez)$")}


def agreeing_neighbours(lang: str, text: str) -> list[str]:
    """Words near a product name in ``text`` that agree with it in number (or decline it)."""
    if PRODUCT not in text:
        return []
    words = re.findall(r"%\(\w+\)s|\w+", text)
    spots = [i for i, w in enumerate(words) if w == PRODUCT]
    verbs, preps = AGREEING.get(lang), DECLINING.get(lang)
    found = [words[i - 1] for i in spots if preps and i > 0 and preps.search(words[i - 1].lower())]
    return found + [words[j] for i in spots for j in range(max(0, i - 4), min(len(words), i + 5))
                    if verbs and j != i and not words[j].startswith("%(") and verbs.search(words[j].lower())]


def test_product_names_are_never_next_to_a_verb_that_agrees_in_number():
    problems = {(lang, s): agreeing_neighbours(lang, s) for lang in SHIPPED for _, s in catalog_strings(lang)}
    assert {k: v for k, v in problems.items() if v} == {}


def test_the_number_check_catches_a_product_name_beside_a_verb():
    assert agreeing_neighbours("en", "%(product)s is back in stock") == ["is"]
    assert agreeing_neighbours("de", "%(product)s ist wieder verfügbar") == ["ist"]
    assert agreeing_neighbours("it", "%(product)s è di nuovo disponibile") == ["è"]
    assert agreeing_neighbours("pl", "%(product)s wciąż na Ciebie czeka") == ["czeka"]
    assert agreeing_neighbours("pl", "Wciąż myślisz o %(product)s?") == ["o"]
    assert agreeing_neighbours("en", "Back in stock: %(product)s") == []


def test_product_names_are_never_next_to_a_word_that_agrees_in_gender():
    problems = {(lang, s): gendered_neighbours(lang, s) for lang in SHIPPED for _, s in catalog_strings(lang)}
    assert {k: v for k, v in problems.items() if v} == {}
    products = [s for lang in SHIPPED for mid, s in catalog_strings(lang) if PRODUCT in mid]
    assert len(products) == 2 * len(SHIPPED)  # back in stock and browse subjects, in every language


def test_the_gender_check_catches_a_product_name_beside_a_gendered_adjective():
    assert gendered_neighbours("pl", "%(product)s jest znowu dostępny") == ["dostępny"]
    assert gendered_neighbours("it", "%(product)s è tornato") == ["tornato"]
    assert gendered_neighbours("de", "Ihr neuer %(product)s ist da") == ["neuer"]
    assert gendered_neighbours("de", "%(product)s ist wieder verfügbar") == []
    assert gendered_neighbours("pl", "Znowu w sprzedaży: %(product)s") == []


REGISTER = {  # each language addresses the customer one way throughout
    "de": re.compile(r"\b(?:du|dich|dir|dein\w*)\b", re.I),  # "Sie"
    "pl": re.compile(r"\b(?:Pan|Pani|Państw\w*|Panu)\b"),  # "ty"
    "it": re.compile(r"\b(?:Lei|Suo|Sua|Suoi|Sue)\b"),  # "tu"
    # "siz": no -sin endings and no bare (sen) imperatives on buttons and links
    "tr": re.compile(r"\b\w+(?:sin|sın|sun|sün)\b|(?:^|\s)(?:çık|durdur|dön|bak|gel|tıkla|kullan|seç)$"),
}


@pytest.mark.parametrize("lang", sorted(REGISTER))
def test_every_language_keeps_one_register(lang):
    assert [s for _, s in catalog_strings(lang) if REGISTER[lang].search(s)] == []


def test_english_copy_of_the_emails_uses_contractions():
    stiff = re.compile(r"\b(?:we are|it is|do not|we will|we have|you are|is not|there is|would not|what is)\b", re.I)
    emails = {m[0] if isinstance(m, tuple) else m
              for f, _, m, _, _ in extract_from_dir(str(TEMPLATE_DIR), METHODS, OPTIONS) if not f.startswith("pages")}
    assert emails and [m for m in emails if stiff.search(m)] == []


def test_a_thai_greeting_keeps_a_space_before_the_name():
    email = Renderer().render(command("abandoned_cart", 1, FULL[("abandoned_cart", 1)], locale="th"), "https://u.example.com/x")
    assert "สวัสดีคุณ Ada" in email.text and "คุณAda" not in email.text
    assert [s for _, s in catalog_strings("th") if "คุณ%(" in s] == []  # every name placeholder after คุณ
