"""Run a service loop (``run(stop_event)``) in a background thread and surface its failure."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Background:
    thread: threading.Thread
    stop: threading.Event
    errors: list[BaseException] = field(default_factory=list)

    def finish(self, timeout_s: float = 30.0) -> None:
        """Stop the loop, wait for it, and re-raise what it failed with."""
        self.stop.set()
        self.thread.join(timeout_s)
        if self.errors:
            raise self.errors[0]


def start(run: Callable[[threading.Event], None], name: str) -> Background:
    stop = threading.Event()
    bg = Background(threading.Thread(name=name, daemon=True), stop)

    def target() -> None:
        try:
            run(stop)
        except BaseException as exc:  # kept for finish()/callers instead of dying silently in the thread
            bg.errors.append(exc)

    bg.thread = threading.Thread(target=target, name=name, daemon=True)
    bg.thread.start()
    return bg
