"""Python's cyclic garbage collector, set for a process that streams records through a large state.

With CPython's default thresholds (700, 10, 10) a record waiting in the worker's buffers (up to
``worker.max_buffered`` per topic-partition, for seconds when the worker is behind) outlives two young
collections and is promoted to the oldest generation. Those promotions set off a full collection each
time they reach a quarter of the oldest generation, and a full collection traverses every tracked object
of the process, the customers' state included. The state holds no reference cycles, so the traversals
find nothing to free: measured with ``perf`` on the live worker, they were 14 % of its CPU samples.

The policy, for the long-running commands (``worker``, ``simulate``, ``replay``): what is alive once the
process has started (modules, classes, settings) is frozen (``gc.freeze``: the collector never traverses
it again; reference counting still frees it), and the youngest generation holds ``young_threshold``
allocations before it is collected, so a buffered record is usually released before it is promoted.
Cycles are still collected, later. The state's records are not tracked at all (``gc=False`` on
``streams/core/state.py``'s structs).

The collector is one per process, so the policy is applied only where shopmail owns the process: the
``shopmail`` program's ``main`` says so (``own_process``); a command invoked from a test or an embedding
application leaves that process's collector as it is.
"""

from __future__ import annotations

import gc

from streams.config import ConfigError

_owned = False


def own_process() -> None:
    """Called by the ``shopmail`` program before it runs a command: the process is shopmail's."""
    global _owned
    _owned = True


def tune_for_streaming(young_threshold: int) -> None:
    """Freeze what start-up left alive and set the youngest generation's threshold, in a process shopmail
    owns; 0 leaves the collector as Python set it."""
    if young_threshold < 0:
        raise ConfigError(f"worker.gc_young_threshold is {young_threshold}: give 0 (Python's default) or more")
    if young_threshold == 0 or not _owned:
        return
    gc.collect()  # start-up's own garbage is not frozen with the rest
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, oldest)
