"""A stand-in for Amazon SNS in tests: an RSA signing key with its certificate (made at test time with
`cryptography`), messages signed exactly as SNS signs them, and a loopback HTTPS server with its own
test CA — no network."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from sinks.sns_signature import string_to_sign

CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:shopmail-ses-events"


@dataclass
class Signer:
    """An RSA key and a certificate for it, signed by ``issuer`` (self-signed when None)."""

    name: str
    key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    cert: x509.Certificate | None = None

    def issue(self, issuer: "Signer | None" = None, dns: str | None = None, ca: bool = False,
              days: int = 1) -> "Signer":
        now = dt.datetime.now(dt.timezone.utc)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        builder = (x509.CertificateBuilder().subject_name(subject)
                   .issuer_name(issuer.cert.subject if issuer and issuer.cert else subject)
                   .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(days=2)).not_valid_after(now + dt.timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if dns:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(dns), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        self.cert = builder.sign((issuer or self).key, hashes.SHA256())
        return self

    @property
    def pem(self) -> bytes:
        assert self.cert is not None
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def sign(self, message: dict[str, Any], version: str = "1", cert_url: str = CERT_URL) -> dict[str, Any]:
        """``message`` with SignatureVersion, SigningCertURL and the Signature SNS would put on it."""
        msg = dict(message, SignatureVersion=version, SigningCertURL=cert_url)
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()
        msg["Signature"] = base64.b64encode(self.key.sign(string_to_sign(msg), padding.PKCS1v15(), digest)).decode()
        return msg


def sns_time(ago_s: float = 0.0) -> str:
    """An SNS Timestamp ``ago_s`` seconds before now (SNS's format: ISO 8601, milliseconds, Z)."""
    at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=ago_s)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def notification(ses_event: dict[str, Any], topic: str = TOPIC, subject: str | None = None,
                 timestamp: str | None = None, message_id: str | None = None) -> dict[str, Any]:
    """An SNS Notification carrying ``ses_event``; a fresh MessageId each time, as SNS gives one."""
    msg = {"Type": "Notification", "MessageId": message_id or str(uuid.uuid4()), "TopicArn": topic,
           "Message": json.dumps(ses_event), "Timestamp": timestamp or sns_time(),
           "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x"}
    if subject is not None:
        msg["Subject"] = subject
    return msg


def subscription(subscribe_url: str, topic: str = TOPIC, kind: str = "SubscriptionConfirmation") -> dict[str, Any]:
    return {"Type": kind, "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b", "Token": "2336412f37fb687f5d51e6e2",
            "TopicArn": topic, "Message": f"You have chosen to subscribe to the topic {topic}.",
            "SubscribeURL": subscribe_url, "Timestamp": sns_time()}


@dataclass
class LoopbackHttps:
    """A loopback HTTPS server for ``localhost`` (certificate from a test CA) serving fixed paths (a str
    value is a redirect to that URL)."""

    url: str
    client_context: ssl.SSLContext
    requests: list[str]


@contextlib.contextmanager
def loopback_https(files: dict[str, bytes | str], tmp: Path) -> Iterator[LoopbackHttps]:
    ca = Signer("shopmail test CA").issue(ca=True)
    server_id = Signer("localhost").issue(ca, dns="localhost")
    (tmp / "server.pem").write_bytes(server_id.pem)
    (tmp / "server.key").write_bytes(server_id.key_pem())
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            requests.append(self.path)
            body = files.get(self.path.split("?")[0])
            if isinstance(body, str):  # a redirect to that URL
                self.send_response(302)
                self.send_header("Location", body)
                body = b""
            else:
                self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: Any) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp / "server.pem", tmp / "server.key")
    httpd.socket = server_ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield LoopbackHttps(f"https://localhost:{httpd.server_address[1]}",
                            ssl.create_default_context(cadata=ca.pem.decode()), requests)
    finally:
        httpd.shutdown()
        httpd.server_close()
