"""The one HTTP stack every listener runs on (streams/web.py), over real sockets: malformed requests get
400, idle and slow clients are cut off, bodies are bounded, connections are bounded, every answer carries
the security headers, and a failing handler is a 500 that stops nothing."""

from __future__ import annotations

import gzip
import socket
import time
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from streams.config import HttpSettings
from streams.web import HttpServer, OpsServer, Request, Response, Route

LIMITS = HttpSettings(header_timeout_s=1.0, body_timeout_s=1.0, max_connections=20)


def echo(request: Request) -> Response:
    return Response(200, b"got " + str(len(request.body)).encode())


def broken(_request: Request) -> Response:
    raise RuntimeError("a defect")


@pytest.fixture
def server() -> Iterator[HttpServer]:
    srv = HttpServer("127.0.0.1", 0, [Route("POST", "/echo", echo, max_body_bytes=1000),
                                      Route("GET", "/broken", broken)], "test-http", LIMITS).start()
    yield srv
    srv.shutdown()


def exchange(port: int, data: bytes, wait_s: float = 5.0) -> bytes:
    """Send raw bytes, return everything the server answers until it closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as conn:
        conn.sendall(data)
        out = b""
        try:
            while chunk := conn.recv(65536):
                out += chunk
                if b"\r\n\r\n" in out and b"Connection: close" not in out and b"HTTP/1.0" not in out:
                    break
        except TimeoutError:
            pass
        return out


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


def refused(reason: str, listener: str = "test-http") -> float:
    return REGISTRY.get_sample_value("shopmail_http_refused_total", {"listener": listener, "reason": reason}) or 0.0


@pytest.mark.parametrize("length", [b"-1", b"abc", b"1e3", b"12, 13"])
def test_a_malformed_content_length_gets_400(server, length):
    answer = exchange(server.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\nabc")
    assert status(answer) == 400, answer[:200]


def test_a_body_over_the_limit_gets_413_whether_declared_or_chunked(server):
    declared = exchange(server.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
    assert status(declared) == 413  # answered before a byte of the body is read
    chunk = b"x" * 800
    chunked = exchange(server.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       + (b"320\r\n" + chunk + b"\r\n") * 2 + b"0\r\n\r\n")
    assert status(chunked) == 413
    small = exchange(server.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
    assert status(small) == 200 and small.endswith(b"got 3")


def test_idle_and_slow_header_connections_are_closed_after_the_header_timeout(server):
    conns = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(10)]
    slow = socket.create_connection(("127.0.0.1", server.port))
    slow.sendall(b"GET /broken HTTP/1.1\r\nHost")  # a head that never ends
    started = time.monotonic()
    for c in [*conns, slow]:
        c.settimeout(5)
        assert c.recv(100) == b""  # closed by the server, no answer
        c.close()
    assert time.monotonic() - started < LIMITS.header_timeout_s + 2.5


def test_a_body_slower_than_the_body_timeout_gets_408(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        conn.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly a little")
        started = time.monotonic()
        answer = conn.recv(1000)
    assert status(answer) == 408 and time.monotonic() - started < LIMITS.body_timeout_s + 2


def test_connections_over_the_limit_get_503_and_the_listener_keeps_serving(server):
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(LIMITS.max_connections)]
    time.sleep(0.2)
    try:
        assert status(exchange(server.port, b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n")) == 503
    finally:
        for c in held:
            c.close()
    time.sleep(0.2)
    answer = exchange(server.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    assert status(answer) == 200


def test_every_answer_carries_the_security_headers_and_no_server_banner(server):
    for request in (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"):
        head = exchange(server.port, request).split(b"\r\n\r\n")[0].decode().lower()
        for header in ("x-content-type-options: nosniff", "x-frame-options: deny", "referrer-policy: no-referrer",
                       "content-security-policy: default-src 'none'; frame-ancestors 'none'", "cache-control: no-store"):
            assert header in head, head
        assert "\nserver:" not in head


def test_a_handler_that_raises_answers_500_and_the_server_goes_on(server, caplog):
    assert status(exchange(server.port, b"GET /broken HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) == 500
    assert "a defect" in caplog.text
    answer = exchange(server.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\n!")
    assert status(answer) == 200


def test_the_ops_server_answers_health_readiness_and_metrics_and_nothing_else():
    ops = OpsServer(0, lambda: (True, {"alive": 1}), ready=lambda: (False, {"restored": False}), limits=LIMITS).start()
    try:
        def get(path: str) -> bytes:
            return exchange(ops.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())

        assert status(get("/healthz")) == 200 and get("/healthz").endswith(b'{"ok": true, "alive": 1}')
        assert status(get("/readyz")) == 503
        assert status(get("/metrics")) == 200 and b"shopmail_http_refused_total" in get("/metrics")
        assert status(get("/track/x")) == 404
    finally:
        ops.shutdown()


def test_a_body_that_does_not_decode_by_its_content_encoding_gets_400_and_is_counted(server):
    before = refused("bad_body")
    for coding, body in ((b"gzip", b"abc"), (b"deflate", b"abc"), (b"gzip", gzip.compress(b"x")[:10] + b"\xff" * 20)):
        answer = exchange(server.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Encoding: " + coding
                          + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        assert status(answer) == 400, answer[:300]
    assert refused("bad_body") - before == 3
    packed = gzip.compress(b"y" * 500)
    answer = exchange(server.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: "
                      + str(len(packed)).encode() + b"\r\nConnection: close\r\n\r\n" + packed)
    assert status(answer) == 200 and answer.endswith(b"got 500")  # a real gzip body is read decoded


def test_expect_100_continue_over_the_limit_gets_413_without_the_100_and_the_connection_closes(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        conn.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
        started, answer = time.monotonic(), b""
        while chunk := conn.recv(65536):
            answer += chunk
        closed_after = time.monotonic() - started
    assert status(answer) == 413 and b"100 Continue" not in answer, answer[:300]
    assert closed_after < 2.0  # closed at once, not after reading (or waiting for) the body
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:  # within the limit: 100, then 200
        conn.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n"
                     b"Connection: close\r\n\r\n")
        assert conn.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.sendall(b"abc")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert status(answer) == 200 and answer.endswith(b"got 3")


def test_one_client_cannot_hold_more_than_its_share_of_connections():
    limits = HttpSettings(header_timeout_s=5.0, body_timeout_s=1.0, max_connections=20, max_connections_per_client=3)
    srv = HttpServer("127.0.0.1", 0, [Route("POST", "/echo", echo, max_body_bytes=1000)], "per-client-http",
                     limits).start()
    before = refused("busy_client", "per-client-http")
    held = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(limits.max_connections_per_client)]
    try:
        time.sleep(0.2)
        one_more = exchange(srv.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        assert status(one_more) == 503
        assert refused("busy_client", "per-client-http") - before == 1
        with socket.socket() as other:  # another peer address is still served
            other.settimeout(5)
            other.bind(("127.0.0.2", 0))
            other.connect(("127.0.0.1", srv.port))
            other.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            answer = b""
            while chunk := other.recv(65536):
                answer += chunk
        assert status(answer) == 200
    finally:
        for c in held:
            c.close()
    time.sleep(0.2)
    try:  # the client's connections are counted down as they close
        answer = exchange(srv.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        assert status(answer) == 200
    finally:
        srv.shutdown()
