"""SendEmail through boto3 ``sesv2`` (sinks/ses_sender.py), one client shared by the sending threads, against the moto
SES server behind the fault proxy: what reaches SES, how every SES answer — accepted, throttled, paused,
rejected, a 5xx, no server at all — is classified, and that botocore itself never retries."""

from __future__ import annotations

import base64
import threading
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.exceptions import ClientError, ParamValidationError

from sinks.ses_sender import SendFailure, SesSender, classify, make_client
from streams.config import SesSettings
from streams.kafka.embedded_broker import free_port
from tests.support.sink import point_at_ses, proxy, verify_sender  # noqa: F401

pytestmark = pytest.mark.integration

RAW = "Subject: Zażółć\nFrom: shop@example.com\nTo: ada@example.com\n\nbody ünïcode\n".encode()
TAGS = {"command_id": "cmd-1", "flow": "order_confirmation"}


@pytest.fixture
def sink_settings(settings, moto_ses, proxy):
    """SES settings pointing at moto through the fault proxy, the sender verified (no broker needed)."""
    point_at_ses(settings, proxy.url)
    verify_sender(settings, moto_ses.endpoint_url)
    settings.ses.configuration_set = "shopmail"
    return settings


def outcome(sender: SesSender, n: int, from_address: str | None = None) -> tuple[str, str, bool]:
    """("sent", "", True) or the failure sinks.ses_sender raised (kind, code, exhausted)."""
    try:
        return "sent", "", bool(sender.send_raw(RAW + str(n).encode(), f"ada+{n}@example.com", TAGS,
                                                from_address=from_address).message_id)
    except SendFailure as failure:
        return failure.kind, failure.code, failure.exhausted


def test_a_sent_mail_reaches_ses_as_sesv2_sendemail_with_its_raw_bytes_tags_and_configuration_set(moto_ses, proxy,
                                                                                                  sink_settings):
    moto_ses.reset()
    verify_sender(sink_settings, moto_ses.endpoint_url)
    sender = SesSender(sink_settings.ses)
    result = sender.send_raw(RAW, "ada@example.com", {"command_id": "cmd-1", "flow": "order confirmation!"})
    assert result.message_id and result.attempts == 1
    body = proxy.sends()[-1].body
    assert body == {"FromEmailAddress": sink_settings.ses.from_address,
                    "Destination": {"ToAddresses": ["ada@example.com"]},
                    "Content": {"Raw": {"Data": base64.b64encode(RAW).decode()}},
                    "EmailTags": [{"Name": "command_id", "Value": "cmd-1"},
                                  {"Name": "flow", "Value": "order_confirmation_"}],
                    "ConfigurationSetName": "shopmail"}
    stored = moto_ses.sent_messages()
    assert len(stored) == 1 and stored[0]["raw_data"] == RAW.decode()


@pytest.mark.parametrize("status, code, kind", [
    (429, "TooManyRequestsException", "retryable"), (500, "InternalFailure", "retryable"),
    (503, "ServiceUnavailable", "retryable"), (400, "SendingPausedException", "pause"),
    (400, "AccountSuspendedException", "pause"), (400, "MessageRejected", "permanent"),
    (400, "BadRequestException", "permanent"), (404, "NotFoundException", "permanent")])
def test_an_ses_error_answer_is_classified_by_its_code_and_status(moto_ses, proxy, sink_settings, status, code, kind):
    sink_settings.ses.max_attempts = 1
    sender = SesSender(sink_settings.ses)
    client = sender.client
    proxy.inject(status, code, message=f"{code} from the test")
    with pytest.raises(ClientError) as err:
        client.send_email(FromEmailAddress=sink_settings.ses.from_address, Destination={"ToAddresses": ["a@example.com"]},
                          Content={"Raw": {"Data": RAW}})
    assert (classify(err.value).kind, classify(err.value).code) == (kind, code)
    proxy.inject(status, code, message=f"{code} from the test")
    assert outcome(sender, 3) == ("permanent" if kind == "retryable" else kind, code, kind == "retryable")


def test_botocore_never_retries_a_send_the_sink_decides_and_a_cleared_error_is_sent(moto_ses, proxy, sink_settings):
    sink_settings.ses.max_attempts = 3
    sender = SesSender(sink_settings.ses)
    before = len(proxy.sends())
    proxy.inject(500, "InternalFailure", times=2)
    result = sender.send_raw(RAW, "ada@example.com", TAGS)
    assert result.attempts == 3 and sender.retries == 2
    assert len(proxy.sends()) - before == 3  # one request per attempt of the sink's own, none of botocore's
    proxy.inject(503, "ServiceUnavailable", times=3)
    assert outcome(sender, 4) == ("permanent", "ServiceUnavailable", True)
    assert len(proxy.sends()) - before == 6


def test_an_unverified_sender_is_rejected_permanently(moto_ses, proxy, sink_settings):
    kind, code, exhausted = outcome(SesSender(sink_settings.ses), 5, from_address="nobody@unverified.example")
    assert kind == "permanent" and code == "MessageRejected" and not exhausted


def test_no_server_is_a_retryable_connection_failure_not_an_ses_answer():
    ses = SesSettings(endpoint_url=f"http://127.0.0.1:{free_port()}", region="eu-west-1")
    client = SesSender(ses).client
    with pytest.raises(Exception) as err:
        client.send_email(FromEmailAddress="shop@example.com", Destination={"ToAddresses": ["a@example.com"]},
                          Content={"Raw": {"Data": RAW}})
    assert not isinstance(err.value, ClientError)
    assert classify(err.value).kind == "retryable"


def test_the_client_turns_off_botocore_retries_keeps_tcp_alive_and_pools_a_connection_per_thread():
    ses = SesSettings(endpoint_url="http://127.0.0.1:9", region="eu-west-1", max_concurrency=32)
    config = SesSender(ses).client.meta.config
    assert config.retries["total_max_attempts"] == 1
    assert config.tcp_keepalive is True and config.max_pool_connections >= 32


def test_a_request_is_not_validated_by_the_client_but_by_ses(moto_ses, proxy, sink_settings):
    """Validation off: a request without its content is SES's to refuse (a permanent failure), where a
    default boto3 client would refuse it before sending."""
    incomplete = {"FromEmailAddress": sink_settings.ses.from_address, "Destination": {"ToAddresses": ["a@example.com"]}}
    with pytest.raises(ParamValidationError):
        boto3.client("sesv2", endpoint_url=proxy.url, region_name=sink_settings.ses.region).send_email(**incomplete)
    before = len(proxy.sends())
    proxy.inject(400, "BadRequestException", message="Missing Content")
    with pytest.raises(ClientError) as err:
        SesSender(sink_settings.ses).client.send_email(**incomplete)
    assert len(proxy.sends()) - before == 1 and classify(err.value).kind == "permanent"


def test_sending_threads_send_at_once_on_the_shared_client(moto_ses, proxy, sink_settings):
    sender = SesSender(sink_settings.ses)
    before = len(proxy.sends())
    threads: set[int] = set()

    def send(n: int) -> str:
        threads.add(threading.get_ident())
        return sender.send_raw(RAW + str(n).encode(), f"ada+{n}@example.com", TAGS).message_id

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(send, range(40)))
    assert len(set(ids)) == 40 and len(proxy.sends()) - before == 40 and len(threads) > 1


def test_a_sender_given_a_client_sends_every_mail_on_it(moto_ses, proxy, sink_settings):
    client = make_client(sink_settings.ses)
    sender = SesSender(sink_settings.ses, client=client)
    assert sender.client is client
    assert outcome(sender, 7) == ("sent", "", True)
