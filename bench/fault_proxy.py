"""A loopback HTTP proxy in front of an SES endpoint (the moto server in tests and benchmarks).

It forwards every request to moto, records each SendEmail call (time and parameters), and can answer
the next N SendEmail calls itself with an SES error (429 TooManyRequestsException, 500, a
SendingPausedException, …) — wire-level fault injection, no boto3 patching. Given further emulators
(``others``), it hands the requests to each in turn, as a load balancer in front of SES's fleet does.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Fault:
    status: int
    code: str
    message: str = "injected by the test"
    times: int = 1


@dataclass
class Recorded:
    at: float  # time.monotonic()
    path: str
    body: dict[str, Any]
    faulted: bool


@dataclass
class FaultProxy:
    upstream: str
    faults: list[Fault] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    delay_s: float = 0.0
    others: list[str] = field(default_factory=list)  # further upstreams, each taken in turn with ``upstream``

    def __post_init__(self) -> None:
        proxy = self
        self._lock = threading.Lock()
        self._turn = itertools.cycle([self.upstream, *self.others])

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                is_send = self.command == "POST" and self.path.startswith("/v2/email/outbound-emails")
                fault = proxy._take_fault() if is_send else None
                if is_send:
                    try:
                        params = json.loads(body or b"{}")
                    except ValueError:
                        params = {}
                    with proxy._lock:
                        proxy.requests.append(Recorded(time.monotonic(), self.path, params, fault is not None))
                if fault is not None:
                    payload = json.dumps({"message": fault.message}).encode()
                    self.send_response(fault.status)
                    self.send_header("x-amzn-ErrorType", fault.code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if proxy.delay_s:
                    time.sleep(proxy.delay_s)
                with proxy._lock:
                    upstream = next(proxy._turn)
                req = urllib.request.Request(upstream + self.path, data=body if body else None,
                                             method=self.command,
                                             headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                try:
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        status, headers, data = resp.status, resp.headers.items(), resp.read()
                except urllib.error.HTTPError as err:
                    status, headers, data = err.code, err.headers.items(), err.read()
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _forward  # noqa: N815

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _take_fault(self) -> Fault | None:
        with self._lock:
            if not self.faults:
                return None
            fault = self.faults[0]
            fault.times -= 1
            if fault.times <= 0:
                self.faults.pop(0)
            return fault

    def inject(self, status: int, code: str, times: int = 1, message: str = "injected by the test") -> None:
        with self._lock:
            self.faults.append(Fault(status, code, message, times))

    def sends(self) -> list[Recorded]:
        with self._lock:
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
