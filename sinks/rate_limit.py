"""Token bucket shared by the sending threads: never more than ``rate`` sends per second on average,
with at most ``burst`` at once."""

from __future__ import annotations

import threading
import time


class TokenBucket:
    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate, self.capacity = self._checked(rate, burst)
        self._tokens = self.capacity
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def set_rate(self, rate: float, burst: float | None = None) -> None:
        """Change the rate (and burst) from now on: tokens earned so far count at the old rate."""
        rate, capacity = self._checked(rate, burst)
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self.rate, self.capacity = rate, capacity
            self._tokens = min(self._tokens, self.capacity)

    @staticmethod
    def _checked(rate: float, burst: float | None) -> tuple[float, float]:
        """(rate, capacity): the burst defaults to a tenth of a second's sends, at least one."""
        if rate <= 0:
            raise ValueError("rate must be > 0 (use Unlimited for no limit)")
        return rate, burst if burst is not None else max(1.0, rate / 10)

    def try_acquire(self) -> float:
        """Take a token if one is available: 0.0; otherwise the seconds until one will be."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.rate

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Block until a token is available; False if ``stop`` was set while waiting."""
        while True:
            wait = self.try_acquire()
            if not wait:
                return True
            if stop is not None and stop.wait(wait):
                return False
            if stop is None:
                time.sleep(wait)


class Unlimited:
    rate = float("inf")

    def try_acquire(self) -> float:
        return 0.0

    def acquire(self, stop: threading.Event | None = None) -> bool:
        return True
