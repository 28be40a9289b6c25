# Types for the compiled trace context (Cython pure-Python mode, see tracer/core.py).

cimport cython
from cpython.unicode cimport PyUnicode_1BYTE_DATA, PyUnicode_1BYTE_KIND, PyUnicode_KIND

cdef str _HEX_DIGITS, _ZERO_TRACE, _ZERO_SPAN, _HEX_OR_DASH

from cpython.unicode cimport PyUnicode_New

cdef extern from *:
    """
    /* v as 16 lowercase hex digits at p */
    static inline void _hex64(unsigned char *p, unsigned long long v) {
        static const char d[] = "0123456789abcdef";
        for (int i = 15; i >= 0; i--) { p[i] = (unsigned char)d[v & 15]; v >>= 4; }
    }
    /* the next splitmix64 output of state *s */
    static inline unsigned long long _splitmix64(unsigned long long *s) {
        unsigned long long z = (*s += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
    """
    void _hex64(unsigned char *p, unsigned long long v) noexcept nogil
    unsigned long long _splitmix64(unsigned long long *s) noexcept nogil

cdef unsigned long long _MASK64, _state
cdef bint _seeded

cpdef reseed()
cpdef _unseed()
@cython.locals(z=cython.ulonglong)
cdef unsigned long long _next64() except? 0
@cython.locals(s=str)
cpdef str span_id_of(unsigned long long n)
@cython.locals(s=str, p=cython.p_uchar)
cpdef str trace_id_of(unsigned long long hi, unsigned long long lo)
@cython.locals(hi=cython.ulonglong)
cpdef str new_trace_id()
cpdef str new_span_id()
@cython.locals(v=str, n=Py_ssize_t, i=Py_ssize_t, head=str, trace_id=str, parent=str, c=Py_UCS4,
               p=cython.p_uchar, b=cython.uchar)
cpdef tuple traceparent_ids(value)
@cython.locals(ids=tuple)
cpdef tuple parse_traceparent(value)
@cython.locals(ids=tuple)
cpdef object header_sampled(headers)
