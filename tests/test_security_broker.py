"""TLS and authentication against the real embedded broker (Tansu): the worker → sink path over TLS,
and a wrong certificate or wrong credentials fail at once with the reason, not after a hang.

Authenticated data paths cannot run here: Tansu 0.6.0 can require SASL SCRAM, but no client can ever
authenticate to it (see ``streams.kafka.embedded_broker.EmbeddedBroker``), so SASL is covered by
tests/test_security_config.py and, on the broker, by the failure path only."""

from __future__ import annotations

import datetime
import ipaddress
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sinks.service import SinkService
from streams.runtime import background
from streams.kafka.embedded_broker import EmbeddedBroker, TlsFiles, kafka_bootstrap
from streams.config import KafkaSettings, Settings
from streams.kafka.io import KafkaConnectError, check_connection, produce_records, read_topic
from streams.runtime.worker import ProcessorRuntime
from streams.kafka.topics import ensure_topics, topic_specs
from tests.support.sink import point_at_ses, verify_sender
from tests.test_processor_skeleton import order

pytestmark = pytest.mark.integration

FAIL_FAST_S = 5.0


@dataclass
class Pki:
    ca: Path
    other_ca: Path  # a CA that signed nothing the broker presents
    server: TlsFiles  # for 127.0.0.1 and localhost
    wrong_name: TlsFiles  # signed by ``ca`` for broker.example only


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, obj: x509.Certificate | ec.EllipticCurvePrivateKey) -> Path:
    if isinstance(obj, x509.Certificate):
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return path


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey,
          ca: bool, names: list[x509.GeneralName] | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _ca(tmp: Path, name: str) -> tuple[Path, x509.Name, ec.EllipticCurvePrivateKey]:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return _write(tmp / f"{name}.pem", _cert(name, key, subject, key, ca=True)), subject, key


def _server(tmp: Path, name: str, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey,
            names: list[x509.GeneralName]) -> TlsFiles:
    key = _key()
    return TlsFiles(_write(tmp / f"{name}.pem", _cert(name, key, issuer, issuer_key, ca=False, names=names)),
                    _write(tmp / f"{name}.key", key))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    tmp = tmp_path_factory.mktemp("pki")
    ca, ca_name, ca_key = _ca(tmp, "shopmail-test-ca")
    other_ca, _, _ = _ca(tmp, "someone-elses-ca")
    loopback: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    return Pki(ca, other_ca, _server(tmp, "broker", ca_name, ca_key, loopback),
               _server(tmp, "elsewhere", ca_name, ca_key, [x509.DNSName("broker.example")]))


def tls(ca: Path, verify_hostname: bool = True) -> KafkaSettings:
    k = KafkaSettings()
    k.security.protocol = "SSL"
    k.security.ssl_ca_location = str(ca)
    k.security.ssl_endpoint_identification = verify_hostname
    return k


@pytest.fixture(scope="module")
def tls_broker(pki: Pki) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(tls=pki.server).start(kafka=tls(pki.ca))
    try:
        yield broker
    finally:
        broker.stop()


def _fails_fast(kafka: KafkaSettings, bootstrap: str) -> KafkaConnectError:
    started = time.monotonic()
    with pytest.raises(KafkaConnectError) as info:
        check_connection(kafka, bootstrap, timeout_s=30)
    assert time.monotonic() - started < FAIL_FAST_S, "the failure must be reported at once, not at the timeout"
    return info.value


def test_an_order_reaches_ses_through_worker_and_sink_over_tls(tls_broker: EmbeddedBroker, pki: Pki, moto_ses,
                                                               settings: Settings) -> None:
    settings.kafka = tls(pki.ca)
    point_at_ses(settings, moto_ses.endpoint_url)
    verify_sender(settings, moto_ses.endpoint_url)
    bootstrap = tls_broker.bootstrap
    assert ensure_topics(bootstrap, topic_specs(settings), kafka=settings.kafka).healthy
    processor = ProcessorRuntime(settings, bootstrap, instance_id="tls-0")
    sink = SinkService(settings, bootstrap, instance_id="tls-sink-0")
    workers = [background.start(processor.run, "processor"), background.start(sink.run, "sink")]
    try:
        assert processor.ready.wait(30), workers[0].errors
        assert sink.ready.wait(30), workers[1].errors
        produce_records(settings, bootstrap, settings.topics.name("orders"), "OrderEvent",
                        [order("tls-1", customer="cust-tls")])
        outcomes = read_topic(bootstrap, settings.topics.name("outcomes"), expect=1, timeout_s=30,
                              kafka=settings.kafka)
    finally:
        for w in workers:
            w.finish()
    assert [o.decoded().record["outcome"] for o in outcomes] == ["sent"]
    assert outcomes[0].decoded().record["flow"] == "order_confirmation"


def test_a_plaintext_client_gets_nothing_from_the_tls_listener(tls_broker: EmbeddedBroker) -> None:
    with pytest.raises(KafkaConnectError) as info:
        check_connection(KafkaSettings(), tls_broker.bootstrap, timeout_s=3)
    assert info.value.reason == "unreachable"


def test_a_broker_certificate_from_an_untrusted_ca_fails_fast_saying_so(tls_broker: EmbeddedBroker,
                                                                         pki: Pki) -> None:
    error = _fails_fast(tls(pki.other_ca), tls_broker.bootstrap)
    assert error.reason == "tls"
    assert "certificate verify failed" in str(error) and str(pki.other_ca) in str(error)


def test_a_certificate_for_another_hostname_fails_unless_hostname_verification_is_off(pki: Pki) -> None:
    broker_elsewhere = EmbeddedBroker(tls=pki.wrong_name).start(kafka=tls(pki.ca, verify_hostname=False))
    try:
        error = _fails_fast(tls(pki.ca), broker_elsewhere.bootstrap)
        assert error.reason == "tls" and "hostname verification on" in str(error)
        check_connection(tls(pki.ca, verify_hostname=False), broker_elsewhere.bootstrap, timeout_s=10)
    finally:
        broker_elsewhere.stop()


def test_wrong_credentials_fail_fast_with_the_authentication_reason_at_service_start() -> None:
    kafka = KafkaSettings()
    kafka.security.protocol = "SASL_PLAINTEXT"
    kafka.security.sasl_mechanism = "SCRAM-SHA-512"
    kafka.security.sasl_username = "shopmail-processors"
    kafka.security.sasl_password = "not-the-password"
    with EmbeddedBroker(authentication=True) as broker:
        started = time.monotonic()
        with pytest.raises(KafkaConnectError) as info, kafka_bootstrap(broker.bootstrap, kafka=kafka):
            pass
        assert time.monotonic() - started < FAIL_FAST_S
    assert info.value.reason == "authentication"
    message = str(info.value)
    assert "SCRAM-SHA-512" in message and "shopmail-processors" in message and "authentication failed" in message
    assert "not-the-password" not in message
