"""The sink's benchmarks: the per-part CPU harness measures every part, and the sink bench runs its child
with the user's concurrency (it used to force 8), from this tree or from another release's."""

from __future__ import annotations

import os

import pytest

from bench.runner import _max_concurrency


def test_the_sink_bench_reads_the_concurrency_the_user_set(monkeypatch):
    monkeypatch.setenv("SHOPMAIL_SES__MAX_CONCURRENCY", "13")
    assert _max_concurrency(None) == 13
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert _max_concurrency(here) == 13  # a tree given as the baseline reads the same user settings


@pytest.mark.integration
def test_the_cpu_harness_measures_every_part_of_the_sinks_work():
    from bench.sink_cpu import measure

    figures = measure(emails=30, concurrency=2)
    for part in ("links_and_context_ms", "render_ms", "mime_ms", "ses_call_ms", "ses_calls_per_s"):
        assert figures[part] > 0, part
    assert figures["mix"] >= 13 * 6  # every template in every shipped locale
    assert figures["total_ms"] == pytest.approx(sum(v for k, v in figures.items() if k.endswith("_ms") and k != "total_ms"),
                                                abs=0.01)


def test_the_proxy_hands_the_calls_to_each_emulator_in_turn():
    import threading
    import urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from bench.fault_proxy import FaultProxy

    seen: list[str] = []

    def upstream(name: str) -> ThreadingHTTPServer:
        class Answer(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen.append(name)
                body = b'{"MessageId": "m"}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    a, b = upstream("a"), upstream("b")
    proxy = FaultProxy(f"http://127.0.0.1:{a.server_address[1]}", others=[f"http://127.0.0.1:{b.server_address[1]}"])
    try:
        for _ in range(4):
            req = urllib.request.Request(proxy.url + "/v2/email/outbound-emails", data=b"{}", method="POST")
            urllib.request.urlopen(req, timeout=10).read()
    finally:
        proxy.close()
        a.shutdown()
        b.shutdown()
    assert seen == ["a", "b", "a", "b"] and len(proxy.sends()) == 4
