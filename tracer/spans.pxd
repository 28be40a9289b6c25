# Types for the compiled span model (Cython pure-Python mode, see tracer/core.py).
# Fields stay Python objects: they are copied from events and connections
# and read back as objects, so C types would only add conversions.

cimport cython
from tracer.connstate cimport Conn
from tracer.events cimport DataEvent
from tracer.protocols.http1 cimport Message
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.math cimport signbit
from libc.string cimport memcpy

# JSON text exactly as orjson writes it (tests/unit/test_span_json.py pins the
# two together): the string escapes and integers of Span.write_json.
cdef extern from *:
    """
    static const char _spans_hex[] = "0123456789abcdef";
    /* The escaped body of a JSON string from UTF-8 s[0:n]: dst has room for
     * 6 * n bytes. orjson escapes the quote, the backslash and the C0 controls,
     * nothing else. */
    static inline Py_ssize_t _spans_json_escape(char *dst, const char *s, Py_ssize_t n) {
        /* by code, to keep backslashes out of this literal: 34 '"', 92 backslash */
        static const char short_esc[32] = {
            0, 0, 0, 0, 0, 0, 0, 0, 'b', 't', 'n', 0, 'f', 'r', 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
        const unsigned long long ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
        char *d = dst;
        Py_ssize_t i = 0;
        while (i < n) {
            /* eight bytes at a time while none is below 0x20, a quote or a backslash */
            while (i + 8 <= n) {
                unsigned long long w, q, b;
                memcpy(&w, s + i, 8);
                q = w ^ (ones * 34);
                b = w ^ (ones * 92);
                if (((w - ones * 0x20) & ~w & highs) | ((q - ones) & ~q & highs)
                        | ((b - ones) & ~b & highs))
                    break;
                memcpy(d, &w, 8);
                d += 8;
                i += 8;
            }
            if (i >= n)
                break;
            unsigned char c = (unsigned char)s[i++];
            if (c >= 0x20 && c != 34 && c != 92) { *d++ = (char)c; continue; }
            *d++ = 92;
            if (c >= 0x20) { *d++ = (char)c; continue; }
            if (short_esc[c]) { *d++ = short_esc[c]; continue; }
            *d++ = 'u'; *d++ = '0'; *d++ = '0';
            *d++ = _spans_hex[c >> 4]; *d++ = _spans_hex[c & 15];
        }
        return d - dst;
    }
    /* Decimal digits of v (at most 20 bytes). */
    static const char _spans_digits2[201] =
        "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
        "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
        "8081828384858687888990919293949596979899";
    /* v in decimal at dst, its length returned: the length first, then two
     * digits per division written from the end */
    static inline Py_ssize_t _spans_json_u64(char *dst, unsigned long long v) {
        Py_ssize_t n = 1;
        for (unsigned long long t = v; t >= 10; t /= 10) n++;
        char *d = dst + n;
        while (v >= 100) {
            unsigned int r = (unsigned int)(v % 100);
            v /= 100;
            d -= 2;
            memcpy(d, _spans_digits2 + 2 * r, 2);
        }
        if (v >= 10) {
            d -= 2;
            memcpy(d, _spans_digits2 + 2 * v, 2);
        } else {
            *--d = (char)('0' + v);
        }
        return n;
    }
    """
    Py_ssize_t _spans_json_escape(char *dst, const char *s, Py_ssize_t n) noexcept nogil
    Py_ssize_t _spans_json_u64(char *dst, unsigned long long v) noexcept nogil

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object v, int *overflow) except? -1

cdef object SCHEMA
cdef object _ROLE_SERVER
cdef dict _HOSTS
cdef frozenset _STANDARD_ATTRS
cdef Py_ssize_t _HOSTS_MAX


@cython.final
cdef class Span:
    cdef public object trace_id, span_id, parent_span_id, kind, protocol
    cdef public object method, path, query, status, version
    cdef public object start_ktime, end_ktime, clock_offset_ns
    cdef public object pid, tid, comm, netns, cgroup_id
    cdef public object local_addr, local_port, peer_addr, peer_port, tls
    cdef public object correlation_source, correlation_confidence
    cdef public dict request_headers
    cdef public object conn_id
    cdef public object req_first_enter, req_first_exit, req_last_exit
    cdef public object resp_first_enter, resp_first_exit, resp_last_enter, resp_last_exit
    cdef public object resp_tid
    cdef public dict attributes_extra
    cdef public object stack_id, stack

    @cython.locals(host=object, hp=tuple, host_name=object, host_port=object)
    cdef tuple _endpoints(self)
    @cython.locals(hdrs=dict, a=dict, srv_addr=object, srv_port=object, client=object, ua=object,
                   rid=object)
    cpdef dict attributes(self)
    @cython.locals(d=dict, dur=object)
    cpdef dict to_dict(self)
    @cython.locals(p=cython.p_char, cap=Py_ssize_t, dur=object)
    cpdef Py_ssize_t write_json(self, bytearray buf, Py_ssize_t pos) except -3
    @cython.locals(extra=dict, hdrs=dict, srv_addr=object, srv_port=object, client=object,
                   ua=object, rid=object)
    cdef Py_ssize_t _attributes_json(self, char *p, Py_ssize_t cap, Py_ssize_t pos) except -3


@cython.locals(n=Py_ssize_t)
cdef Py_ssize_t _jraw(char *p, Py_ssize_t cap, Py_ssize_t pos, bytes raw) except -3
@cython.locals(u=cython.p_const_char, n=Py_ssize_t)
cdef Py_ssize_t _jstr(char *p, Py_ssize_t cap, Py_ssize_t pos, str v) except -3
@cython.locals(u=cython.ulonglong, ll=cython.longlong, over=int, r=str, n=Py_ssize_t,
               i=Py_ssize_t, c=Py_UCS4, first=bint, d=dict)
cdef Py_ssize_t _jval(char *p, Py_ssize_t cap, Py_ssize_t pos, object v, int depth) except -3


@cython.locals(end=Py_ssize_t, name=str, rest=str, port=str)
cpdef tuple _split_host(str host)

@cython.locals(s=Span)
cpdef Span exchange_span(Conn conn, bint server, DataEvent first, DataEvent req_last,
                         DataEvent rfirst, DataEvent last, clock_offset_ns)

@cython.locals(s=Span)
@cython.locals(first=DataEvent)
cpdef Span http1_span(Conn conn, Message req, Message resp, clock_offset_ns)
