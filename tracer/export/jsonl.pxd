# Types for the compiled JSON lines writer (Cython pure-Python mode, see tracer/core.py).

cimport cython

cdef object _dumps, _NEWLINE


@cython.final
cdef class JsonlWriter:
    cdef public object target
    cdef public unsigned long long written
    cdef object _f
    cdef bint _own
    cdef bytearray _buf
    cdef Py_ssize_t _pos

    @cython.locals(pos=Py_ssize_t)
    cdef int _drain(self) except -1
    cpdef flush(self)
    cpdef close(self)
