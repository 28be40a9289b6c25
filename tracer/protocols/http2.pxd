# Compiled form of tracer/protocols/http2.py (Cython pure-Python mode).
# Objects of other modules (events, hpack_partial, grpc, the table) stay
# `object`: each module can run compiled or pure on its own (TRACER_PURE).
cimport cython

cdef Py_ssize_t _PREFACE_LEN
cdef int _DATA, _HEADERS, _PRIORITY, _RST, _SETTINGS, _PUSH, _PING, _GOAWAY, _WINDOW, _CONT
cdef int _END_STREAM, _END_HEADERS, _PADDED, _PRIORITY_FLAG
cdef tuple _VALID_FLAGS
cdef Py_ssize_t _MAX_HELD, _SHAPE_MAX_LEN
cdef int _ROLE_SERVER, _ROLE_CLIENT, _ROLE_UNKNOWN, _INGRESS, _EGRESS

@cython.locals(valid=int)
cpdef bint frame_ok(int ftype, int flags, long long sid, long long length)

@cython.locals(cap=Py_ssize_t, pos=Py_ssize_t, n=Py_ssize_t, length=Py_ssize_t,
               ftype=int, flags=int, sid=cython.longlong)
cpdef bint looks_like_frames(bytes data, Py_ssize_t size, int first_type=*)


@cython.final
@cython.freelist(32)
cdef class _Stream:
    cdef public Py_ssize_t sid
    cdef public dict req, resp_hdrs, trailers
    cdef public object status, ctx
    cdef public bint lost, orphan, grpc
    cdef public object req_first, req_last, resp_first, resp_last
    cdef public object req_msgs, resp_msgs


cdef class Http2Session


@cython.final
cdef class FrameReader:
    cdef public Http2Session session
    cdef public int direction
    cdef public object hpack
    cdef public bytes buf
    cdef public object buf_ev
    cdef public bint preface
    cdef public Py_ssize_t remaining
    cdef public int ftype, flags
    cdef public Py_ssize_t sid, flen
    cdef public object frame_ev
    cdef public list body
    cdef public bint short
    cdef public Py_ssize_t held
    cdef public object msgs
    cdef public Py_ssize_t dpre, dcontent
    cdef public list block
    cdef public bint lost
    cdef public int lost_events

    @cython.locals(data=bytes, size=Py_ssize_t, cap=Py_ssize_t, pos=Py_ssize_t,
                   rem=Py_ssize_t, avail=Py_ssize_t, take=Py_ssize_t, end=Py_ssize_t,
                   body=list, length=Py_ssize_t, ftype=int, flags=int, sid=Py_ssize_t,
                   block=list)
    cpdef feed(self, object ev)

    @cython.locals(content=Py_ssize_t, c=Py_ssize_t)
    cdef _data(self, bytes data, Py_ssize_t pos, Py_ssize_t n, Py_ssize_t cap)

    @cython.locals(ftype=int, session=Http2Session, body=list, raw=bytes, short=cython.bint,
                   frag=bytes, block=list)
    cdef _frame_end(self, object ev)

    @cython.locals(flags=int, skip=Py_ssize_t)
    cdef bytes _fragment(self, int ftype, bytes raw, bint short)

    @cython.locals(fields=dict, lost=cython.bint)
    cdef _block_done(self, Py_ssize_t sid, bytes block, int flags, object first, object last,
                     bint short, bint push)

    @cython.locals(session=Http2Session)
    cdef _lose(self, Py_ssize_t nbytes)


@cython.final
cdef class Http2Session:
    cdef public object conn, table, stats
    cdef public dict streams
    cdef public tuple readers
    cdef public int req_dir
    cdef public bint dead

    @cython.locals(reader=FrameReader)
    cpdef on_data(self, object ev)
    @cython.locals(n=Py_ssize_t, st=_Stream)
    cpdef on_close(self, bint eof)
    cpdef give_up(self)

    @cython.locals(st=_Stream)
    cdef object msg_counter(self, FrameReader reader, Py_ssize_t sid)

    @cython.locals(streams=dict, st=_Stream, server=cython.bint, status=str, ctype=str)
    cdef on_headers(self, FrameReader reader, Py_ssize_t sid, dict fields, bint lost,
                    bint end_stream, object first, object last)

    @cython.locals(st=_Stream)
    cdef on_data_end(self, FrameReader reader, Py_ssize_t sid, bint end_stream, object ev)

    @cython.locals(st=_Stream)
    cdef on_rst(self, FrameReader reader, Py_ssize_t sid, object code, object ev)

    @cython.locals(streams=dict, st=_Stream)
    cdef on_goaway(self, FrameReader reader, object last_sid, object ev)

    @cython.locals(req_dir=int)
    cdef bint _learn_role(self, int direction, dict fields) except -1

    cdef _finish(self, _Stream st, long long reset_code=*)


@cython.locals(req=dict, trailers=dict, extra=dict, target=str, path=str, query=str)
cpdef object h2_span(object conn, _Stream st, object clock_offset_ns, bint server,
                     long long reset_code=*)
