"""What the renderer keeps between mails (macro modules, per language) and what it must not (one mail's
locale, time zone, currency or links in another's)."""

from __future__ import annotations

from typing import Any

import pytest
from jinja2 import Template

from sinks.render_context import render_extra
from sinks.rendering import Renderer, RenderedEmail
from sinks.samples import FULL, command
from streams.config import Settings, TrackingSettings, UnsubscribeSettings

UNSUB = "https://shop.example.com/unsubscribe?c=cmd-1&t=abc"
SETTINGS = Settings(unsubscribe=UnsubscribeSettings(secret="test-key"), tracking=TrackingSettings(secret="track-key"))


def render(renderer: Renderer, flow: str, step: int, **kw: Any) -> RenderedEmail:
    cmd = command(flow, step, {**FULL[(flow, step)], **kw.pop("context", {})}, **kw)
    return renderer.render(cmd, UNSUB, render_extra(SETTINGS, cmd))


def test_rendering_a_mail_again_builds_no_macro_module(monkeypatch: pytest.MonkeyPatch) -> None:
    renderer = Renderer()
    for flow, step in FULL:  # first renders: templates compiled, macro modules built once per language
        render(renderer, flow, step)
    built: list[str | None] = []
    make_module = Template.make_module

    def counting(self: Template, *args: Any, **kwargs: Any) -> Any:
        built.append(self.name)
        return make_module(self, *args, **kwargs)

    monkeypatch.setattr(Template, "make_module", counting)
    for flow, step in FULL:
        render(renderer, flow, step, variant="b", first_name="Grace", context={"timezone": "Asia/Bangkok"})
    assert built == []


@pytest.mark.parametrize("flow,step", [("order_confirmation", 1), ("abandoned_cart", 3), ("delivery_feedback", 1),
                                       ("tracking_update", 1), ("win_back", 2)])
def test_mails_in_two_locales_rendered_interleaved_are_each_as_when_rendered_alone(flow: str, step: int) -> None:
    """The macro modules are shared by every mail of a language: nothing of one mail (language, formatting
    locale, time zone, currency, UTM variant, name) may reach the next one."""
    mails = [dict(locale="de-AT", variant="control", first_name="Jörg", context={"timezone": "Europe/Vienna"}),
             dict(locale="en", variant="b", first_name=None,
                  context={"timezone": "America/New_York", "currency": "USD"}),
             dict(locale="th", variant="c", first_name="Somchai", context={"timezone": "Asia/Bangkok"})]
    alone = [render(Renderer(), flow, step, **dict(m, context=dict(m["context"]))) for m in mails]
    shared = Renderer()
    interleaved = [render(shared, flow, step, **dict(mails[i % 3], context=dict(mails[i % 3]["context"])))
                   for i in range(9)]
    for i, mail in enumerate(interleaved):
        assert mail == alone[i % 3]
    assert len({(m.subject, m.text, m.html) for m in alone}) == 3  # the three mails differ, so the check can fail
    assert [m.locale for m in alone] == ["de", "en", "th"]


@pytest.mark.parametrize("flow,step", [("order_confirmation", 1), ("abandoned_cart", 1)])
def test_mails_in_one_language_rendered_interleaved_each_show_their_own_name_and_currency(flow: str, step: int) -> None:
    """Mails of one language share every macro module and cache: each must still carry its own name, currency
    and time zone, checked in its own text (not only against a render that shares the process's caches)."""
    mails = [("Grace", "en", "USD", "$", "America/New_York"), ("Olivia", "en-GB", "GBP", "£", "Europe/London"),
             ("Kenji", "en", "JPY", "¥", "Asia/Tokyo")]
    shared = Renderer()
    for i in range(6):
        name, locale, currency, sign, zone = mails[i % 3]
        mail = render(shared, flow, step, locale=locale, first_name=name,
                      context={"timezone": zone, "currency": currency})
        assert name in mail.text and name in mail.html
        assert sign in mail.text and sign in mail.html
        for other, *_, other_sign, _ in mails:
            if other != name:
                assert other not in mail.text and other not in mail.html
            if other_sign != sign:
                assert other_sign not in mail.text
