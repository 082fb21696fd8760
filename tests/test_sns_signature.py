"""SNS signature verification: the canonical string, SignatureVersion 1 and 2, certificate URL and
topic checks, the certificate cache — with a key pair made at test time, no network."""

from __future__ import annotations

import json
import urllib.error

import pytest

from sinks.sns_signature import (CertificateStore, CertificateUnavailable, SnsRejected, SnsVerifier, check_topic_arns,
                                 https_get, parse_message, string_to_sign)
from streams.config import BridgeSettings
from tests.support.sns import CERT_URL, TOPIC, Signer, loopback_https, notification, sns_time, subscription

BOUNCE = {"eventType": "Bounce", "mail": {"messageId": "m-1", "tags": {"customer_id": ["victim"]}},
          "bounce": {"bounceType": "Permanent", "timestamp": "2026-11-24T10:05:00.000Z"}}


@pytest.fixture(scope="module")
def sns() -> Signer:
    return Signer("sns.amazonaws.com").issue()


@pytest.fixture(scope="module")
def attacker() -> Signer:
    return Signer("sns.amazonaws.com").issue()


class Fetches:
    def __init__(self, certs: dict[str, bytes]) -> None:
        self.certs = certs
        self.urls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        if url not in self.certs:
            raise urllib.error.HTTPError(url, 404, "Not Found", None, None)  # type: ignore[arg-type]
        return self.certs[url]


OTHER_TOPIC = "arn:aws:sns:eu-west-1:999999999999:other"


def verifier(sns: Signer, topics: tuple[str, ...] = (TOPIC,), **certs: bytes) -> tuple[SnsVerifier, Fetches]:
    fetches = Fetches({CERT_URL: sns.pem, **{url: pem for url, pem in certs.items()}})
    return SnsVerifier(CertificateStore(fetches), BridgeSettings().cert_host_pattern, topics), fetches


def reason(v: SnsVerifier, message: dict) -> str | None:
    """The rejection reason, ``unavailable`` when the certificate could not be fetched, None if it verifies."""
    try:
        v.verify(message)
    except SnsRejected as exc:
        return exc.reason
    except CertificateUnavailable:
        return "unavailable"
    return None


def test_the_string_to_sign_is_the_documented_byte_sorted_name_value_lines():
    msg = {"Type": "Notification", "MessageId": "4d4dc071", "TopicArn": "arn:t", "Subject": "My subject",
           "Message": "My Test Message", "Timestamp": "2019-01-31T04:37:04.321Z", "UnsubscribeURL": "https://x",
           "SignatureVersion": "1", "Signature": "c2ln", "SigningCertURL": CERT_URL}
    assert string_to_sign(msg) == (b"Message\nMy Test Message\nMessageId\n4d4dc071\nSubject\nMy subject\n"
                                   b"Timestamp\n2019-01-31T04:37:04.321Z\nTopicArn\narn:t\nType\nNotification\n")
    del msg["Subject"]
    assert b"Subject" not in string_to_sign(msg)
    sub = subscription("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=tok", topic="arn:t")
    assert string_to_sign(sub).decode().split("\n")[::2] == [
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type", ""]
    assert "Subject" not in string_to_sign(dict(sub, Subject="not signed for confirmations")).decode()


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("subject", [None, "Amazon SES Email Event Notification"])
def test_notifications_signed_with_sha1_v1_and_sha256_v2_verify(sns, version, subject):
    v, fetches = verifier(sns)
    assert reason(v, sns.sign(notification(BOUNCE, subject=subject), version)) is None
    assert fetches.urls == [CERT_URL]


def test_subscription_and_unsubscribe_confirmations_verify_with_their_own_fields(sns):
    v, _ = verifier(sns)
    url = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=2336412f"
    for kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        signed = sns.sign(subscription(url, kind=kind), "2")
        assert reason(v, signed) is None
        assert reason(v, dict(signed, Token="another-token")) == "bad_signature"
        assert reason(v, dict(signed, SubscribeURL=url + "&TopicArn=arn:evil")) == "bad_signature"


@pytest.mark.parametrize("field,value", [
    ("Message", json.dumps({**BOUNCE, "mail": {"messageId": "m-1", "tags": {"customer_id": ["someone-else"]}}})),
    ("TopicArn", OTHER_TOPIC), ("Timestamp", sns_time(1)),
    ("MessageId", "another"), ("Subject", "added after signing"), ("Type", "SubscriptionConfirmation"),
], ids=["Message", "TopicArn", "Timestamp", "MessageId", "Subject", "Type"])  # fixed ids: the same on every worker
def test_a_tampered_field_fails_verification(sns, field, value):
    v, _ = verifier(sns, topics=(TOPIC, OTHER_TOPIC))
    signed = sns.sign(notification(BOUNCE), "2")
    assert reason(v, dict(signed, **{field: value})) in ("bad_signature", "malformed")
    assert reason(v, signed) is None


def test_a_message_signed_by_another_key_is_rejected_even_with_the_genuine_certificate_url(sns, attacker):
    v, _ = verifier(sns)
    for version in ("1", "2"):
        assert reason(v, attacker.sign(notification(BOUNCE), version)) == "bad_signature"


@pytest.mark.parametrize("url", [
    "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem",
    "https://evil.example.com/SimpleNotificationService-1.pem",
    "https://sns.eu-west-1.amazonaws.com.evil.example.com/cert.pem",
    "https://sns.eu-west-1.amazonaws.com@evil.example.com/cert.pem",
    "https://evil.example.com/sns.eu-west-1.amazonaws.com/cert.pem",
    "https://sns.eu-west-1.amazonaws.com/not-a-certificate.txt",
    "https://s3.eu-west-1.amazonaws.com/bucket/cert.pem",
    "https://sns.s3.amazonaws.com/SimpleNotificationService-1.pem",  # an S3 bucket named "sns"
    "https://sns.eu-west-1.amazonaws.com:8443/SimpleNotificationService-1.pem",
    "https://sns.eu-west-1.amazonaws.com:80/SimpleNotificationService-1.pem",
    "https://sns.eu-west-1.amazonaws.com:99999/SimpleNotificationService-1.pem",
])
def test_a_certificate_from_outside_the_allowed_sns_hosts_is_never_fetched(sns, attacker, url):
    v, fetches = verifier(sns, **{url: attacker.pem})
    assert reason(v, attacker.sign(notification(BOUNCE), "2", cert_url=url)) == "untrusted_url"
    assert fetches.urls == []


def test_unsigned_and_unknown_signature_versions_are_rejected(sns):
    v, _ = verifier(sns)
    assert reason(v, notification(BOUNCE)) == "unsigned"
    signed = sns.sign(notification(BOUNCE), "2")
    assert reason(v, dict(signed, Signature="")) == "unsigned"
    assert reason(v, dict(signed, Signature="not base64!")) == "bad_signature"
    assert reason(v, dict(signed, SignatureVersion="3")) == "signature_version"
    assert reason(v, dict(signed, SignatureVersion="1")) == "bad_signature"  # a v2 signature is not a v1 one


def test_only_allowed_topics_pass(sns):
    v, fetches = verifier(sns, topics=(TOPIC,))
    assert reason(v, sns.sign(notification(BOUNCE), "2")) is None
    fetches.urls.clear()
    assert reason(v, sns.sign(notification(BOUNCE, topic=OTHER_TOPIC), "2")) == "topic"
    assert fetches.urls == []  # refused before any certificate is fetched


def test_a_verifier_without_allowed_topics_cannot_be_made():
    with pytest.raises(ValueError, match="TopicArn"):
        SnsVerifier(CertificateStore(Fetches({})), BridgeSettings().cert_host_pattern, ())


@pytest.mark.parametrize("arns", [[], [""], ["[]"], ['[""]'], ["arn:aws:sns:eu-west-1:123456789012:"],
                                  ["arn:aws:s3:::bucket"], ["arn:aws:sns:eu-west-1:12345:short-account"],
                                  [TOPIC, "shopmail-ses-events"]],
                         ids=["none", "empty", "brackets", "quoted_empty", "no_name", "s3", "short_account", "one_bad"])
def test_allowed_topics_must_all_be_sns_topic_arns(arns):
    with pytest.raises(ValueError, match="TopicArn|topic ARN"):
        check_topic_arns(arns)
    with pytest.raises(ValueError):
        SnsVerifier(CertificateStore(Fetches({})), BridgeSettings().cert_host_pattern, arns)


def test_topic_arns_of_every_partition_and_fifo_topics_are_accepted():
    check_topic_arns([TOPIC, "arn:aws-cn:sns:cn-north-1:123456789012:ses", "arn:aws-us-gov:sns:us-gov-west-1:123456789012:ses",
                      "arn:aws:sns:eu-central-1:123456789012:ses-events.fifo"])


def test_a_certificate_that_cannot_be_fetched_is_unavailable_and_one_fetched_and_wrong_is_rejected(sns):
    answers: list[OSError | bytes] = [
        OSError("Temporary failure in name resolution"), TimeoutError("timed out"),
        urllib.error.HTTPError(CERT_URL, 503, "Slow Down", None, None),  # type: ignore[arg-type]
        urllib.error.HTTPError(CERT_URL, 404, "Not Found", None, None),  # type: ignore[arg-type]
        b"not a certificate", sns.pem]

    def fetch(url: str) -> bytes:
        answer = answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer

    v = SnsVerifier(CertificateStore(fetch), BridgeSettings().cert_host_pattern, (TOPIC,))
    message = sns.sign(notification(BOUNCE), "2")
    assert [reason(v, message) for _ in range(6)] == [
        "unavailable", "unavailable", "unavailable",  # DNS, timeout, an AWS 5xx: SNS delivers again (503)
        "certificate", "certificate",  # answered, but no certificate there (403)
        None]  # no failure is cached: the redelivery verifies


def test_a_message_older_than_the_window_or_from_the_future_is_stale(sns):
    v, _ = verifier(sns)
    assert v.max_age_s == BridgeSettings().max_message_age_s == 3600
    assert reason(v, sns.sign(notification(BOUNCE, timestamp=sns_time(3590)), "2")) is None
    assert reason(v, sns.sign(notification(BOUNCE, timestamp=sns_time(3610)), "2")) == "stale"
    assert reason(v, sns.sign(notification(BOUNCE, timestamp=sns_time(-600)), "2")) == "stale"
    assert reason(v, sns.sign(notification(BOUNCE, timestamp="yesterday"), "2")) == "malformed"


def test_an_expired_or_unparseable_certificate_is_rejected(sns):
    expired = Signer("sns.amazonaws.com").issue(days=-1)
    v, _ = verifier(sns, **{CERT_URL.replace(".pem", "-old.pem"): expired.pem,
                            CERT_URL.replace(".pem", "-bad.pem"): b"hello"})
    assert reason(v, expired.sign(notification(BOUNCE), cert_url=CERT_URL.replace(".pem", "-old.pem"))) == "certificate"
    assert reason(v, sns.sign(notification(BOUNCE), cert_url=CERT_URL.replace(".pem", "-bad.pem"))) == "certificate"
    assert reason(v, sns.sign(notification(BOUNCE), cert_url=CERT_URL.replace(".pem", "-404.pem"))) == "certificate"


def test_certificates_are_fetched_once_per_url_until_the_cache_ttl_passes(sns):
    now = [1000.0]
    fetches = Fetches({CERT_URL: sns.pem})
    v = SnsVerifier(CertificateStore(fetches, ttl_s=60, clock=lambda: now[0]), BridgeSettings().cert_host_pattern,
                    (TOPIC,))
    for _ in range(3):
        assert reason(v, sns.sign(notification(BOUNCE), "2")) is None
    assert len(fetches.urls) == 1
    now[0] += 61
    assert reason(v, sns.sign(notification(BOUNCE), "1")) is None
    assert len(fetches.urls) == 2


def test_the_certificate_is_downloaded_over_verified_https_from_a_loopback_server(sns, tmp_path):
    files: dict[str, bytes | str] = {"/SimpleNotificationService-test.pem": sns.pem}
    with loopback_https(files, tmp_path) as srv:
        url = f"{srv.url}/SimpleNotificationService-test.pem"
        store = CertificateStore(lambda u: https_get(u, 5.0, srv.client_context))
        port = int(srv.url.rsplit(":", 1)[1])  # the loopback server stands in for SNS's port 443
        v = SnsVerifier(store, r"^localhost$", (TOPIC,), https_port=port)
        for version in ("1", "2", "2"):
            assert reason(v, sns.sign(notification(BOUNCE), version, cert_url=url)) is None
        assert srv.requests == ["/SimpleNotificationService-test.pem"]  # cached after the first
        files["/moved.pem"] = f"{srv.url}/SimpleNotificationService-test.pem"
        assert reason(v, sns.sign(notification(BOUNCE), cert_url=f"{srv.url}/moved.pem")) == "certificate"
        assert srv.requests[1:] == ["/moved.pem"]  # the redirect is not followed
        untrusted = CertificateStore(lambda u: https_get(u, 5.0))  # system trust store: the test CA is unknown
        assert reason(SnsVerifier(untrusted, r"^localhost$", (TOPIC,), https_port=port), sns.sign(notification(BOUNCE), cert_url=url)) \
            == "unavailable"  # TLS refused: nothing was fetched, so SNS is asked to deliver again (503)


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b"[" * 100_000, "\udcff".encode("utf-8", "surrogatepass")])
def test_a_body_that_is_not_a_json_object_is_malformed(body):
    with pytest.raises(SnsRejected) as err:
        parse_message(body)
    assert err.value.reason == "malformed"


def test_the_default_host_pattern_accepts_commercial_china_and_govcloud_regions_only():
    v = SnsVerifier(CertificateStore(Fetches({})), BridgeSettings().cert_host_pattern, (TOPIC,))
    for host in ("sns.us-east-1.amazonaws.com", "sns.cn-north-1.amazonaws.com.cn", "sns.us-gov-west-1.amazonaws.com",
                 "sns.ap-southeast-5.amazonaws.com", "sns.eu-west-1.amazonaws.com:443"):
        assert v.check_url(f"https://{host}/c.pem", "SigningCertURL")
    for host in ("sns.amazonaws.com", "sns.eu-west-1.amazonaws.co", "xsns.eu-west-1.amazonaws.com",
                 "sns.eu_west.amazonaws.com", "sns.s3.amazonaws.com", "sns.s3-website.amazonaws.com",
                 "sns.eu-west-1.amazonaws.com.cn", "sns.eu-west-1.amazonaws.com:444"):
        with pytest.raises(SnsRejected):
            v.check_url(f"https://{host}/c.pem", "SigningCertURL")
