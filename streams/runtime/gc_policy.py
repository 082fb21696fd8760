"""Python's cyclic garbage collector, set for a process that streams records through a large state.

With CPython's default thresholds (700, 10, 10) a record waiting in the worker's buffers (up to
``worker.max_buffered`` per topic-partition, for seconds when the worker is behind) outlives two young
collections and is promoted to the oldest generation. Those promotions set off a full collection each
time they reach a quarter of the oldest generation, and a full collection traverses every tracked object
of the process, the customers' state included. The state holds no reference cycles, so the traversals
find nothing to free: measured with ``perf`` on the live worker, they were 14 % of its CPU samples.

The policy, for the long-running commands (``worker``, either runtime, ``simulate``, ``replay``): what is
alive once the process has started (modules, classes, settings) is frozen (``gc.freeze``: the collector
never traverses it again; reference counting still frees it), and the youngest generation is collected
once ``young_threshold`` more objects the collector tracks have been made than freed (Python: 700), so a
buffered record is usually released before it is promoted. Cycles are still collected, later. The state's
structs are not tracked themselves (``gc=False`` on ``streams/core/state.py``'s records); the lists and
dicts they hold still are.

The other services (the sink, tracking, the SES bridge) keep Python's collector: they hold no large
state and buffer at most a batch of commands or requests.

The collector is one per process, so the policy is applied only where shopmail owns the process: the
``shopmail`` program's ``main`` says so (``own_process``); a command invoked from a test or an embedding
application leaves that process's collector as it is.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from streams.config import ConfigError

MAX_THRESHOLD = 2**31 - 1  # what gc.set_threshold takes

_owned = False


def own_process() -> None:
    """Called by the ``shopmail`` program before it runs a command: the process is shopmail's."""
    global _owned
    _owned = True


def check(young_threshold: int) -> None:
    """A ConfigError unless the setting is one ``tune_for_streaming`` takes."""
    if not 0 <= young_threshold <= MAX_THRESHOLD:
        raise ConfigError(f"worker.gc_young_threshold is {young_threshold}: give 0 (Python's default) "
                          f"to {MAX_THRESHOLD}")


def tune_for_streaming(young_threshold: int) -> bool:
    """Freeze what start-up left alive and set the youngest generation's threshold, in a process shopmail
    owns; 0 leaves the collector as Python set it. Whether the collector was changed."""
    check(young_threshold)
    if young_threshold == 0 or not _owned:
        return False
    gc.collect()  # start-up's own garbage is not frozen with the rest
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, oldest)
    return True


@contextmanager
def tuned_for_streaming(young_threshold: int) -> Iterator[None]:
    """The policy for a while, then the collector as it was (the bench runs the worker in its own process
    between parts that keep Python's collector)."""
    before = gc.get_threshold()
    if not tune_for_streaming(young_threshold):  # not ours to change: nor to undo (another program's freeze)
        yield
        return
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
