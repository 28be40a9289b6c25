# Types for the compiled session (Cython pure-Python mode, see tracer/core.py).
# The table stays a Python object (it imports this module).

cimport cython
from tracer.connstate cimport Conn
from tracer.correlate cimport Correlator
from tracer.events cimport DataEvent
from tracer.protocols.http1 cimport Http1Parser, Listener, Message
from tracer.stats cimport Stats

cdef int _ROLE_SERVER, _INGRESS, _EGRESS, LOST
cdef Py_ssize_t MAX_PIPELINED


cdef class Http1Session(Listener):
    cdef public Conn conn
    cdef public object table, pending
    cdef public Stats stats
    cdef public Http1Parser req, resp
    cdef public Correlator correlator
    cdef public int req_dir
    cdef public bint dead, server

    cpdef on_data(self, DataEvent ev)
    cpdef on_close(self, bint eof)
    @cython.locals(ev=DataEvent, resp=Http1Parser, req=Http1Parser)
    cpdef on_head(self, parser, Message msg)
    @cython.locals(status=int, req=Message)
    cpdef on_end(self, parser, Message msg)
    cpdef on_malformed(self, parser, nbytes)
    cdef int _give_up(self) except -1
    cdef int _abandon(self) except -1
    cpdef request_method(self)
