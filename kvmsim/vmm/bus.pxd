# Cython (compiled path only): the bus as an extension type, its answer cache a dict whose get is a C call.
cdef class Bus:
    cdef dict __dict__
    cdef public object name
    cdef public list _ranges, _bases
    cdef public dict _found
