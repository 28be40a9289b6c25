# Compiled form of tracer/protocols/http2.py (Cython pure-Python mode).
# The owner is the cdef class Owner, the HPACK table and the gRPC message
# counter cimported (their methods are C calls); events stay `object`.
cimport cython
from tracer.stats cimport Stats
from tracer.protocols.hpack_partial cimport HpackTable
from tracer.protocols.grpc cimport MessageCounter

cdef Py_ssize_t _PREFACE_LEN
cdef int _DATA, _HEADERS, _PRIORITY, _RST, _SETTINGS, _PUSH, _PING, _GOAWAY, _WINDOW, _CONT
cdef int _END_STREAM, _END_HEADERS, _PADDED, _PRIORITY_FLAG
cdef tuple _VALID_FLAGS
cdef Py_ssize_t _MAX_HELD, _SHAPE_MAX_LEN

@cython.locals(valid=int)
cpdef bint frame_ok(int ftype, int flags, long long sid, long long length)

@cython.locals(cap=Py_ssize_t, pos=Py_ssize_t, n=Py_ssize_t, length=Py_ssize_t,
               ftype=int, flags=int, sid=cython.longlong)
cpdef bint looks_like_frames(bytes data, Py_ssize_t size, int first_type=*)


cdef class Owner:
    cdef public Stats stats

    cpdef give_up(self)
    cpdef object msg_counter(self, object reader, Py_ssize_t sid)
    cpdef on_headers(self, object reader, Py_ssize_t sid, dict fields, bint lost,
                     bint end_stream, object first, object last)
    cpdef on_data_end(self, object reader, Py_ssize_t sid, bint end_stream, object ev)
    cpdef on_rst(self, object reader, Py_ssize_t sid, object code, object ev)
    cpdef on_goaway(self, object reader, object last_sid, object ev)


@cython.final
cdef class FrameReader:
    cdef public Owner session  # the owner (see the module docstring)
    cdef public int direction
    cdef public HpackTable hpack
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
    cdef public MessageCounter msgs
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

    @cython.locals(ftype=int, session=object, body=list, raw=bytes, short=cython.bint,
                   frag=bytes, block=list)
    cdef _frame_end(self, object ev)

    @cython.locals(flags=int, skip=Py_ssize_t)
    cdef bytes _fragment(self, int ftype, bytes raw, bint short)

    @cython.locals(fields=dict, lost=cython.bint)
    cdef _block_done(self, Py_ssize_t sid, bytes block, int flags, object first, object last,
                     bint short, bint push)

    @cython.locals(session=object)
    cdef _lose(self, Py_ssize_t nbytes)
