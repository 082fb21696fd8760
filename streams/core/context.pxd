# Compiled layout of streams/core/context.py (Cython's augmenting declarations; the .py is the source).
cdef class FlowContext:
    cdef public object settings, grace_ms, clock_ms, tick_ms
    cdef public dict stats
    cdef public object cooc, catalog, spend
    cdef public object partition_changed
    cdef public object shop_url
    cdef public dict tables
    cdef public object deliverability, decisions
