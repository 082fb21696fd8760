"""A command that needs the broker and cannot reach it says so in one line — the bootstrap servers and
the cause — within 10 s of its start-up, with exit code 3 and no traceback unless --debug. Real sockets: a closed port
(refused), a name that does not resolve, and a listening socket that never answers (blackholed)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.cli.main import EXIT_KAFKA_UNREACHABLE

pytestmark = pytest.mark.slow  # each test starts the CLI twice and waits out a connection failure

FAIL_FAST_S = 10.0


@pytest.fixture
def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()  # nothing listens there any more: connections are refused
    return port


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A socket that listens (the kernel completes the handshake) but never reads or answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    try:
        yield int(s.getsockname()[1])
    finally:
        s.close()


def shopmail(bootstrap: str, *args: str, tmp_path: Path, **extra_env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPMAIL_")}
    env.update({"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "SHOPMAIL_WORKER__DATA_DIR": str(tmp_path / "data"),
                "SHOPMAIL_WORKER__STORE": "memory://", "SHOPMAIL_WORKER__WEB_PORT": "0", **extra_env})
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True, env=env,
                          timeout=60, cwd=tmp_path)
    elapsed = time.monotonic() - started
    # what counts is the time spent on the broker, not the interpreter's start-up, which a loaded machine
    # stretches: the same command's --help, started just after, is taken off
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "streams.cli", *args, "--help"], capture_output=True, env=env, timeout=60,
                   cwd=tmp_path, check=True)
    return done, elapsed - (time.monotonic() - started)


def assert_one_line_error(done: subprocess.CompletedProcess[str], elapsed: float, bootstrap: str, cause: str) -> None:
    assert elapsed < FAIL_FAST_S, f"took {elapsed:.1f}s"
    assert done.returncode == EXIT_KAFKA_UNREACHABLE, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert bootstrap in lines[0] and cause in lines[0], lines[0]


def test_a_refused_connection_is_one_line_naming_the_servers_within_ten_seconds(closed_port: int, tmp_path: Path):
    bootstrap = f"127.0.0.1:{closed_port}"
    done, elapsed = shopmail(bootstrap, "topics", "--verify", tmp_path=tmp_path)
    assert_one_line_error(done, elapsed, bootstrap, "connection refused")


def test_an_unknown_host_is_one_line_naming_the_servers_within_ten_seconds(tmp_path: Path):
    bootstrap = "no-such-broker.invalid:9092"
    done, elapsed = shopmail(bootstrap, "topics", "--verify", tmp_path=tmp_path)
    assert_one_line_error(done, elapsed, bootstrap, "unknown host")


def test_a_blackholed_address_times_out_in_one_line_within_ten_seconds(blackhole: int, tmp_path: Path):
    bootstrap = f"127.0.0.1:{blackhole}"
    done, elapsed = shopmail(bootstrap, "topics", "--verify", tmp_path=tmp_path)
    assert_one_line_error(done, elapsed, bootstrap, "timeout")


def test_the_worker_fails_fast_too_and_debug_shows_the_traceback(closed_port: int, tmp_path: Path):
    bootstrap = f"127.0.0.1:{closed_port}"
    done, elapsed = shopmail(bootstrap, "worker", tmp_path=tmp_path)
    assert_one_line_error(done, elapsed, bootstrap, "connection refused")
    debug, _ = shopmail(bootstrap, "--debug", "worker", tmp_path=tmp_path)
    assert debug.returncode != 0 and "KafkaConnectError" in debug.stderr and "Traceback" in debug.stderr


def test_unusable_security_settings_are_one_line_with_exit_code_two(closed_port: int, tmp_path: Path):
    missing_ca = tmp_path / "no-such-ca.crt"
    env = {"SHOPMAIL_KAFKA__SECURITY__PROTOCOL": "SSL", "SHOPMAIL_KAFKA__SECURITY__SSL_CA_LOCATION": str(missing_ca)}
    done, elapsed = shopmail(f"127.0.0.1:{closed_port}", "topics", "--verify", tmp_path=tmp_path, **env)
    assert done.returncode == 2 and "Traceback" not in done.stderr and elapsed < FAIL_FAST_S
    assert done.stderr.strip().splitlines() == [f"shopmail: config error: kafka.security.ssl_ca_location: no such file {missing_ca}"]
