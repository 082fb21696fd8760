"""Build the raw MIME message the sink hands to SES (``Content.Raw``).

multipart/alternative (text first, then HTML); marketing mail carries RFC 8058 one-click unsubscribe:
``List-Unsubscribe: <https://…>, <mailto:…>`` and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import quote

from sinks.rendering import RenderedEmail


def unsubscribe_link(base_url: str, command_id: str, customer_id: str) -> str:
    return f"{base_url}?c={quote(command_id)}&u={quote(customer_id)}"


def build_mime(rendered: RenderedEmail, *, sender: str, to: str, command_id: str, category: str,
               unsubscribe_url: str | None, unsubscribe_mailto: str | None, date_ms: int) -> bytes:
    msg = EmailMessage()
    msg["Subject"] = rendered.subject
    msg["From"] = sender
    msg["To"] = to
    msg["Date"] = formatdate(date_ms / 1000, usegmt=True)
    msg["Message-ID"] = make_msgid(idstring=command_id[:16], domain=sender.split("@")[-1])
    msg["X-Shopmail-Command-Id"] = command_id
    msg["Content-Language"] = rendered.locale
    if category == "marketing":
        parts = []
        if unsubscribe_url:
            parts.append(f"<{unsubscribe_url}>")
        if unsubscribe_mailto:
            parts.append(f"<mailto:{unsubscribe_mailto}?subject=unsubscribe%20{quote(command_id)}>")
        msg["List-Unsubscribe"] = ", ".join(parts)
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    return msg.as_bytes()
