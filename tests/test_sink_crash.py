"""A sink killed with SIGKILL while sending loses only what was in flight: after each kill at most
``ses.max_concurrency`` commands are reported ambiguous, every other command is sent on restart, no
command is emailed twice and every command has exactly one outcome.

Nothing here assumes a quiet machine: each kill waits for sends to happen, and the outcomes are read
only once the last sink has committed every command's offset and stopped, up to the end of the topic.
"""

from __future__ import annotations

import os
import random
from collections import Counter

import pytest

from streams.config import SesSettings
from streams.kafka.io import produce_records
from tests.support.procs import CliProcess, settings_env, wait_for
from tests.support.sink import command, delivered, proxy, read_to_end, settled_to_end, sink_settings, topic_ends  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("concurrency", [4, SesSettings().max_concurrency], ids=["4", "default"])
def test_sigkills_while_sending_cost_at_most_the_commands_in_flight(kafka, moto_ses, proxy, sink_settings, tmp_path,
                                                                    concurrency):
    n = int(os.environ.get("SHOPMAIL_SINK_KILL_COMMANDS", "300"))  # the 2,000-command measurement sets it
    kills = int(os.environ.get("SHOPMAIL_SINK_KILLS", "3"))
    proxy.delay_s = 0.02  # each SES call takes a little while: kills land with calls in flight
    t = sink_settings.topics
    # ids of their own per concurrency: moto is shared by the session and counts every email it ever got
    cmds = [command(5000 + 10_000 * concurrency + i, f"k{i % 40}") for i in range(n)]
    produce_records(sink_settings, kafka, t.name("commands"), "EmailCommand", cmds)
    env = settings_env(sink_settings, kafka, SHOPMAIL_SES__ENDPOINT_URL=proxy.url,
                       SHOPMAIL_SES__USE_ACCOUNT_RATE="false", SHOPMAIL_SES__MAX_SEND_RATE="0",
                       SHOPMAIL_SES__MAX_CONCURRENCY=str(concurrency))
    rng = random.Random(13)
    for k in range(kills):
        proc = CliProcess(["sink", "--instance-id", "s0"], env, tmp_path / f"sink{k}.log")
        target = len(proxy.sends()) + rng.randint(20, max(21, n // (kills + 1)))
        wait_for(lambda: len(proxy.sends()) >= target or not proc.alive(), 600, interval_s=0.01,
                 what=f"sends before kill {k}")
        assert proc.alive(), f"sink {k} stopped by itself: {proc.log()}"
        proc.kill9()
    last = CliProcess(["sink", "--instance-id", "s0"], env, tmp_path / "sink-last.log")
    try:
        ends = topic_ends(kafka, t.name("commands"))
        wait_for(lambda: settled_to_end(kafka, sink_settings.sink.group_id, t.name("commands"), ends) or not last.alive(),
                 600, interval_s=0.5, what="the last sink to settle every command")
        assert last.alive(), last.log()
    finally:
        assert last.terminate() == 0, last.log()
    outs = read_to_end(kafka, t.name("outcomes"))
    per_command = Counter(o["command_id"] for o in outs)
    emails = delivered(moto_ses)
    ids = {c["command_id"] for c in cmds}
    ambiguous = {o["command_id"] for o in outs if o["reason"] == "ambiguous_after_crash"}
    sent = {o["command_id"] for o in outs if o["outcome"] == "sent"}
    never_emailed = {c for c in ids if emails[c] == 0}
    print(f"sink kill test: {n} commands, {kills} SIGKILLs, max_concurrency {concurrency}: "
          f"{len(sent)} sent, {len(ambiguous)} ambiguous ({len(ambiguous) / kills:.1f} per kill), "
          f"{len(never_emailed - ambiguous)} never emailed and not ambiguous, "
          f"{sum(1 for c in ids if emails[c] > 1)} emailed twice")
    assert [c for c, k in per_command.items() if k > 1] == [], "one outcome per command"
    assert set(per_command) == ids, "every command has an outcome"
    assert max(emails[c] for c in ids) == 1, "a command was emailed twice"
    assert sent | ambiguous == ids and not sent & ambiguous
    assert len(ambiguous) <= concurrency * kills, f"{len(ambiguous)} ambiguous after {kills} kills"
    assert never_emailed <= ambiguous, "only commands handed to SES may go unsent"
