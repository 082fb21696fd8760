"""Build the raw MIME message the sink hands to SES (``Content.Raw``).

multipart/alternative (text first, then HTML); marketing mail carries RFC 8058 one-click unsubscribe:
``List-Unsubscribe: <https://…>`` (plus ``<mailto:…>`` only when ``ses.unsubscribe_mailto`` is configured,
which is meant for a mailbox whose mail reaches ``email.feedback``) and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``.

``List-Unsubscribe`` is written byte for byte as RFC 2369 shows it: one line, never folded and never
RFC 2047-encoded (Python's header folding would encode a long URL as ``=?utf-8?q?…?=``, which Gmail and
Yahoo do not recognise). Its URLs are ASCII by construction (percent-encoded), so a raw line is valid.

Addresses are checked before any header is built: a recipient with CR/LF (header injection) or one that is
not a single ``local@domain`` raises :class:`sinks.errors.InvalidAddress`.

Sender identity (:func:`sender_identity`): ``From`` carries a display name per language
(``ses.from_names``, else the shop's name), ``Reply-To`` a monitored mailbox (``ses.reply_to``, else the
support address); marketing mail comes from its own address and SES configuration set when configured, so
its reputation and its events stay apart from order mail.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from email.headerregistry import Address
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from typing import Any
from urllib.parse import quote, urlencode

from prometheus_client import Counter

from sinks import mime_writer as writer
from sinks.errors import InvalidAddress
from sinks.rendering import RenderedEmail
from sinks.unsubscribe_token import sign
from streams.config import BrandSettings, SesSettings, Settings

log = logging.getLogger("shopmail.sink.mime")

UNSIGNED_LINKS = Counter("shopmail_unsubscribe_links_unsigned_total",
                         "Unsubscribe links built without a signing key (the unsubscribe service rejects them)")

_DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")
_FORBIDDEN = re.compile(r"[\r\n\x00]")
_MSGID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")  # what a command id may put in a Message-ID's left part
_DOT_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")


def unsubscribe_link(base_url: str, command_id: str, customer_id: str, key: str | bytes | None = None,
                     locale: str = "en", purpose: str = "unsubscribe") -> str:
    """The one-click unsubscribe URL: ``base_url?c=<command>&u=<customer>&l=<locale>&t=<HMAC token>``.
    For the other list links (``purpose`` ``keep`` or ``preferences``) the same URL carries ``&a=<purpose>``
    and a token signed for that purpose (:mod:`sinks.unsubscribe_token`).

    Without ``key`` the link carries no token (counted in ``shopmail_unsubscribe_links_unsigned_total``);
    the unsubscribe service answers such a link with 403, so production must configure the key."""
    params = {"c": command_id, "u": customer_id, "l": locale or "en"}
    if purpose != "unsubscribe":
        params["a"] = purpose
    if key:
        params["t"] = sign(key, customer_id, command_id, params["l"], purpose)
    else:
        UNSIGNED_LINKS.inc()
        log.debug("unsubscribe link for %s built without a signing key", command_id)
    return f"{base_url}?{urlencode(params, quote_via=quote, safe='')}"


LIST_LINK_PURPOSES = ("unsubscribe", "keep", "preferences")


def list_links(ses: SesSettings, key: str | bytes | None, command: dict[str, Any]) -> dict[str, str]:
    """The signed list links of a command: ``unsubscribe`` (one-click), ``preferences`` (every marketing
    mail's footer) and ``keep`` (the win-back goodbye's "keep me subscribed")."""
    return {purpose: unsubscribe_link(ses.unsubscribe_base_url, command["command_id"], command["customer_id"],
                                      key=key, locale=command.get("locale") or "en", purpose=purpose)
            for purpose in LIST_LINK_PURPOSES}


def check_address(address: str, role: str = "to") -> str:
    """``address`` unchanged if it is one deliverable addr-spec, else :class:`InvalidAddress`."""
    if not isinstance(address, str) or not address.strip():
        raise InvalidAddress(role, str(address), "empty")
    if _FORBIDDEN.search(address):
        raise InvalidAddress(role, address, "contains CR, LF or NUL (header injection)")
    if address != address.strip() or any(c in address for c in " \t,;<>\"()[]\\"):
        raise InvalidAddress(role, address, "not a single bare addr-spec")
    local, at, domain = address.rpartition("@")
    if not at or not local:
        raise InvalidAddress(role, address, "missing local part or @")
    if not _DOMAIN.match(domain.encode("idna").decode("ascii") if not domain.isascii() else domain):
        raise InvalidAddress(role, address, f"domain {domain!r} is not a mail domain")
    if _DOT_ATOM.match(local) and domain.isascii():
        return address  # a dot-atom at a checked domain: what the RFC 5322 parser below accepts anyway
    try:
        Address(addr_spec=address)
    except (ValueError, IndexError) as exc:
        raise InvalidAddress(role, address, str(exc)) from exc
    return address


@dataclass(frozen=True)
class SenderIdentity:
    address: str  # the bare address SES authorises (FromEmailAddress)
    name: str  # display name of From ("" → none)
    reply_to: str | None
    configuration_set: str | None

    @property
    def sender(self) -> str:
        """The From header's value: ``Name <address>`` (the name quoted or encoded as RFC 5322 needs)."""
        return _sender_value(self.name, self.address) if self.name else self.address


@functools.lru_cache(maxsize=512)
def _sender_value(name: str, address: str) -> str:
    """Once per (name, address), not per mail: the ``email`` package's header model costs ~20 µs a call."""
    return str(Address(display_name=name, addr_spec=address))


def sender_identity(ses: SesSettings, category: str, locale: str, brand: BrandSettings | None = None) -> SenderIdentity:
    """Who a mail of ``category`` in language ``locale`` is from, where replies go, which configuration set.
    A configured address may carry a display name (``Nordwax & Co <shop@example.com>``): SES gets the bare
    address, and the name is used where ``ses.from_names`` has none for the language."""
    brand = brand or BrandSettings()
    marketing = category == "marketing"
    configured_name, address = split_sender((ses.marketing_from_address if marketing else "") or ses.from_address)
    config_set = (ses.marketing_configuration_set if marketing else "") or ses.configuration_set
    lang = (locale or "").replace("_", "-").split("-")[0]
    name = ses.from_names.get(locale, ses.from_names.get(lang, configured_name or brand.shop_name))
    reply_to = ses.reply_to or brand.support_email or None
    return SenderIdentity(address=address, name=name, reply_to=reply_to, configuration_set=config_set or None)


def split_sender(sender: str) -> tuple[str, str]:
    """(display name, addr-spec) of ``Name <a@b>`` or a bare ``a@b``."""
    if "<" in sender and sender.rstrip().endswith(">"):
        name, _, rest = sender.rpartition("<")
        return name.strip().strip('"'), rest.rstrip()[:-1]
    return "", sender


def check_mail_settings(settings: Settings) -> None:
    """Start-up checks of what every mail depends on; a ValueError names the setting to fix:
    the sender addresses (a display name is allowed, split off), the ``mailto:`` unsubscribe (refused unless
    another process reads that mailbox: shopmail does not), ``markets.tax_display`` keys (currency codes)
    and the brand colours' contrast (:func:`sinks.brand.check_brand`)."""
    from sinks.brand import check_brand

    ses = settings.ses
    for key in ("from_address", "marketing_from_address", "reply_to"):
        value = getattr(ses, key)
        if value:
            _name, address = split_sender(value) if key != "reply_to" else ("", value)
            try:
                check_address(address, key)
            except InvalidAddress as exc:
                raise ValueError(f"ses.{key} = {value!r} is not a usable address ({exc}); give a bare address or "
                                 f"'Name <address>' (display names per language: ses.from_names)") from exc
    if ses.unsubscribe_mailto and not ses.unsubscribe_mailto_read_externally:
        raise ValueError(f"ses.unsubscribe_mailto = {ses.unsubscribe_mailto!r}, but shopmail does not read that "
                         "mailbox: unsubscribes sent there would be lost. Unset it, or set "
                         "ses.unsubscribe_mailto_read_externally = true if another process reads it and unsubscribes")
    odd = sorted(k for k in settings.markets.tax_display if k != "default" and not re.fullmatch(r"[A-Z]{3}", k))
    if odd:
        raise ValueError(f"markets.tax_display is keyed by the order's currency (ISO 4217, e.g. EUR) or "
                         f"'default', not {odd}")
    check_brand(settings.brand)


def list_unsubscribe(unsubscribe_url: str | None, unsubscribe_mailto: str | None, command_id: str) -> str:
    parts = []
    if unsubscribe_url:
        parts.append(f"<{unsubscribe_url}>")
    if unsubscribe_mailto:
        parts.append(f"<mailto:{unsubscribe_mailto}?subject=unsubscribe%20{quote(command_id, safe='')}>")
    value = ", ".join(parts)
    if not value.isascii() or _FORBIDDEN.search(value):
        raise InvalidAddress("list-unsubscribe", value, "must be ASCII on one line")
    return value


def build_mime(rendered: RenderedEmail, *, sender: str, to: str, command_id: str, category: str,
               unsubscribe_url: str | None, unsubscribe_mailto: str | None, date_ms: int,
               reply_to: str | None = None) -> bytes:
    """``sender``: a bare address or ``Display Name <address>`` (:attr:`SenderIdentity.sender`).

    Written by :mod:`sinks.mime_writer` (the standard library's ``email`` package parses it back to the same
    headers and bodies it would have built, at a tenth of the CPU). An internationalised domain is written
    in its ASCII (IDNA) form, the only form a header may carry without SMTPUTF8."""
    check_address(to, "to")
    address, from_field = _from_field(sender)
    if reply_to:
        check_address(reply_to, "reply-to")
    headers = [writer.unstructured("Subject", rendered.subject), from_field,
               writer.mailbox("To", "", _ascii_address(to))]
    if reply_to:
        headers.append(writer.mailbox("Reply-To", "", _ascii_address(reply_to)))
    msgid = make_msgid(idstring=_MSGID_UNSAFE.sub("", command_id[:16]), domain=_ascii_address(address).split("@")[-1])
    headers += [f"Date: {format_datetime(datetime.fromtimestamp(date_ms // 1000, UTC))}",
                writer.fold("Message-ID", [msgid]) or f"Message-ID: {msgid}",  # one long line if it must
                writer.unstructured("X-Shopmail-Command-Id", command_id)]
    if category == "marketing" and (unsubscribe_url or unsubscribe_mailto):
        # written exactly as given: one line, no folding, no encoded words (checked ASCII without CR/LF)
        headers.append("List-Unsubscribe: " + list_unsubscribe(unsubscribe_url, unsubscribe_mailto, command_id))
        headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    return writer.multipart_alternative(headers, [writer.unstructured("Content-Language", rendered.locale)],
                                        [("plain", rendered.text), ("html", rendered.html)])


@functools.lru_cache(maxsize=512)
def _from_field(sender: str) -> tuple[str, str]:
    """(address, folded ``From`` field) of ``sender``, checked: once per sender, not per mail. A refusal
    raises :class:`InvalidAddress` every time (an exception is not cached)."""
    name, address = split_sender(sender)
    check_address(address, "from")
    if _FORBIDDEN.search(name):
        raise InvalidAddress("from", name, "display name contains CR, LF or NUL (header injection)")
    return address, writer.mailbox("From", name, _ascii_address(address))


def _ascii_address(address: str) -> str:
    """``local@domain`` with the domain in IDNA form when it is not ASCII (the local part is checked ASCII)."""
    if address.isascii():
        return address
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.encode('idna').decode('ascii')}"
