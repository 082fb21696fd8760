"""Amazon SNS message signature verification (HTTP/HTTPS subscriptions).

Follows the SNS developer guide, "Verifying the signatures of Amazon SNS messages":

- ``SignatureVersion`` ``1`` is SHA1withRSA, ``2`` is SHA256withRSA (PKCS#1 v1.5), over the UTF-8
  string to sign;
- the string to sign is ``Name\\nValue\\n`` for each signed field, in byte order: for ``Notification``
  ``Message, MessageId, Subject`` (only when present)``, Timestamp, TopicArn, Type``; for
  ``SubscriptionConfirmation`` / ``UnsubscribeConfirmation`` ``Message, MessageId, SubscribeURL,
  Timestamp, Token, TopicArn, Type``;
- the certificate comes from ``SigningCertURL``, which must be ``https`` on port 443 with a host that
  fully matches the allowed pattern (``sns.<region>.amazonaws.com``, ``sns.cn-<…>.amazonaws.com.cn`` and
  ``sns.us-gov-<…>.amazonaws.com`` by default; never an S3 or other AWS host) and a ``.pem`` path; it is
  fetched without following redirects, size-capped, must be inside its validity period, and is cached per URL.

The signature covers neither the receiving endpoint nor an expiry, so two checks of ours close the
replay of a validly signed message: its ``TopicArn`` must be on the configured allow-list (never empty:
anybody can make SNS sign a message on a topic of their own), and its signed ``Timestamp`` must be at
most ``max_age_s`` old (and not more than :data:`MAX_CLOCK_SKEW_S` ahead).

Any failure raises :class:`SnsRejected` with a short ``reason`` (the label of the rejection counter),
except a certificate that cannot be fetched at all (:class:`CertificateUnavailable`: the endpoint
answers 503 so that SNS delivers the message again). ``bridge.topic_arns`` entries must be SNS topic ARNs
(:func:`check_topic_arns`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
SUBSCRIPTION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
SUBSCRIPTION_TYPES = ("SubscriptionConfirmation", "UnsubscribeConfirmation")
HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
MAX_CERT_BYTES = 10 * 1024
MAX_CLOCK_SKEW_S = 300.0  # a Timestamp this far ahead of our clock is still accepted


# arn:<partition>:sns:<region>:<account>:<name> (a FIFO topic's name ends in .fifo)
TOPIC_ARN = re.compile(r"arn:aws(?:-[a-z]+)*:sns:[a-z]{2}(?:-[a-z]+)+-[0-9]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}(?:\.fifo)?")


class SnsRejected(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class CertificateUnavailable(OSError):
    """The signing certificate could not be fetched (network, DNS, an AWS 5xx): not the sender's fault, so
    the message is answered 503 and SNS delivers it again, unlike a certificate fetched and found wrong."""


class ResponseTooLarge(OSError):
    pass


def check_topic_arns(topic_arns: Sequence[str]) -> None:
    """ValueError unless there is at least one allowed topic and every entry is an SNS topic ARN."""
    if not topic_arns:
        raise ValueError("no allowed SNS TopicArn (bridge.topic_arns): every validly signed topic would be "
                         "accepted, including another AWS account's")
    bad = [arn for arn in topic_arns if not isinstance(arn, str) or not TOPIC_ARN.fullmatch(arn)]
    if bad:
        raise ValueError(f"bridge.topic_arns: {bad!r} is not an SNS topic ARN "
                         "(arn:<partition>:sns:<region>:<account>:<name>)")


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The canonical string SNS signed for this message (raises SnsRejected if a signed field is missing)."""
    kind = message.get("Type")
    if kind == "Notification":
        names = NOTIFICATION_FIELDS
    elif kind in SUBSCRIPTION_TYPES:
        names = SUBSCRIPTION_FIELDS
    else:
        raise SnsRejected("malformed", f"unknown SNS message Type {kind!r}")
    out: list[str] = []
    for name in names:
        value = message.get(name)
        if value is None and name == "Subject":
            continue  # optional, signed only when present
        if not isinstance(value, str):
            raise SnsRejected("malformed", f"{kind} field {name} is missing or not a string")
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode("utf-8")


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl} refused", headers, fp)


def https_get(url: str, timeout_s: float, ssl_context: ssl.SSLContext | None = None,
              max_bytes: int = MAX_CERT_BYTES) -> bytes:
    """GET ``url`` (no redirects, verified TLS), at most ``max_bytes`` of body; raises OSError on failure."""
    opener = urllib.request.build_opener(_RefuseRedirects(), urllib.request.HTTPSHandler(context=ssl_context))
    with opener.open(url, timeout=timeout_s) as resp:
        body = resp.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise ResponseTooLarge(f"{url}: response larger than {max_bytes} bytes")
    return bytes(body)


class CertificateStore:
    """Signing certificates by URL: fetched once, cached ``ttl_s``, bounded to ``max_entries``."""

    def __init__(self, fetch: Callable[[str], bytes], ttl_s: float = 3600.0, max_entries: int = 64,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, x509.Certificate]] = {}

    def get(self, url: str) -> x509.Certificate:
        now = self._clock()
        with self._lock:
            hit = self._cache.get(url)
        if hit is not None and now - hit[0] < self._ttl_s:
            return hit[1]
        try:
            pem = self._fetch(url)
        except (ResponseTooLarge, urllib.error.HTTPError) as exc:
            if isinstance(exc, urllib.error.HTTPError) and (exc.code >= 500 or exc.code == 429):
                raise CertificateUnavailable(f"cannot fetch {url}: {exc}") from exc
            raise SnsRejected("certificate", f"{url} answered, but not with a certificate: {exc}") from exc
        except OSError as exc:  # DNS, connection, timeout: SNS retries on 503
            raise CertificateUnavailable(f"cannot fetch {url}: {exc}") from exc
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError as exc:
            raise SnsRejected("certificate", f"{url} is not a PEM certificate: {exc}") from exc
        with self._lock:
            if len(self._cache) >= self._max:
                self._cache.pop(min(self._cache, key=lambda k: self._cache[k][0]))
            self._cache[url] = (now, cert)
        return cert


class SnsVerifier:
    """Checks that a parsed SNS message was signed by SNS for an allowed topic, recently."""

    def __init__(self, certificates: CertificateStore, host_pattern: str, topic_arns: Sequence[str],
                 max_age_s: float = 3600.0, clock: Callable[[], float] = time.time, https_port: int = 443) -> None:
        check_topic_arns(topic_arns)
        self.certificates = certificates
        self.host_pattern = re.compile(host_pattern)
        self.topic_arns = frozenset(topic_arns)
        self.max_age_s = max_age_s
        self.clock = clock
        self.https_port = https_port  # SNS serves certificates and control URLs on 443 only

    def check_url(self, url: Any, field: str) -> str:
        """``url`` if it is https on an allowed host (SNS control URLs and certificates); else SnsRejected."""
        if not isinstance(url, str):
            raise SnsRejected("malformed", f"{field} is missing")
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
        except ValueError as exc:
            raise SnsRejected("untrusted_url", f"{field} {url!r} does not parse: {exc}") from exc
        try:
            port = parts.port
        except ValueError as exc:
            raise SnsRejected("untrusted_url", f"{field} {url!r} has no valid port: {exc}") from exc
        if parts.scheme != "https" or parts.username is not None or not self.host_pattern.fullmatch(host) \
                or port not in (None, self.https_port):
            raise SnsRejected("untrusted_url", f"{field} {url!r} is not https on port {self.https_port} of an allowed SNS host")
        return url

    def check_age(self, timestamp: Any) -> None:
        """SnsRejected("stale") unless the signed Timestamp is within max_age_s before now."""
        try:
            sent = datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
        except ValueError as exc:
            raise SnsRejected("malformed", f"Timestamp {timestamp!r} is not ISO 8601") from exc
        if sent.tzinfo is None:
            sent = sent.replace(tzinfo=timezone.utc)
        age = self.clock() - sent.timestamp()
        if age > self.max_age_s or age < -MAX_CLOCK_SKEW_S:
            raise SnsRejected("stale", f"Timestamp {timestamp} is {age:.0f} s old; accepted: "
                                       f"-{MAX_CLOCK_SKEW_S:.0f} … {self.max_age_s:.0f} s")

    def verify(self, message: Mapping[str, Any]) -> None:
        """Returns if ``message`` is authentic and from an allowed topic; raises SnsRejected otherwise."""
        canonical = string_to_sign(message)
        if message.get("TopicArn") not in self.topic_arns:
            raise SnsRejected("topic", f"TopicArn {message.get('TopicArn')!r} is not allowed")
        self.check_age(message.get("Timestamp"))
        version = message.get("SignatureVersion")
        if version not in HASHES:
            raise SnsRejected("unsigned" if version is None else "signature_version",
                              f"SignatureVersion {version!r} is not 1 or 2")
        cert_url = self.check_url(message.get("SigningCertURL"), "SigningCertURL")
        if not urlsplit(cert_url).path.endswith(".pem"):
            raise SnsRejected("untrusted_url", f"SigningCertURL {cert_url!r} is not a .pem file")
        try:
            signature = base64.b64decode(message.get("Signature") or "", validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise SnsRejected("bad_signature", f"Signature is not base64: {exc}") from exc
        if not signature:
            raise SnsRejected("unsigned", "no Signature")
        cert = self.certificates.get(cert_url)
        now = datetime.now(timezone.utc)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise SnsRejected("certificate", f"{cert_url} is outside its validity period")
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SnsRejected("certificate", f"{cert_url} does not hold an RSA key")
        try:
            key.verify(signature, canonical, padding.PKCS1v15(), HASHES[version]())
        except InvalidSignature as exc:
            raise SnsRejected("bad_signature", "signature does not match the message") from exc


def parse_message(body: bytes) -> dict[str, Any]:
    """The JSON object of an SNS POST body (SnsRejected if it is not one)."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise SnsRejected("malformed", f"body is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise SnsRejected("malformed", "body is not a JSON object")
    return message
