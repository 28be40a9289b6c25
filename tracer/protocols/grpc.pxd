# Compiled form of tracer/protocols/grpc.py (Cython pure-Python mode).
cimport cython


@cython.final
@cython.freelist(64)
cdef class MessageCounter:
    cdef public Py_ssize_t need
    cdef public bytes prefix
    cdef public Py_ssize_t count, total
    cdef public bint lost

    @cython.locals(need=Py_ssize_t, have=Py_ssize_t, take=Py_ssize_t, pre=bytes,
                   length=Py_ssize_t)
    cpdef feed(self, bytes data, Py_ssize_t pos, Py_ssize_t n, Py_ssize_t cap)


@cython.locals(i=Py_ssize_t)
cpdef tuple split_path(str path)

@cython.locals(a=dict, service=str, method=str)
cpdef dict attributes(str path, object grpc_status, object grpc_message,
                      MessageCounter req, MessageCounter resp)
