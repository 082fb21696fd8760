"""Every HTTP listener of shopmail, on one server: aiohttp's web server on an event loop of its own thread.

A service describes its endpoints as :class:`Route`\\ s whose handlers are plain functions
``(Request) -> Response``; they run on a bounded thread pool (they write to Kafka and render pages, which
block), so the event loop only parses HTTP and moves bytes. What every listener gets, from
``http.*`` (:class:`streams.config.HttpSettings`):

- a connection must deliver a complete request head within ``header_timeout_s`` of opening (or of its
  previous response): an idle or slow-loris connection is closed;
- a body must arrive within ``body_timeout_s`` (else 408) and be at most the route's ``max_body_bytes``
  (a larger ``Content-Length`` → 413 before anything is read; with ``Expect: 100-continue`` the 413 comes
  instead of the ``100 Continue`` and the connection is closed, so the client never sends the body);
- a malformed request line, header or ``Content-Length`` (``-1``, ``abc``) → 400 from the parser; a body
  that does not decode by its ``Content-Encoding`` (``gzip`` that is not gzip) → 400 (``bad_body``);
- at most ``max_connections`` open connections, and at most ``max_connections_per_client`` from one peer
  address: one more is answered 503 and closed (behind an ingress the peer is the ingress);
- security headers on every answer of a route, 404 and 405 included (``nosniff``, ``Referrer-Policy:
  no-referrer``, ``X-Frame-Options: DENY``, a Content-Security-Policy that a page may tighten or widen),
  ``Cache-Control: no-store``, and no ``Server`` banner (the parser's own plain-text 400 for a request it
  cannot read is aiohttp's, with its banner);
- a handler that raises is logged and answered 500 (the fuzz tests hold every service to none).

:class:`OpsServer` is the ops listener (``/healthz``, ``/readyz``, ``/metrics``): it is the only place
those paths are served, on a port apart from the public ones.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web
from aiohttp.http_exceptions import DecompressSizeError, HttpProcessingError, PayloadEncodingError
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, generate_latest

from streams.config import HttpSettings

log = logging.getLogger("shopmail.web")
REFUSED = Counter("shopmail_http_refused_total", "Requests answered by the HTTP layer before a handler ran "
                  "(too_large 413, slow_body 408, bad_body 400, malformed 400 from the parser, busy 503, busy_client 503: one peer over its "
                  "connection limit) or that failed in one (error 500)", ["listener", "reason"])

DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # tokens in URLs never leak to a linked site
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Content-Security-Policy": DEFAULT_CSP,
}
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n"
         b"Retry-After: 1\r\n\r\n")


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # the path as sent (percent-decoded), without the query
    query: Mapping[str, str]  # first value of each parameter
    headers: Mapping[str, str]  # case-insensitive
    body: bytes
    params: Mapping[str, str] = field(default_factory=dict)  # from the route pattern, e.g. {token}
    raw_path: str = ""  # path and query as sent


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, data: Any, headers: Mapping[str, str] | None = None) -> "Response":
        return cls(status, json.dumps(data).encode(), "application/json", headers or {})

    @classmethod
    def html(cls, status: int, page: str | bytes, headers: Mapping[str, str] | None = None) -> "Response":
        return cls(status, page.encode() if isinstance(page, str) else page, "text/html; charset=utf-8",
                   headers or {})


@dataclass(frozen=True)
class Route:
    method: str  # GET, POST
    path: str  # aiohttp pattern, e.g. "/track/{token}"
    handler: Callable[[Request], Response]
    max_body_bytes: int = 0  # a larger body → 413; 0: the route takes no body (any body → 413)


class _Busy(asyncio.Protocol):
    """Answers a connection over the limit with 503 and closes it: once its request has been read (closing
    with unread data would reset the connection before the client reads the answer), or after a second."""

    def __init__(self, listener: str, reason: str = "busy") -> None:
        REFUSED.labels(listener, reason).inc()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(_BUSY)
        asyncio.get_running_loop().call_later(1.0, transport.close)

    def data_received(self, data: bytes) -> None:
        if self.transport is not None and b"\r\n\r\n" in data:
            self.transport.close()


class _PerClient(asyncio.Protocol):
    """One connection, counted against its peer address: past ``limit`` open connections from that address
    it is answered like :class:`_Busy`; otherwise everything goes to the server's own protocol."""

    def __init__(self, serve: Callable[[], asyncio.Protocol], open_by_peer: dict[str, int], limit: int,
                 listener: str) -> None:
        self._serve = serve
        self._open = open_by_peer
        self._limit = limit
        self._listener = listener
        self._peer: str | None = None
        self._inner: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peername = transport.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) and peername else str(peername)
        if self._open.get(peer, 0) >= self._limit:
            self._inner = _Busy(self._listener, "busy_client")
        else:
            self._open[peer] = self._open.get(peer, 0) + 1
            self._peer = peer
            self._inner = self._serve()
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._peer is not None:
            left = self._open.get(self._peer, 1) - 1
            if left > 0:
                self._open[self._peer] = left
            else:
                self._open.pop(self._peer, None)
            self._peer = None
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


_protocol_log = logging.getLogger("shopmail.web.protocol")


class _ClientErrors(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp reports requests it cannot parse (a client's error, answered 400) with ``exception``:
    logged at debug here, so a scanner cannot fill the log, and counted (``malformed``, or ``bad_body``
    for a body that does not decode by its ``Content-Encoding``). Handler errors are logged by the adapter."""

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            reason = "bad_body" if isinstance(exc, PayloadEncodingError) else "malformed"
            REFUSED.labels(str((self.extra or {}).get("listener", "")), reason).inc()
        self.debug(msg, *args, exc_info=exc if isinstance(exc, BaseException) else True)


class _TooLarge(Exception):
    pass


class _Undecodable(Exception):
    pass


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, or _TooLarge as soon as it passes ``limit`` bytes (chunked bodies too)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = await request.content.read(65536)
        except web.RequestPayloadError as exc:  # the parser's error, e.g. gzip that is not gzip
            if isinstance(exc.__cause__, DecompressSizeError):  # decodes to more than the parser allows
                raise _TooLarge from exc
            raise _Undecodable(str(exc.__cause__ or exc).replace("\n", " ").strip()) from exc
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class HttpServer:
    """``routes`` served on ``host:port`` (0 = a free port) by an aiohttp server on its own thread.

    ``openapi``, when given, is served at ``GET /openapi.json``; ``headers`` are added to every answer
    (over :data:`SECURITY_HEADERS`; a Response's own headers win)."""

    def __init__(self, host: str, port: int, routes: Sequence[Route], name: str,
                 limits: HttpSettings | None = None, headers: Mapping[str, str] | None = None,
                 openapi: Mapping[str, Any] | None = None) -> None:
        self.host = host
        self.name = name
        self.limits = limits or HttpSettings()
        self.headers = {**SECURITY_HEADERS, **(headers or {})}
        self.routes = list(routes)
        if openapi is not None:  # first: a service's catch-all route must not hide it
            spec = json.dumps(openapi).encode()
            self.routes.insert(0, Route("GET", "/openapi.json", lambda _r: Response(200, spec, "application/json")))
        self._requested_port = port
        self.port = 0
        self._pool = concurrent.futures.ThreadPoolExecutor(self.limits.handler_threads, thread_name_prefix=name)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> Self:
        self._thread.start()
        self._ready.wait(30)
        if self._failure is not None:
            raise OSError(f"{self.name}: cannot listen on {self.host}:{self._requested_port}: {self._failure}")
        return self

    def shutdown(self) -> None:
        if self._stopping is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(15)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to start() (bind errors) or logged
            if not self._ready.is_set():
                self._failure = exc
                self._ready.set()
            else:
                log.exception("%s stopped", self.name)
        finally:
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=max([r.max_body_bytes for r in self.routes] + [1]),
                              handler_args={"max_line_size": self.limits.max_header_bytes,
                                            "max_field_size": self.limits.max_header_bytes})
        for route in self.routes:
            app.router.add_route(route.method, route.path, self._adapt(route), expect_handler=self._expect(route))
        app.on_response_prepare.append(self._headers)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, logger=_ClientErrors(_protocol_log, {"listener": self.name}),
                               keepalive_timeout=self.limits.header_timeout_s, shutdown_timeout=5.0)
        await runner.setup()
        server = runner.server
        assert server is not None
        limit, per_client = self.limits.max_connections, self.limits.max_connections_per_client
        open_by_peer: dict[str, int] = {}

        def protocol() -> asyncio.BaseProtocol:
            if len(server.connections) >= limit:
                return _Busy(self.name)
            return _PerClient(server, open_by_peer, per_client, self.name)

        listener = await asyncio.get_running_loop().create_server(protocol, self.host, self._requested_port,
                                                                   backlog=128, reuse_address=True)
        self.port = int(listener.sockets[0].getsockname()[1])
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            listener.close()
            await runner.cleanup()

    # ---- requests -------------------------------------------------------------------------------
    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        for name, value in self.headers.items():
            response.headers.setdefault(name, value)
        response.headers.popall("Server", None)

    def _refuse(self, status: int, reason: str, text: str) -> web.Response:
        REFUSED.labels(self.name, reason).inc()
        return web.Response(status=status, text=text, headers={"Connection": "close"})

    def _expect(self, route: Route) -> Callable[[web.Request], Any]:
        """``Expect: 100-continue``: a declared body over the route's limit is answered 413 at once (no
        ``100 Continue``) and the connection closed, so the client never sends it; else ``100 Continue``."""
        async def expect(request: web.Request) -> web.StreamResponse | None:
            if request.headers.get("Expect", "").lower() != "100-continue":
                raise web.HTTPExpectationFailed(text=f"unknown Expect: {request.headers.get('Expect', '')[:80]}")
            declared = request.content_length
            if declared is not None and declared > route.max_body_bytes:
                answer = self._refuse(413, "too_large", f"body over {route.max_body_bytes} bytes")
                await answer.prepare(request)
                await answer.write_eof()
                request.protocol.force_close()  # closes once the answer is flushed; the body is never read
                return answer
            if request.version >= (1, 1):
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                request.writer.output_size = 0  # the answer's own size starts after the interim line
            return None

        return expect

    def _adapt(self, route: Route) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            declared = request.content_length
            if declared is not None and declared > route.max_body_bytes:
                return self._refuse(413, "too_large", f"body over {route.max_body_bytes} bytes")
            body = b""
            if request.body_exists:
                try:
                    body = await asyncio.wait_for(_read_body(request, route.max_body_bytes),
                                                  self.limits.body_timeout_s)
                except asyncio.TimeoutError:
                    return self._refuse(408, "slow_body", f"body not received within {self.limits.body_timeout_s} s")
                except _TooLarge:
                    return self._refuse(413, "too_large", f"body over {route.max_body_bytes} bytes")
                except _Undecodable as exc:
                    return self._refuse(400, "bad_body", f"body does not decode: {exc}")
            req = Request(method=request.method, path=request.path,
                          query={k: request.query.getone(k) for k in request.query.keys()},
                          headers=request.headers, body=body, params=dict(request.match_info),
                          raw_path=request.raw_path)
            loop = asyncio.get_running_loop()
            try:
                answer = await loop.run_in_executor(self._pool, route.handler, req)
            except Exception:  # noqa: BLE001 - a defect: logged with its trace, answered 500
                log.exception("%s %s %s failed", self.name, request.method, request.path)
                REFUSED.labels(self.name, "error").inc()
                return web.Response(status=500, text="internal error")
            return web.Response(status=answer.status, body=answer.body, headers={
                "Content-Type": answer.content_type, **answer.headers})

        return handle


class OpsServer(HttpServer):
    """``/healthz`` answers ``health`` (liveness: 503 restarts the pod), ``/readyz`` answers ``ready``
    (readiness: 503 takes it out of service; ``health`` when not given), ``/metrics`` Prometheus."""

    def __init__(self, port: int, health: Callable[[], tuple[bool, dict[str, Any]]],
                 registry: CollectorRegistry = REGISTRY, host: str = "127.0.0.1",
                 ready: Callable[[], tuple[bool, dict[str, Any]]] | None = None,
                 limits: HttpSettings | None = None, extra: Sequence[Route] = ()) -> None:
        """``extra``: a service's own ops routes (the processors' ``/customers/{customer_id}``)."""
        self.health = health
        self.ready = ready or health

        def answer(check: Callable[[], tuple[bool, dict[str, Any]]]) -> Callable[[Request], Response]:
            def handler(_request: Request) -> Response:
                ok, detail = check()
                return Response.json(200 if ok else 503, {"ok": ok, **detail})
            return handler

        routes = [Route("GET", "/healthz", answer(lambda: self.health())),
                  Route("GET", "/readyz", answer(lambda: self.ready())),
                  Route("GET", "/metrics", lambda _r: Response(200, generate_latest(registry), CONTENT_TYPE_LATEST))]
        routes.extend(extra)
        super().__init__(host, port, routes, "ops-http", limits)


CUSTOMER_QUERIES_PER_S = 50.0  # interactive queries are for people and support tools; more waits (429)


def customer_route(lookup: Callable[[str], tuple[int, dict[str, Any]]], max_per_s: float = CUSTOMER_QUERIES_PER_S,
                   clock: Callable[[], float] | None = None) -> Route:
    """``GET /customers/{customer_id}`` on a worker's ops port: ``lookup(customer_id)`` → (status, body)
    (the processors' ``ProcessorRuntime.customer``: a customer it runs, in words). The ops thread shares
    the interpreter with the worker's loop, so queries are rate-limited (a token bucket of one second's
    worth): beyond ``max_per_s`` the answer is 429 with ``Retry-After``; a 503 from ``lookup`` (a partition
    still restoring) carries ``Retry-After`` from its body's ``retry_after_s``. ``clock``: monotonic seconds
    (``time.monotonic``)."""
    now_s = clock or time.monotonic
    lock = threading.Lock()
    bucket = [max_per_s, now_s()]  # tokens, last refill

    def handler(request: Request) -> Response:
        with lock:
            now = now_s()
            bucket[0] = min(max_per_s, bucket[0] + (now - bucket[1]) * max_per_s)
            bucket[1] = now
            if bucket[0] < 1:
                return Response.json(429, {"error": "too_many_queries", "max_per_s": max_per_s},
                                     headers={"Retry-After": "1"})
            bucket[0] -= 1
        status, body = lookup(request.params["customer_id"])
        if status == 503:  # e.g. the customer's partition is still being restored: when to ask again
            return Response.json(status, body, headers={"Retry-After": str(body.get("retry_after_s", 1))})
        return Response.json(status, body)

    return Route("GET", "/customers/{customer_id}", handler)
