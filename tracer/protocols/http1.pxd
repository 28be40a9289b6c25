# Types for the compiled parser (Cython pure-Python mode, see tracer/core.py).
# The directives are on the first line of http1.py.

cimport cython
from tracer.events cimport DataEvent
from libc.string cimport memchr

cdef int _HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _TRAILER, _LOST, _DEAD
cdef long long _MAX_LENGTH
cdef dict _METHODS, _SELECT, _METHOD_INDEX
cdef tuple _NAMES, _METHOD_NAMES
cdef bytes _NAME_TABLE, _NAME_START, _NAME_NUM, _METHOD_TABLE, _METHOD_START, _METHOD_NUM
cdef Py_ssize_t _K_CONTENT_LENGTH, _K_TRANSFER_ENCODING, _K_CONNECTION
cdef bytes _CRLF, _HEAD_END, _LAST_CHUNK

cdef Py_ssize_t _find(bytes data, Py_ssize_t i, Py_ssize_t end, int ch) except? -2
cdef Py_ssize_t _rfind(bytes data, Py_ssize_t i, Py_ssize_t end, int ch) except? -2
@cython.locals(stop=Py_ssize_t, s=cython.p_char, p=cython.p_void, j=Py_ssize_t)
cdef Py_ssize_t _line_end(bytes data, Py_ssize_t i, Py_ssize_t end) except? -2
@cython.locals(stop=Py_ssize_t, s=cython.p_char, p=cython.p_void, j=Py_ssize_t)
cdef Py_ssize_t _head_end(bytes data, Py_ssize_t i, Py_ssize_t end) except? -2
@cython.locals(n=Py_ssize_t, k=Py_ssize_t)
cdef bint _startswith(bytes data, Py_ssize_t i, Py_ssize_t end, bytes prefix) except -1
@cython.locals(c=int)
cdef bint _upper_alpha(bytes data, Py_ssize_t i, Py_ssize_t end) except -1
@cython.locals(off=Py_ssize_t, stop=Py_ssize_t, j=Py_ssize_t, c=int)
cdef Py_ssize_t _match(bytes data, Py_ssize_t i, Py_ssize_t n, bytes table, bytes start,
                       bytes num) except? -2
@cython.locals(k=Py_ssize_t)
cdef str _method(bytes data, Py_ssize_t i, Py_ssize_t n)
@cython.locals(n=Py_ssize_t, last=Py_ssize_t, j=Py_ssize_t, c=int)
cdef bint _icontains(bytes data, Py_ssize_t i, Py_ssize_t end, bytes word) except -1
@cython.locals(start=Py_ssize_t)
cdef bint _iendswith(bytes data, Py_ssize_t i, Py_ssize_t end, bytes word) except -1
@cython.locals(n=cython.longlong, d=int)
cdef long long _digits(bytes data, Py_ssize_t i, Py_ssize_t end) except? -2
cdef str _version(bytes data, Py_ssize_t i, Py_ssize_t end)
cdef bint _is_digits(str s) except -1


cdef class Message:
    cdef public bint is_request
    cdef public object method, path, query, target, version
    cdef public int status
    cdef dict _headers
    cdef bytes _raw
    cdef unsigned int _seen
    cdef Py_ssize_t _vs[14]
    cdef Py_ssize_t _ve[14]
    cdef public long long content_length
    cdef public bint chunked, close, truncated
    cdef public object first_ev, last_ev, ctx

    cdef int _init(self, bint is_request, first_ev) except -1
    @cython.locals(h=dict, k=Py_ssize_t)
    cpdef dict _headers_dict(self)
    cdef str _value(self, Py_ssize_t k)


cdef class Listener:
    cpdef on_head(self, parser, Message msg)
    cpdef on_end(self, parser, Message msg)
    cpdef on_malformed(self, parser, nbytes)
    cpdef request_method(self)


cdef class Http1Parser:
    cdef public bint is_request
    cdef public Listener listener
    cdef public object stats
    cdef public int state
    cdef public bytes buf
    cdef public object buf_ev
    cdef public Message cur
    cdef public long long remaining
    cdef public bint soft

    @cython.locals(state=int, data=bytes, size=Py_ssize_t, cap=Py_ssize_t, pos=Py_ssize_t,
                   rem=cython.longlong, avail=cython.longlong, cur=Message, nl=Py_ssize_t,
                   semi=Py_ssize_t, end=Py_ssize_t)
    cpdef feed(self, DataEvent ev)
    @cython.locals(cur=Message)
    cdef int _end_cur(self) except -1
    @cython.locals(end=Py_ssize_t, msg=Message, status=int, listener=Listener, method=object)
    cdef Py_ssize_t _head(self, ev, bytes data, Py_ssize_t pos, Py_ssize_t cap,
                          Py_ssize_t size) except -1
    @cython.locals(le=Py_ssize_t, msg=Message, sp=Py_ssize_t, sp2=Py_ssize_t, ts=Py_ssize_t,
                   te=Py_ssize_t, slashes=Py_ssize_t, slash=Py_ssize_t, q=Py_ssize_t,
                   target=str, d0=int, d1=int, d2=int, seen=cython.uint, i=Py_ssize_t, e=Py_ssize_t,
                   c=Py_ssize_t, k=Py_ssize_t, vs=Py_ssize_t, ve=Py_ssize_t,
                   cl_s=Py_ssize_t, cl_e=Py_ssize_t, te_s=Py_ssize_t, te_e=Py_ssize_t,
                   co_s=Py_ssize_t, co_e=Py_ssize_t, n=cython.longlong)
    cdef Message _parse_head(self, bytes data, Py_ssize_t pos, Py_ssize_t end, object ev,
                             bint truncated)
    @cython.locals(n=Py_ssize_t, sp=Py_ssize_t)
    cdef bint _plausible(self, bytes data, Py_ssize_t pos, Py_ssize_t cap) except -1
    cdef int _lose_framing(self, ev) except -1
    @cython.locals(data=bytes, soft=bint, cur=Message)
    cdef bint _resync(self, DataEvent ev) except -1
    @cython.locals(cur=Message)
    cpdef bint finish_lost(self) except -1
    cdef int _malformed(self, Py_ssize_t nbytes) except -1
    cpdef stop(self)
