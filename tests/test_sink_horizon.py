"""A command due beyond the sink's horizon (``sink.max_send_ahead_ms``) is reported, not held for years."""

from __future__ import annotations

import pytest

from schemas import serde
from streams.config import DAY_MS
from streams.kafka.io import produce_records, read_topic
from tests.support.sink import command, outcomes, proxy, running_sink, sink_settings  # noqa: F401

pytestmark = pytest.mark.integration
YEAR_MS = 365 * DAY_MS


def test_a_command_due_in_the_year_3000_fails_as_far_future_with_a_dead_letter(kafka, proxy, sink_settings):
    assert sink_settings.sink.max_send_ahead_ms == 21 * DAY_MS
    far = command(1, "far", send_in_ms=974 * YEAR_MS, expires_in_ms=975 * YEAR_MS)
    near = command(2, "near", send_in_ms=20 * DAY_MS, expires_in_ms=21 * DAY_MS)  # within the horizon: held
    now = command(3, "now")
    with running_sink(sink_settings, kafka):
        produce_records(sink_settings, kafka, sink_settings.topics.name("commands"), "EmailCommand", [far, near, now])
        outs = outcomes(kafka, sink_settings, 2, timeout_s=30)
    assert sorted((o["command_id"], o["outcome"], o["reason"].split(":")[0] if o["reason"] else None) for o in outs) \
        == [("cmd-1-far", "failed", "far_future"), ("cmd-3-now", "sent", None)]
    dead = [serde.decode(r.value, "DeadLetter").record
            for r in read_topic(kafka, sink_settings.topics.dlq("commands"), expect=1, timeout_s=10)]
    assert [(d["error"], d["component"]) for d in dead] == [("far_future", "sink")]
