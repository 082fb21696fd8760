"""The MIME writer (sinks/mime_writer.py) against the standard library: every mail it writes parses back,
with the ``email`` package's own parser, to the same headers and bodies as the message the ``email``
package builds itself — for every template in every shipped locale (Thai, Polish, Turkish… included) —
and its header and body encoders round-trip any text, keep lines within 78 characters and never let a
value start a header of its own."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from sinks import mime_writer as writer
from sinks.mime import build_mime, list_unsubscribe, split_sender
from sinks.rendering import Renderer, RenderedEmail, shipped_locales
from sinks.samples import FULL, MINIMAL, command

DATE_MS = 1_765_972_800_000
UNSUB = "https://shop.example.com/email/unsubscribe?c=3f9a1c0e7b2d4e6f8a1b2c3d4e5f6a7b&u=c1&l=th&t=abc"


def stdlib_mime(rendered: RenderedEmail, *, sender: str, to: str, command_id: str, category: str,
                unsubscribe_url: str | None, date_ms: int, reply_to: str | None = None) -> bytes:
    """The message as the ``email`` package builds it (the sink's builder before the writer)."""
    name, address = split_sender(sender)
    msg = EmailMessage()
    msg["Subject"] = rendered.subject
    msg["From"] = Address(display_name=name, addr_spec=address) if name else address
    msg["To"] = to
    if reply_to:
        msg["Reply-To"] = reply_to
    msg["Date"] = format_datetime(datetime.fromtimestamp(date_ms // 1000, UTC))
    msg["Message-ID"] = "<stdlib@example.com>"
    msg["X-Shopmail-Command-Id"] = command_id
    if category == "marketing" and unsubscribe_url:
        msg.set_raw("List-Unsubscribe", list_unsubscribe(unsubscribe_url, None, command_id))
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    msg["Content-Language"] = rendered.locale
    return msg.as_bytes(policy=msg.policy.clone(refold_source="none"))


def parsed(raw: bytes) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """(top-level headers as the parser reads them, [(content type, charset, decoded body)] per part);
    the boundary and Message-ID are random, so only their shape is kept."""
    msg = message_from_bytes(raw, policy=policy.default)
    headers = []
    for key, value in msg.items():
        if key == "Message-ID":
            assert re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>", str(value).strip()), value  # folded: a leading space
            value = "<id>"
        elif key == "Content-Type":
            value = re.sub(r'boundary="[^"]+"', "boundary", str(value))
        headers.append((key, str(value)))
    parts = [(p.get_content_type(), p.get_content_charset(), p.get_content()) for p in msg.iter_parts()]
    assert not msg.defects and all(not p.defects for p in msg.iter_parts()), msg.defects
    return headers, parts


def both(rendered: RenderedEmail, sender: str = "Example Shop <shop@example.com>", category: str = "marketing",
         to: str = "ada@example.com", command_id: str = "3f9a1c0e7b2d4e6f8a1b2c3d4e5f6a7b") -> tuple:
    kwargs = dict(sender=sender, to=to, command_id=command_id, category=category, unsubscribe_url=UNSUB,
                  date_ms=DATE_MS, reply_to="support@example.com")
    ours = build_mime(rendered, unsubscribe_mailto=None, **kwargs)
    return ours, stdlib_mime(rendered, **kwargs)


def test_every_template_in_every_locale_parses_back_to_what_the_email_package_builds():
    renderer = Renderer()
    locales = shipped_locales()
    assert {"th", "pl", "tr", "de"} <= set(locales)
    checked = 0
    for samples in (FULL, MINIMAL):
        for (flow, step), context in samples.items():
            for locale in locales:
                cmd = command(flow, step, context, locale=locale)
                rendered = renderer.render(cmd, UNSUB)
                ours, theirs = both(rendered, category=cmd["category"])
                assert parsed(ours) == parsed(theirs), (flow, step, locale)
                assert all(len(line) <= 998 for line in ours.split(b"\n"))
                checked += 1
    assert checked == 2 * len(FULL) * len(locales)


@pytest.mark.parametrize("name", ["Example Shop", "Nordwax & Co", "Nordwax, sklep", 'Say "hi" \\ shop',
                                  "Księgarnia Łódź", "Türk Mağazası", "ร้านค้าตัวอย่าง"])
def test_a_display_name_reads_back_exactly(name):
    rendered = RenderedEmail(subject="Hi", html="<p>x</p>", text="x", locale="en")
    ours, theirs = both(rendered, sender=f"{name} <shop@example.com>")
    msg = message_from_bytes(ours, policy=policy.default)
    assert msg["From"].addresses[0].display_name == name.strip('"')
    assert msg["From"].addresses[0].addr_spec == "shop@example.com"
    assert parsed(ours) == parsed(theirs)


def test_a_display_name_that_looks_like_an_encoded_word_is_read_back_literally():
    rendered = RenderedEmail(subject="=?utf-8?q?x?=", html="<p>x</p>", text="x", locale="en")
    msg = message_from_bytes(build_mime(rendered, sender="=?utf-8?q?x?= <shop@example.com>", to="ada@example.com",
                                        command_id="c1", category="transactional", unsubscribe_url=None,
                                        unsubscribe_mailto=None, date_ms=DATE_MS), policy=policy.default)
    assert msg["From"].addresses[0].display_name == "=?utf-8?q?x?=" and msg["Subject"] == "=?utf-8?q?x?="


def test_a_display_name_too_long_for_one_encoded_word_reads_back_as_the_email_package_reads_its_own():
    rendered = RenderedEmail(subject="Hi", html="<p>x</p>", text="x", locale="en")
    ours, theirs = both(rendered, sender=f"{'Ünïcode ' * 12}<shop@example.com>")
    head = [ln for ln in ours.split(b"\n\n")[0].split(b"\n") if not ln.startswith(b"List-Unsubscribe:")]
    assert all(len(line) <= 78 for line in head)  # List-Unsubscribe alone is one long line on purpose
    assert parsed(ours) == parsed(theirs)


subjects = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)


@hsettings(max_examples=300, deadline=None)
@given(subjects)
def test_any_subject_reads_back_the_same_on_ascii_lines_of_at_most_78(subject):
    field = writer.unstructured("Subject", subject)
    assert field.isascii()
    assert all(len(line) <= 78 for line in field.split("\n"))
    assert all(line[:1] in (" ", "\t") for line in field.split("\n")[1:]), "a continuation line must start with a space"
    raw = f"{field}\nTo: ada@example.com\n\nbody\n".encode("ascii")
    msg = message_from_bytes(raw, policy=policy.default)
    assert list(msg.keys()) == ["Subject", "To"], "the value must not start a header of its own"
    assert str(msg["Subject"]) == _as_read(subject)


@pytest.mark.parametrize("subject", ["\n", "Sale\n", " \n", "Ihr Warenkorb\n"])
def test_a_subject_ending_in_a_newline_is_encoded_not_written_as_a_line_break(subject):
    field = writer.unstructured("Subject", subject)
    assert "\n" not in field  # fits one line: a raw line break would end the header block
    msg = message_from_bytes(f"{field}\nTo: ada@example.com\n\nbody\n".encode("ascii"), policy=policy.default)
    assert list(msg.keys()) == ["Subject", "To"] and str(msg["Subject"]) == subject


def _as_read(subject: str) -> str:
    """What a reader gets back: the subject exactly — but the spaces before a plain printable-ASCII value, which
    the parser takes for the space after the colon."""
    return subject.lstrip(" ") if re.fullmatch(r"[\x20-\x7e]*", subject) and "=?" not in subject else subject


@pytest.mark.parametrize("subject", ["Ihr Warenkorb wartet – ein langer Betreff mit Umlauten äöü, der gefaltet werden muss",
                                     "Twój koszyk czeka — zniżka 10 % na zamówienie",
                                     "Sepetiniz sizi bekliyor — İstanbul'dan ılık, şık ürünler",
                                     "ตะกร้าของคุณยังรออยู่ ลดราคา 10 %",
                                     "x" * 120, "a " * 60, "Bcc: evil@example.com\r\nX: y", "=?utf-8?q?spoof?= 😀"])
def test_subjects_in_every_script_read_back_exactly(subject):
    field = writer.unstructured("Subject", subject)
    assert all(len(line) <= 78 for line in field.split("\n")) and field.isascii()
    msg = message_from_bytes(f"{field}\n\n".encode(), policy=policy.default)
    assert str(msg["Subject"]) == _as_read(subject) and list(msg.keys()) == ["Subject"]


texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=2000)


@hsettings(max_examples=300, deadline=None)
@given(texts, texts)
def test_any_pair_of_bodies_reads_back_as_the_email_package_reads_its_own(text, html):
    rendered = RenderedEmail(subject="s", html=html, text=text, locale="pl")
    ours, theirs = both(rendered, category="transactional")
    assert parsed(ours) == parsed(theirs)


@pytest.mark.parametrize("text, cte", [("plain ascii\nshort lines\n", "7bit"), ("zażółć gęślą jaźń\n", "8bit"),
                                       ("Twoje zamówienie jest w drodze. " * 5, "quoted-printable"), ("ร้านค้า" * 40, "base64"),
                                       ("x" * 200, "quoted-printable")])
def test_a_body_is_encoded_as_the_email_package_would_choose(text, cte):
    msg = EmailMessage()
    msg.set_content(text)
    assert writer.body(text)[0] == cte == msg["Content-Transfer-Encoding"]


def test_an_internationalised_domain_is_written_in_its_ascii_form():
    rendered = RenderedEmail(subject="Hi", html="<p>x</p>", text="x", locale="de")
    raw = build_mime(rendered, sender="shop@example.com", to="ada@bücher.de", command_id="c1", category="transactional",
                     unsubscribe_url=None, unsubscribe_mailto=None, date_ms=DATE_MS)
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg["To"].addresses[0].addr_spec == "ada@xn--bcher-kva.de" and raw.split(b"\n\n")[0].isascii()


def test_a_boundary_that_occurs_in_a_body_is_drawn_again(monkeypatch):
    taken, fresh = "=" * 15 + "1" * 19 + "==", "=" * 15 + "2" * 19 + "=="
    drawn = iter([taken, fresh])
    monkeypatch.setattr(writer, "new_boundary", lambda: next(drawn))
    text = f"before\n--{taken}\nafter"
    raw = build_mime(RenderedEmail(subject="s", html=text, text=text, locale="en"), sender="shop@example.com",
                     to="ada@example.com", command_id="c1", category="transactional", unsubscribe_url=None,
                     unsubscribe_mailto=None, date_ms=DATE_MS)
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg.get_boundary() == fresh
    assert [p.get_content() for p in msg.iter_parts()] == [text + "\n", text + "\n"]


def test_a_long_sender_domain_and_an_odd_command_id_still_give_one_valid_message_id():
    domain = "mail." + "very-long-subdomain-label." * 3 + "example.com"
    raw = build_mime(RenderedEmail(subject="s", html="<p>x</p>", text="x", locale="en"), sender=f"shop@{domain}",
                     to="ada@example.com", command_id="a b<c>ü\r\nX: y", category="transactional",
                     unsubscribe_url=None, unsubscribe_mailto=None, date_ms=DATE_MS)
    msg = message_from_bytes(raw, policy=policy.default)
    assert re.fullmatch(rf"<[A-Za-z0-9._-]+@{re.escape(domain)}>", str(msg["Message-ID"]).strip())
    assert msg["X-Shopmail-Command-Id"] == "a b<c>ü\r\nX: y" and "X" not in msg.keys()
    assert [p.get_content() for p in msg.iter_parts()] == ["x\n", "<p>x</p>\n"]
