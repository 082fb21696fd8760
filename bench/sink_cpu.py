"""CPU per email of each part of the sink's work, measured in this process (``time.process_time``, all
threads): the signed links and extra context, rendering, the MIME bytes, and the SES call (``SesSender
.send_raw`` on ``--concurrency`` threads against a moto server in its own process, so moto's CPU is not
counted). Every template in every shipped locale, cycled to ``--emails`` mails.

It imports only what every release of the sink has (``Renderer.render``, ``build_mime``, ``list_links``,
``render_extra``, ``SesSender.send_raw``, and the bench's own moto starter ``bench.runner._Ses``), so
``PYTHONPATH=<another tree> python bench/sink_cpu.py`` measures that release the same way;
``shopmail bench --parts sink --sink-baseline <tree>`` runs both, interleaved.
Prints one JSON object: milliseconds of CPU per email per part.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def measure(emails: int, concurrency: int) -> dict[str, Any]:
    from bench.runner import _Ses
    from sinks import samples
    from sinks.intake import now_ms
    from sinks.mime import build_mime, list_links, sender_identity
    from sinks.render_context import render_extra
    from sinks.rendering import Renderer, shipped_locales
    from sinks.ses_sender import SesSender
    from streams.config import load_settings

    s = load_settings(env={})
    s.unsubscribe.secret = "bench-secret"
    renderer = Renderer(shop_url=s.flows.shop_url, brand=s.brand, markets=s.markets, links=s.links)
    mix = [samples.command(flow, step, ctx, locale=locale) for locale in shipped_locales()
           for (flow, step), ctx in samples.FULL.items()]
    commands = list(itertools.islice(itertools.cycle(mix), emails))
    out: dict[str, Any] = {"emails": emails, "mix": len(mix)}

    def timed(label: str, fn: Any, items: list[Any]) -> list[Any]:
        t0 = time.process_time()
        results = [fn(x) for x in items]
        out[f"{label}_ms"] = round((time.process_time() - t0) * 1000 / len(items), 3)
        return results

    for cmd in mix:  # warm: templates compiled, catalogs loaded (once per process, not per email)
        renderer.render(cmd, "https://shop.example.com/u", render_extra(s, cmd), list_links=list_links(s.ses, "k", cmd))
    links = timed("links_and_context", lambda c: (list_links(s.ses, s.unsubscribe.secret, c), render_extra(s, c)),
                  commands)
    rendered = timed("render", lambda ce: renderer.render(ce[0], ce[1][0]["unsubscribe"], ce[1][1],
                                                          list_links=ce[1][0]), list(zip(commands, links)))
    identity = sender_identity(s.ses, "marketing", "en", s.brand)
    raws = timed("mime", lambda cr: build_mime(cr[1], sender=identity.sender, reply_to=identity.reply_to, to=cr[0]["to"],
                                               command_id=cr[0]["command_id"], category=cr[0]["category"],
                                               unsubscribe_url="https://shop.example.com/u?c=1", unsubscribe_mailto=None,
                                               date_ms=now_ms()), list(zip(commands, rendered)))
    ses = _Ses(s)  # moto in its own process, the sender verified, ``s.ses`` pointed at it
    try:
        sender = SesSender(s.ses)
        tags = {"command_id": "b" * 32, "customer_id": "c1", "flow": "order_confirmation", "step": "1",
                "variant": "control"}
        for raw in raws[:concurrency]:
            sender.send_raw(raw, "ada@example.com", tags)
        t0, w0 = time.process_time(), time.monotonic()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(lambda raw: sender.send_raw(raw, "ada@example.com", tags), raws))
        out["ses_call_ms"] = round((time.process_time() - t0) * 1000 / len(raws), 3)
        out["ses_calls_per_s"] = round(len(raws) / (time.monotonic() - w0), 1)
    finally:
        ses.close()
    out["total_ms"] = round(sum(v for k, v in out.items() if k.endswith("_ms")), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emails", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(measure(args.emails, args.concurrency)))


if __name__ == "__main__":
    main()
