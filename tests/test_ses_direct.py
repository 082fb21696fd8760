"""The direct SendEmail call (sinks/ses_http.py) against boto3's on the same wire: the moto SES server
stores the same message from both, and every SES answer — accepted, throttled, paused, rejected, a 5xx, no
server at all — is classified the same way (sinks.ses_sender.classify) whichever made the call."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from sinks.ses_http import DirectSes
from sinks.ses_sender import SendFailure, classify, make_client
from streams.config import SesSettings
from streams.kafka.embedded_broker import free_port
from tests.support.sink import point_at_ses, proxy, verify_sender  # noqa: F401

pytestmark = pytest.mark.integration

RAW = "Subject: Zażółć\nFrom: shop@example.com\nTo: ada@example.com\n\nbody ünïcode\n".encode()


def request(n: int, ses: SesSettings) -> dict:
    return {"FromEmailAddress": ses.from_address, "Destination": {"ToAddresses": [f"ada+{n}@example.com"]},
            "Content": {"Raw": {"Data": RAW + str(n).encode()}},
            "EmailTags": [{"Name": "command_id", "Value": f"cmd-{n}"}, {"Name": "flow", "Value": "order_confirmation"}],
            "ConfigurationSetName": ses.configuration_set}


@pytest.fixture
def sink_settings(settings, moto_ses, proxy):
    """SES settings pointing at moto through the fault proxy, the sender verified (no broker needed)."""
    point_at_ses(settings, proxy.url)
    verify_sender(settings, moto_ses.endpoint_url)
    return settings


def outcome(call, kwargs: dict) -> tuple[str, str, str]:
    """("sent", "", message id present?) or the classified failure (kind, code, message)."""
    try:
        return "sent", "", str(bool(call(**kwargs)["MessageId"]))
    except Exception as exc:  # noqa: BLE001 - compared below
        failure = classify(exc)
        return failure.kind, failure.code, failure.message


def test_both_calls_put_the_same_request_on_the_wire_and_ses_stores_the_same_message(moto_ses, proxy, sink_settings):
    ses = sink_settings.ses
    moto_ses.reset()
    verify_sender(sink_settings, moto_ses.endpoint_url)
    mine, theirs = request(1, ses), {**request(1, ses), "Destination": {"ToAddresses": ["ada+2@example.com"]}}
    assert DirectSes(ses).send_email(**mine)["MessageId"]
    assert make_client(ses).send_email(**theirs)["MessageId"]
    direct_body, boto_body = [r.body for r in proxy.sends()][-2:]
    assert {k: v for k, v in direct_body.items() if k != "Destination"} == \
        {k: v for k, v in boto_body.items() if k != "Destination"}
    assert direct_body["Destination"] == {"ToAddresses": ["ada+1@example.com"]}
    stored = moto_ses.sent_messages()
    assert len(stored) == 2 and stored[0]["raw_data"] == stored[1]["raw_data"] == (RAW + b"1").decode()


@pytest.mark.parametrize("status, code", [(429, "TooManyRequestsException"), (400, "SendingPausedException"),
                                          (400, "MessageRejected"), (500, "InternalFailure"),
                                          (503, "ServiceUnavailable"), (400, "AccountSuspendedException")])
def test_an_ses_error_answer_is_classified_as_boto3_classifies_it(moto_ses, proxy, sink_settings, status, code):
    ses = sink_settings.ses
    direct, boto = DirectSes(ses), make_client(ses)
    proxy.inject(status, code, message=f"{code} from the test")
    mine = outcome(direct.send_email, request(3, ses))
    proxy.inject(status, code, message=f"{code} from the test")
    theirs = outcome(boto.send_email, request(4, ses))
    assert mine == theirs and mine[1] == code


def test_an_unverified_sender_is_rejected_permanently_by_both(moto_ses, proxy, sink_settings):
    ses = sink_settings.ses
    kwargs = {**request(5, ses), "FromEmailAddress": "nobody@unverified.example"}
    mine, theirs = outcome(DirectSes(ses).send_email, kwargs), outcome(make_client(ses).send_email, kwargs)
    assert mine == theirs and mine[0] == "permanent"


def test_no_server_is_a_retryable_connection_failure():
    ses = SesSettings(endpoint_url=f"http://127.0.0.1:{free_port()}", region="eu-west-1")
    with pytest.raises(Exception) as err:
        DirectSes(ses, connect_timeout_s=1).send_email(**request(6, ses))
    failure = classify(err.value)
    assert isinstance(failure, SendFailure) and failure.kind == "retryable"
    assert not isinstance(err.value, ClientError)


def test_threads_send_at_once_each_on_its_own_connection(moto_ses, proxy, sink_settings):
    ses = sink_settings.ses
    direct = DirectSes(ses)
    before = len(proxy.sends())
    pools: set[int] = set()

    def send(n: int) -> str:
        message_id = direct.send_email(**request(100 + n, ses))["MessageId"]
        pools.add(id(direct._pool()))
        return message_id

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(send, range(40)))
    assert len(set(ids)) == 40 and len(proxy.sends()) - before == 40
    assert 1 < len(pools) <= 8  # one connection pool per thread, never one shared by all
