# Types for the compiled trace context (Cython pure-Python mode, see tracer/core.py).

cimport cython
from cpython.unicode cimport PyUnicode_1BYTE_DATA, PyUnicode_1BYTE_KIND, PyUnicode_KIND

cdef str _HEX_DIGITS, _ZERO_TRACE, _ZERO_SPAN, _HEX_OR_DASH

@cython.locals(lo=cython.ulonglong, hi=cython.ulonglong)
cpdef str new_trace_id()
@cython.locals(n=cython.ulonglong)
cpdef str new_span_id()
@cython.locals(v=str, n=Py_ssize_t, i=Py_ssize_t, head=str, trace_id=str, parent=str, c=Py_UCS4,
               p=cython.p_uchar, b=cython.uchar)
cpdef tuple traceparent_ids(value)
@cython.locals(ids=tuple)
cpdef tuple parse_traceparent(value)
@cython.locals(ids=tuple)
cpdef object header_sampled(headers)
