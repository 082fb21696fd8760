# Compiled layout of streams/core/flows/base.py (Cython's augmenting declarations; the .py is the source).
# A flow's own attributes (those of a plug-in) live in its ``__dict__``.
from streams.core.context cimport FlowContext

cdef class Flow:
    cdef dict __dict__
    cdef public FlowContext ctx
    cdef public object options
    cdef public dict _peers

cdef class MarketingFlow(Flow):
    cdef public object expires_ms, guards, experiments, sunset_ms, provider_guard

cdef class SingleInstanceFlow(MarketingFlow):
    pass

cdef class KeyedFlow(MarketingFlow):
    pass

cdef class SeriesFlow(SingleInstanceFlow):
    cdef public list delays
