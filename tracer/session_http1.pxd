# Types for the compiled session (Cython pure-Python mode, see tracer/core.py).
# The parsers and their messages stay Python objects here: cimporting
# tracer.protocols.http1 would break running just one of the two from source.

cimport cython

cdef int _ROLE_SERVER, _INGRESS, _EGRESS, LOST
cdef Py_ssize_t MAX_PIPELINED


cdef class Http1Session:
    cdef public object conn, table, stats, req, resp, pending
    cdef public int req_dir
    cdef public bint dead, server

    cpdef on_data(self, ev)
    cpdef on_close(self, bint eof)
    cpdef on_head(self, parser, msg)
    @cython.locals(status=int)
    cpdef on_end(self, parser, msg)
    cpdef on_malformed(self, parser, nbytes)
    cdef int _give_up(self) except -1
    cdef int _abandon(self) except -1
    cpdef request_method(self)
