# Compiled layout of streams/core/due_queue.py (Cython's augmenting declarations; the .py is the source).
cdef class DueQueue:
    cdef public list near
    cdef public dict far
    cdef public list far_keys
    cdef public object horizon
    cdef public object width
