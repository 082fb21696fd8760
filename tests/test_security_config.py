"""Client security settings → librdkafka properties (pure: no broker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.config import ConfigError, KafkaSettings, load_settings
from streams.kafka.io import client_config, consumer_config, masked, producer_config


def _kafka(**security: object) -> KafkaSettings:
    k = KafkaSettings(bootstrap_servers="b-1:9096")
    for key, value in security.items():
        setattr(k.security, key, value)
    return k


def test_plaintext_is_the_default_and_needs_nothing_else() -> None:
    cfg = client_config(KafkaSettings(), "h:9092")
    assert cfg["security.protocol"] == "PLAINTEXT" and cfg["bootstrap.servers"] == "h:9092"
    assert not any(k.startswith(("ssl.", "sasl.")) for k in cfg)


def test_tls_with_a_private_ca_and_a_client_certificate(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("pem")
    (tmp_path / "key-password").write_text("s3cret\n")
    cfg = client_config(_kafka(protocol="ssl", ssl_ca_location=str(tmp_path / "ca.pem"),
                               ssl_certificate_location=str(tmp_path / "client.pem"),
                               ssl_key_location=str(tmp_path / "client.key"),
                               ssl_key_password_file=str(tmp_path / "key-password")))
    assert cfg["security.protocol"] == "SSL"
    assert cfg["ssl.ca.location"] == str(tmp_path / "ca.pem")
    assert cfg["ssl.certificate.location"] == str(tmp_path / "client.pem")
    assert cfg["ssl.key.password"] == "s3cret"  # read from the mounted file, trailing newline stripped
    assert cfg["ssl.endpoint.identification.algorithm"] == "https"


def test_hostname_verification_can_be_turned_off_explicitly() -> None:
    cfg = client_config(_kafka(protocol="SSL", ssl_endpoint_identification=False))
    assert cfg["ssl.endpoint.identification.algorithm"] == "none"


def test_a_missing_ca_file_is_a_config_error_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ssl_ca_location: no such file"):
        client_config(_kafka(protocol="SSL", ssl_ca_location=str(tmp_path / "nope.pem")))


def test_a_client_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("pem")
    with pytest.raises(ConfigError, match="both ssl_certificate_location and ssl_key_location"):
        client_config(_kafka(protocol="SSL", ssl_certificate_location=str(tmp_path / "c.pem")))


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_username_and_password_mechanisms(mechanism: str) -> None:
    cfg = client_config(_kafka(protocol="SASL_SSL", sasl_mechanism=mechanism.lower(), sasl_username="shopmail-sink",
                               sasl_password="pw"))
    assert (cfg["security.protocol"], cfg["sasl.mechanism"]) == ("SASL_SSL", mechanism)
    assert (cfg["sasl.username"], cfg["sasl.password"]) == ("shopmail-sink", "pw")


def test_the_sasl_password_file_wins_over_an_inline_password(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("from-secret")
    cfg = client_config(_kafka(protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512", sasl_username="u",
                               sasl_password="inline", sasl_password_file=str(tmp_path / "password")))
    assert cfg["sasl.password"] == "from-secret"


def test_an_unreadable_password_file_names_the_path_but_not_a_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read sasl_password from .*missing"):
        client_config(_kafka(protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u",
                             sasl_password_file=str(tmp_path / "missing")))


@pytest.mark.parametrize(("security", "message"), [
    ({"protocol": "TLS"}, "protocol: 'TLS' is not one of"),
    ({"protocol": "SASL_SSL"}, "sasl_mechanism: '' is not one of"),
    ({"protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"}, "'GSSAPI' is not one of"),
    ({"protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "u"}, "needs sasl_username and"),
    ({"protocol": "SSL", "sasl_mechanism": "PLAIN"}, "does not use SASL"),
    ({"protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"}, "oauth_provider: '' is not one of"),
])
def test_incomplete_or_unknown_security_settings_are_refused_with_the_reason(security: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        client_config(_kafka(**security))


def test_msk_iam_installs_a_token_callback_that_signs_for_the_region(monkeypatch: pytest.MonkeyPatch) -> None:
    # the AWS chain reads these (no network: the token is a locally SigV4-presigned URL)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    cfg = client_config(_kafka(protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER", oauth_provider="aws-msk-iam",
                               aws_region="eu-west-1"))
    assert cfg["sasl.mechanism"] == "OAUTHBEARER" and "sasl.password" not in cfg
    token, expiry_s = cfg["oauth_cb"](None)
    import base64
    import time

    url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    assert url.startswith("https://kafka.eu-west-1.amazonaws.com/") and "Action=kafka-cluster%3AConnect" in url
    assert time.time() < expiry_s < time.time() + 3600  # seconds since the epoch, as librdkafka wants


def test_msk_iam_without_any_region_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="aws_region: empty"):
        client_config(_kafka(protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER", oauth_provider="aws-msk-iam"))


def test_passthrough_properties_reach_every_client_but_never_override_what_a_client_sets_itself() -> None:
    s = load_settings(env={"SHOPMAIL_KAFKA__LIBRDKAFKA": "client.rack=euw1-az1,isolation.level=read_uncommitted"})
    consumer = consumer_config(s, "h:9092", "g")
    producer = producer_config(s, "h:9092")
    assert consumer["client.rack"] == producer["client.rack"] == "euw1-az1"
    assert consumer["isolation.level"] == "read_committed"


def test_security_comes_from_the_environment_and_secrets_never_show_in_repr_or_masked_config() -> None:
    s = load_settings(env={"SHOPMAIL_KAFKA__SECURITY__PROTOCOL": "SASL_SSL",
                           "SHOPMAIL_KAFKA__SECURITY__SASL_MECHANISM": "SCRAM-SHA-512",
                           "SHOPMAIL_KAFKA__SECURITY__SASL_USERNAME": "shopmail-processors",
                           "SHOPMAIL_KAFKA__SECURITY__SASL_PASSWORD": "hunter2-very-secret",
                           "SHOPMAIL_KAFKA__SECURITY__SSL_KEY_PASSWORD": "keypass-secret"})
    assert s.kafka.security.sasl_password == "hunter2-very-secret"
    for text in (repr(s), repr(s.kafka), str(s.kafka.security), repr(masked(client_config(s.kafka)))):
        assert "hunter2-very-secret" not in text and "keypass-secret" not in text
        assert "shopmail-processors" in text
    assert "sasl_password='***'" in repr(s.kafka.security)
