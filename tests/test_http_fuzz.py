"""Every public HTTP endpoint fuzzed from its service's own OpenAPI description (schemathesis, valid and
invalid requests) against the real running service on the real broker: 0 server errors, 0 requests
without an answer (hangs), 0 dropped connections, and the service is still healthy afterwards.

Requests sent per run (deterministic: hypothesis is derandomized): the SNS endpoint 360, the
unsubscribe service about 400 (three signed links pinned in turn), the tracking service 480 (a signed
webhook provider and a valid page token pinned for half of them). Each test takes well under 20 s."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from sinks.mime import unsubscribe_link
from sinks.ses_bridge import Bridge, endpoint_from_settings, sns_http_server
from sinks.unsubscribe_service import UnsubscribeService
from streams.config import Settings
from streams.kafka.io import produce_records
from streams.kafka.topics import ensure_topics, topic_specs
from streams.tracking.tokens import make_token
from streams.tracking.webhooks import sign, signature_header
from tests.support.fuzz import FuzzReport, fuzz
from tests.support.sns import TOPIC
from tests.test_tracking import KEY, T0, order, shipment, tracked, wait_for  # noqa: F401 - fixture

pytestmark = pytest.mark.integration
EXAMPLES = 60  # per operation and generation mode (and pinned run): a few hundred requests per service


def check(report: FuzzReport, least: int) -> None:
    logging.getLogger("shopmail.test.fuzz").warning("fuzz: %s", report)
    print(f"fuzz: {report}")
    assert report.problems() == [], report.problems()[:10]
    assert report.requests >= least, str(report)


def test_the_sns_endpoint_survives_fuzzing(kafka, settings):
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    settings.bridge.topic_arns = [TOPIC]
    endpoint = endpoint_from_settings(settings, Bridge(settings, kafka))
    server = sns_http_server(endpoint, "127.0.0.1", 0, settings.bridge.max_body_bytes, settings.http).start()
    try:
        report = fuzz(f"http://127.0.0.1:{server.port}", 3 * EXAMPLES)
    finally:
        server.shutdown()
    check(report, 6 * EXAMPLES)
    assert set(report.statuses) <= {403, 404, 405, 413}, report  # nothing unsigned got through
    assert endpoint.health()[0]


def test_the_unsubscribe_service_survives_fuzzing(kafka, settings):
    settings.unsubscribe.secret = "fuzz-secret"
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    svc = UnsubscribeService(settings, kafka, port=0, host="127.0.0.1", ops_port=0).start()
    try:
        signed = {}
        for purpose in ("keep", "preferences", "unsubscribe"):
            link = unsubscribe_link("http://x/unsubscribe", "cmd-fuzz", "c-fuzz", key="fuzz-secret", locale="de",
                                    purpose=purpose)
            signed = dict(p.split("=", 1) for p in link.split("?", 1)[1].split("&"))
            report = fuzz(f"http://127.0.0.1:{svc.port}", EXAMPLES // 3, query={"/unsubscribe": signed})
            check(report, EXAMPLES // 3)
            assert 200 in report.statuses, report  # the signed link's pages and changes were reached
        assert svc.health()[0]
    finally:
        svc.shutdown()


def test_the_tracking_page_and_webhooks_survive_fuzzing(kafka, tracked):
    settings, svc = tracked
    t = settings.topics
    produce_records(settings, kafka, t.name("orders"), "OrderEvent", [order()])
    produce_records(settings, kafka, t.name("shipments"), "ShipmentEvent", [shipment("label_created", T0)])
    token = make_token(KEY, "o-1", "c-1")
    wait_for(f"http://127.0.0.1:{svc.http.port}/track/{token}", "Shipping label created")
    keys = {p: k.encode() for p, k in settings.tracking.webhook_secrets.items()}

    def signed(case: Any, body: bytes) -> dict[str, str]:
        provider = str((case.path_parameters or {}).get("provider", ""))
        key = keys.get(provider, b"")
        return {signature_header(provider): sign(provider, key, body)} if key else {}

    report = fuzz(f"http://127.0.0.1:{svc.http.port}", EXAMPLES, signers={"/webhooks/{provider}": signed},
                  path_parameters={"/webhooks/{provider}": {"provider": "generic"}, "/track/{token}": {"token": token}})
    check(report, 4 * EXAMPLES)
    assert {200, 400, 404}.issubset(report.statuses), report  # pages, dead-lettered bodies, unknown tokens
    assert svc.health()[0] and not svc.stop.is_set()
