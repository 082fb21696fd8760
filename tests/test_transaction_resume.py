"""A broker that stalls makes librdkafka's transactional calls time out with "retry call to resume":
the worker calls them again instead of dying (a 50 s broker stall used to kill every processor)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from streams.runtime.checkpoint import resumable


def _timed_out() -> KafkaException:
    return KafkaException(KafkaError(KafkaError._TIMED_OUT, "Timed out waiting for operation to finish, retry call to resume",
                                     retriable=True))


def test_a_transactional_call_that_timed_out_retriably_is_called_again_until_it_finishes():
    calls = []

    def abort() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise _timed_out()

    resumable(abort, "abort_transaction")
    assert len(calls) == 3


def test_a_call_still_timing_out_after_every_attempt_is_raised():
    calls = []

    def abort() -> None:
        calls.append(1)
        raise _timed_out()

    with pytest.raises(KafkaException):
        resumable(abort, "abort_transaction", attempts=4)
    assert len(calls) == 4


@pytest.mark.parametrize("error", [
    KafkaError(KafkaError._FENCED, "fenced", fatal=True),
    KafkaError(KafkaError._TIMED_OUT, "needs an abort", retriable=True, txn_requires_abort=True),
    KafkaError(KafkaError._STATE, "not retriable"),
])
def test_a_fatal_abortable_or_other_error_is_raised_at_once(error):
    calls = []

    def commit() -> None:
        calls.append(1)
        raise KafkaException(error)

    with pytest.raises(KafkaException):
        resumable(commit, "commit_transaction")
    assert len(calls) == 1
