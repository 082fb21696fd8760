"""Flows are plug-ins: every registered flow has its templates and subjects in every shipped locale."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sinks.rendering import I18N_DIR, TEMPLATE_DIR, Renderer, RenderError
from sinks.samples import MINIMAL, command
from streams.config import load_settings
from streams.core.engine import PartitionEngine
from streams.core.flows.base import Flow
from streams.core.flows.registry import FLOWS


def missing_templates(renderer: Renderer, flows: tuple[type[Flow], ...]) -> list[str]:
    """Every (flow, step, locale) the renderer cannot find a template or a subject for."""
    problems = []
    for flow in flows:
        for step in range(1, flow.steps + 1):
            name = f"{flow.name}_step{step}"
            for lang in renderer.locales:
                try:
                    text = renderer._template(lang, name, html=False)
                    renderer._template(lang, name, html=True)
                except (RenderError, OSError) as exc:  # jinja2's TemplateNotFound is an OSError
                    problems.append(f"{flow.name}/step{step} ({lang}): {exc}")
                    continue
                if "subject" not in text.blocks:
                    problems.append(f"{flow.name}/step{step} ({lang}): no subject block")
                    continue
                sample = MINIMAL.get((flow.name, step))
                if sample is not None:
                    subject = renderer.render(command(flow.name, step, sample, lang), "https://u.example/x").subject
                    if not subject.strip():
                        problems.append(f"{flow.name}/step{step} ({lang}): empty subject")
    return problems


def test_every_registered_flow_has_a_template_and_subject_for_every_step_in_every_shipped_locale():
    assert missing_templates(Renderer(), FLOWS) == []


def test_a_flow_without_a_template_for_one_of_its_steps_is_reported(tmp_path: Path):
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATE_DIR, templates)
    (templates / "emails" / "win_back_step3.txt").unlink()
    (templates / "emails" / "abandoned_cart_step2.mjml").unlink()
    problems = missing_templates(Renderer(template_dir=templates, i18n_dir=I18N_DIR), FLOWS)
    assert any(p.startswith("win_back/step3 (de)") for p in problems)
    assert any(p.startswith("abandoned_cart/step2 (th)") for p in problems)


def test_flows_are_registered_once_with_distinct_timer_priorities():
    names = [f.name for f in FLOWS]
    assert len(names) == len(set(names))
    timed = [f.priority for f in FLOWS if f.has_timers]
    assert len(timed) == len(set(timed))
    engine = PartitionEngine(load_settings(env={}), 0)
    assert [f.name for f in engine.flows] == names  # the engine runs exactly the registered flows


def test_the_commands_do_not_depend_on_the_registry_order(monkeypatch):
    from streams.core import engine as engine_module
    from tests.core_events import ITEMS, T0, cart, customer, inventory, order, run_engine, tick, view

    sold_out = [{**ITEMS[0], "stock": 0}]
    day = 24 * 3600 * 1000
    events = [customer("a"), customer("b"), cart("a", T0, items=sold_out), view("b", T0, sku="MUG", price="14.00"),
              view("b", T0 + 1, sku="TEE"), tick(T0 + 4 * day), inventory("MUG", T0 + 4 * day, "restocked"),
              inventory("MUG", T0 + 4 * day + 1, "price_changed", price="9.00", currency="EUR"),
              order("b", T0 + 5 * day), tick(T0 + 6 * day)]
    as_registered, _ = run_engine(events, until=T0 + 9 * day)
    monkeypatch.setattr(engine_module, "FLOWS", tuple(reversed(FLOWS)))
    reversed_order, engine = run_engine(events, until=T0 + 9 * day)
    names = [f.name for f in engine.flows]
    assert names.index("abandoned_cart") < names.index("back_in_stock") and names != [f.name for f in FLOWS]
    flows = {c["flow"] for c in as_registered}
    assert {"abandoned_cart", "back_in_stock", "browse_abandonment", "price_drop"} <= flows
    assert reversed_order == as_registered


def test_a_flow_that_asks_about_an_unregistered_flow_is_refused(monkeypatch):
    from streams.core import engine as engine_module
    from streams.core.flows.back_in_stock import BackInStock

    monkeypatch.setattr(engine_module, "FLOWS", (BackInStock,))
    with pytest.raises(ValueError, match="back_in_stock after \\['AbandonedCart'\\]"):
        PartitionEngine(load_settings(env={}), 0)


def test_a_flow_that_leaves_a_method_or_its_name_undefined_cannot_be_built() -> None:
    from streams.core.flows.base import KeyedFlow
    from streams.core.flows.price_drop import PriceDrop

    engine = PartitionEngine(load_settings(env={}), 0)

    class Unfinished(KeyedFlow):  # names itself, but has neither its state's timers nor a step's context
        name = "unfinished"
        settings_of = staticmethod(lambda flows: flows.price_drop)

    with pytest.raises(TypeError, match=r"Unfinished cannot be built: it does not define context, timers$"):
        Unfinished(engine.ctx)

    class Nameless(PriceDrop):  # everything implemented, no name of its own
        name = ""

    with pytest.raises(TypeError, match=r"Nameless cannot be built: it does not define name$"):
        Nameless(engine.ctx)
    assert PriceDrop(engine.ctx).name == "price_drop"  # a finished flow is built
