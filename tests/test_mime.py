"""Raw MIME bytes: RFC 8058/2369 one-click unsubscribe header on one unencoded line, signed links, and
recipient addresses checked before any header is built."""

from __future__ import annotations

from email import message_from_bytes, policy
from urllib.parse import parse_qs, urlsplit

import pytest

from sinks.errors import InvalidAddress, SinkError
from sinks.mime import build_mime, check_address, unsubscribe_link
from sinks.rendering import RenderedEmail
from sinks.unsubscribe_token import verify

REAL_ID = "3f9a1c0e7b2d4e6f8a1b2c3d4e5f6a7b"  # command ids are 32 hex characters
EMAIL = RenderedEmail(subject="Ihr Warenkorb wartet – ein langer Betreff mit Umlauten äöü, der gefaltet werden muss",
                      html="<html><body>x</body></html>", text="x", locale="de")
KEY = "test-secret-key"


def raw(to: str = "ada@example.com", category: str = "marketing", url: str | None = None) -> bytes:
    url = url or unsubscribe_link("https://shop.example.com/email/unsubscribe", REAL_ID, "customer-000123", key=KEY,
                                  locale="de")
    return build_mime(EMAIL, sender="shop@example.com", to=to, command_id=REAL_ID, category=category,
                      unsubscribe_url=url, unsubscribe_mailto="unsubscribe@example.com", date_ms=1_700_000_000_000)


def header_lines(data: bytes) -> list[bytes]:
    head = data.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in data else data.split(b"\n\n", 1)[0]
    return head.replace(b"\r\n", b"\n").split(b"\n")


def test_list_unsubscribe_is_one_raw_unencoded_line_with_a_real_command_id():
    data = raw()
    lines = header_lines(data)
    [line] = [ln for ln in lines if ln.lower().startswith(b"list-unsubscribe:")]
    after = lines[lines.index(line) + 1]
    assert not after[:1].isspace(), "List-Unsubscribe must not be folded onto a continuation line"
    assert b"=?" not in line, "List-Unsubscribe must not be RFC 2047-encoded"
    assert line.startswith(b"List-Unsubscribe: <https://shop.example.com/email/unsubscribe?c=" + REAL_ID.encode())
    assert line.endswith(b", <mailto:unsubscribe@example.com?subject=unsubscribe%20" + REAL_ID.encode() + b">")
    assert len(line) > 78  # long enough that default folding would have broken it
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in lines


def test_other_long_headers_are_still_folded_and_encoded_normally():
    msg = message_from_bytes(raw(), policy=policy.default)
    assert msg["Subject"] == EMAIL.subject and msg["Content-Language"] == "de"
    [subject] = [ln for ln in header_lines(raw()) if ln.startswith(b"Subject: ")]
    assert b"=?utf-8?" in subject and len(subject) <= 78  # encoded and folded


def test_transactional_mail_has_no_unsubscribe_headers():
    data = raw(category="transactional")
    assert b"List-Unsubscribe" not in data


def test_unsubscribe_link_carries_a_token_that_verifies_and_binds_every_field():
    link = unsubscribe_link("https://u.example.com/unsubscribe", REAL_ID, "cust 1&x", key=KEY, locale="th")
    q = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    assert q["c"] == REAL_ID and q["u"] == "cust 1&x" and q["l"] == "th" and len(q["t"]) == 43
    assert verify(KEY, q["u"], q["c"], q["l"], q["t"])
    assert not verify(KEY, "cust 2", q["c"], q["l"], q["t"])
    assert not verify(KEY, q["u"], q["c"], "de", q["t"])
    assert not verify("other-key", q["u"], q["c"], q["l"], q["t"])
    assert link.isascii() and " " not in link


def test_unsubscribe_link_without_a_key_has_no_token():
    link = unsubscribe_link("https://u.example.com/unsubscribe", "cmd-1", "c1")
    assert link.startswith("https://u.example.com/unsubscribe?c=cmd-1&u=c1") and "&t=" not in link


@pytest.mark.parametrize("bad", ["ada@example.com\r\nBcc: victim@example.com", "ada@example.com\n", "a\x00@example.com",
                                 "", "ada", "@example.com", "ada@", "ada@localhost", "Ada <ada@example.com>",
                                 "ada@example.com, eve@example.com", " ada@example.com", "ada@exa mple.com"])
def test_an_invalid_recipient_raises_a_typed_error_before_any_header_is_built(bad):
    with pytest.raises(InvalidAddress) as err:
        raw(to=bad)
    assert isinstance(err.value, SinkError) and err.value.role == "to"


@pytest.mark.parametrize("good", ["ada@example.com", "ada.lovelace+shop@mail.example.co.uk", "o'brien@example.ie"])
def test_ordinary_addresses_pass(good):
    assert check_address(good) == good


def test_from_carries_a_display_name_per_language_and_reply_to_a_monitored_mailbox():
    from sinks.mime import sender_identity
    from streams.config import BrandSettings, SesSettings

    ses = SesSettings(from_address="shop@nordwax.example", reply_to="hello@nordwax.example",
                      from_names={"de": "Nordwax & Co", "pl": "Nordwax, sklep"})
    brand = BrandSettings(shop_name="Nordwax")
    de = sender_identity(ses, "transactional", "de-AT", brand)
    assert de.sender == "Nordwax & Co <shop@nordwax.example>" and de.reply_to == "hello@nordwax.example"
    assert sender_identity(ses, "transactional", "en", brand).sender == "Nordwax <shop@nordwax.example>"
    for identity in (de, sender_identity(ses, "transactional", "pl", brand)):
        msg = message_from_bytes(build_mime(EMAIL, sender=identity.sender, reply_to=identity.reply_to,
                                            to="ada@example.com", command_id=REAL_ID, category="transactional",
                                            unsubscribe_url=None, unsubscribe_mailto=None, date_ms=0),
                                 policy=policy.default)
        assert msg["From"].addresses[0].display_name == identity.name
        assert msg["From"].addresses[0].addr_spec == "shop@nordwax.example"
        assert msg["Reply-To"] == "hello@nordwax.example"


def test_marketing_mail_has_its_own_sender_and_configuration_set():
    from sinks.mime import sender_identity
    from streams.config import SesSettings

    ses = SesSettings(from_address="orders@shop.example", configuration_set="tx",
                      marketing_from_address="news@news.shop.example", marketing_configuration_set="marketing")
    tx, mk = sender_identity(ses, "transactional", "en"), sender_identity(ses, "marketing", "en")
    assert (tx.address, tx.configuration_set) == ("orders@shop.example", "tx")
    assert (mk.address, mk.configuration_set) == ("news@news.shop.example", "marketing")
    shared = sender_identity(SesSettings(from_address="a@shop.example", marketing_configuration_set=""), "marketing", "en")
    assert shared.address == "a@shop.example" and shared.configuration_set == "shopmail"


def test_a_display_name_with_a_line_break_is_refused():
    with pytest.raises(InvalidAddress):
        build_mime(EMAIL, sender="Shop\r\nBcc: x@evil.example <shop@example.com>", to="ada@example.com",
                   command_id=REAL_ID, category="transactional", unsubscribe_url=None, unsubscribe_mailto=None,
                   date_ms=0)


def test_the_mailto_unsubscribe_is_not_advertised_unless_configured():
    from streams.config import SesSettings

    assert SesSettings().unsubscribe_mailto == ""
    url = unsubscribe_link("https://shop.example.com/email/unsubscribe", REAL_ID, "c1", key=KEY)
    msg = message_from_bytes(build_mime(EMAIL, sender="shop@example.com", to="ada@example.com", command_id=REAL_ID,
                                        category="marketing", unsubscribe_url=url,
                                        unsubscribe_mailto=SesSettings().unsubscribe_mailto, date_ms=0),
                             policy=policy.default)
    assert "mailto:" not in msg["List-Unsubscribe"] and msg["List-Unsubscribe"].startswith("<https://")


def test_a_from_address_with_a_display_name_is_split_not_refused():
    from sinks.mime import check_mail_settings, sender_identity
    from streams.config import SesSettings, Settings

    ses = SesSettings(from_address="Nordwax & Co <shop@nordwax.example>")
    check_mail_settings(Settings(ses=ses))  # accepted at start-up
    identity = sender_identity(ses, "transactional", "de")
    assert (identity.address, identity.name) == ("shop@nordwax.example", "Nordwax & Co")
    raw = build_mime(EMAIL, sender=identity.sender, to="ada@example.com", command_id="c", category="transactional",
                     unsubscribe_url=None, unsubscribe_mailto=None, date_ms=0)
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg["From"].addresses[0].display_name == "Nordwax & Co"
    assert msg["From"].addresses[0].addr_spec == "shop@nordwax.example"
    named = sender_identity(SesSettings(from_address=ses.from_address, from_names={"de": "Nordwax"}), "marketing", "de")
    assert named.name == "Nordwax"  # ses.from_names wins


def test_a_sender_whose_name_would_inject_a_header_is_refused_on_every_mail():
    bad = "Shop\r\nBcc: victim@example.org <shop@example.com>"
    for _ in range(2):  # the checked From field is kept per sender; a refusal is not kept, it is raised again
        with pytest.raises(InvalidAddress, match="header injection"):
            build_mime(EMAIL, sender=bad, to="ada@example.com", command_id="c", category="transactional",
                       unsubscribe_url=None, unsubscribe_mailto=None, date_ms=0)
    good = build_mime(EMAIL, sender="Shop <shop@example.com>", to="ada@example.com", command_id="c",
                      category="transactional", unsubscribe_url=None, unsubscribe_mailto=None, date_ms=0)
    assert message_from_bytes(good, policy=policy.default)["From"].addresses[0].display_name == "Shop"


def test_an_unusable_from_address_is_refused_at_start_up_with_a_line_naming_from_names():
    from sinks.mime import check_mail_settings
    from streams.config import SesSettings, Settings

    with pytest.raises(ValueError, match="ses.from_address.*ses.from_names"):
        check_mail_settings(Settings(ses=SesSettings(from_address="Nordwax & Co")))


def test_marketing_mail_uses_the_transactional_configuration_set_unless_one_is_configured():
    from sinks.mime import sender_identity
    from streams.config import SesSettings

    assert sender_identity(SesSettings(), "marketing", "en").configuration_set == "shopmail"  # an upgrade keeps working
    own = SesSettings(marketing_configuration_set="shopmail-marketing")
    assert sender_identity(own, "marketing", "en").configuration_set == "shopmail-marketing"


def test_a_mailto_unsubscribe_nobody_reads_is_refused_at_start_up():
    from sinks.mime import check_mail_settings
    from streams.config import SesSettings, Settings

    with pytest.raises(ValueError, match="does not read that mailbox"):
        check_mail_settings(Settings(ses=SesSettings(unsubscribe_mailto="unsubscribe@example.com")))
    check_mail_settings(Settings(ses=SesSettings(unsubscribe_mailto="unsubscribe@example.com",
                                                 unsubscribe_mailto_read_externally=True)))
    check_mail_settings(Settings())  # the default advertises no mailto


def test_brand_colours_under_the_contrast_minimum_are_refused_at_start_up():
    from sinks.brand import contrast_ratio
    from sinks.mime import check_mail_settings
    from streams.config import BrandSettings, Settings

    assert round(contrast_ratio("#ffffff", "#f59e0b"), 2) == 2.15
    with pytest.raises(ValueError, match=r"button text.*2\.15:1"):
        check_mail_settings(Settings(brand=BrandSettings(primary_color="#f59e0b")))
    with pytest.raises(ValueError, match="not a #rgb"):
        check_mail_settings(Settings(brand=BrandSettings(text_color="dark grey")))
    check_mail_settings(Settings(brand=BrandSettings(primary_color="#b45309")))  # a darker amber reads


def test_tax_display_keyed_by_language_is_refused_at_start_up():
    from sinks.mime import check_mail_settings
    from streams.config import MarketSettings, Settings

    with pytest.raises(ValueError, match="currency"):
        check_mail_settings(Settings(markets=MarketSettings(tax_display={"default": "added", "de": "included"})))
