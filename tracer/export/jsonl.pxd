# Types for the compiled JSON lines writer (Cython pure-Python mode, see tracer/core.py).

cimport cython
from tracer.spans cimport Span

cdef object _dumps, _NEWLINE


@cython.final
cdef class JsonlWriter:
    cdef public object target
    cdef public unsigned long long written
    cdef object _f
    cdef bint _own
    cdef bytearray _buf
    cdef Py_ssize_t _pos
    cdef object _direct
    cdef int _fd
    cdef long long _end, _advised

    @cython.locals(pos=Py_ssize_t)
    cdef int _drain(self) except -1
    cdef _write(self, data)
    @cython.locals(batch=Py_ssize_t, upto=cython.longlong, lo=cython.longlong)
    cdef _drop_behind(self)
    cpdef flush(self)
    cpdef close(self)
