"""A ``shopmail`` subcommand run as a child process: its own session (so a kill reaches everything it
started), its output appended to a log file. The demo runs its worker, sink and tracking page this
way, and the crash tests their workers and sinks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


class CliProcess:
    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in terminate/kill9
        self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", *args], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def terminate(self, timeout_s: float = 30) -> int:
        """SIGTERM, and SIGKILL of its whole session if it has not exited within ``timeout_s``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def log(self, chars: int = 4000) -> str:
        """The end of its output."""
        return self.log_path.read_text(errors="replace")[-chars:]
