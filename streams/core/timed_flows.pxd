# Compiled layout of streams/core/timed_flows.py (Cython's augmenting declarations; the .py is the source).
cdef class TimedFlows:
    cdef public frozenset flows
    cdef public tuple _asked
    cdef public object _fields
