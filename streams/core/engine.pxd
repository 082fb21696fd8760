# Compiled layout of streams/core/engine.py (Cython's augmenting declarations; the .py is the source).
from streams.core.context cimport FlowContext
from streams.core.due_queue cimport DueQueue
from streams.core.timed_flows cimport TimedFlows

cdef class PartitionEngine:
    cdef dict __dict__
    cdef public object settings, partition
    cdef public FlowContext ctx
    cdef public dict customers
    cdef public DueQueue _due
    cdef public dict _scheduled
    cdef public object _timers  # any mapping (a test swaps in one that forgets)
    cdef public set _dirty
    cdef public object _legacy_clock, _arrival_moves_timers, _audiences_checked
    cdef public object grace_ms, max_future_ms
    cdef public tuple flows
    cdef public dict _transactional
    cdef public TimedFlows _timed
    cdef public dict _retimed_by, _arrival, _settlers, _global
    cdef public object audiences, _track, decisions

cdef class StepResult:
    cdef public list commands, rejections
