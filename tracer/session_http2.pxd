# Compiled form of tracer/session_http2.py (Cython pure-Python mode). The
# session is the frame readers' Owner (protocols/http2): their calls are C.
cimport cython
from tracer.connstate cimport Conn
from tracer.correlate cimport Correlator
from tracer.events cimport DataEvent
from tracer.protocols.http2 cimport FrameReader, Owner
from tracer.protocols.grpc cimport MessageCounter

cdef int _ROLE_SERVER, _ROLE_CLIENT, _ROLE_UNKNOWN, _INGRESS, _EGRESS


@cython.final
@cython.freelist(32)
cdef class _Stream:
    cdef public Py_ssize_t sid
    cdef public dict req, resp_hdrs, trailers
    cdef public object status, ctx
    cdef public bint lost, orphan, grpc
    cdef public object req_first, req_last, resp_first, resp_last
    cdef public MessageCounter req_msgs, resp_msgs


cdef class Http2Session(Owner):
    cdef public Conn conn
    cdef public object table
    cdef public Correlator correlator
    cdef public dict streams
    cdef public tuple readers
    cdef public int req_dir
    cdef public bint dead

    @cython.locals(reader=FrameReader)
    cpdef on_data(self, DataEvent ev)
    @cython.locals(n=Py_ssize_t, st=_Stream)
    cpdef on_close(self, bint eof)
    cpdef give_up(self)

    @cython.locals(st=_Stream)
    cpdef object msg_counter(self, object reader, Py_ssize_t sid)

    @cython.locals(streams=dict, st=_Stream, server=cython.bint, status=str, ctype=str)
    cpdef on_headers(self, object reader, Py_ssize_t sid, dict fields, bint lost,
                    bint end_stream, object first, object last)

    @cython.locals(st=_Stream)
    cpdef on_data_end(self, object reader, Py_ssize_t sid, bint end_stream, object ev)

    @cython.locals(st=_Stream)
    cpdef on_rst(self, object reader, Py_ssize_t sid, object code, object ev)

    @cython.locals(streams=dict, st=_Stream)
    cpdef on_goaway(self, object reader, object last_sid, object ev)

    @cython.locals(req_dir=int)
    cdef bint _learn_role(self, int direction, dict fields) except -1

    cdef _finish(self, _Stream st, long long reset_code=*)


cdef int _direction(object reader) except? -1


@cython.locals(req=dict, trailers=dict, extra=dict, target=str, path=str, query=str)
cpdef object h2_span(Conn conn, _Stream st, object clock_offset_ns, bint server,
                     long long reset_code=*)
