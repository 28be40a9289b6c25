# Types for the compiled span model (Cython pure-Python mode, see tracer/core.py).
# Fields stay Python objects: they are copied from events and connections
# and read back as objects, so C types would only add conversions.

cimport cython

cdef object SCHEMA
cdef object _ROLE_SERVER
cdef dict _HOSTS
cdef Py_ssize_t _HOSTS_MAX


@cython.final
cdef class Span:
    cdef public object trace_id, span_id, parent_span_id, kind, protocol
    cdef public object method, path, query, status, version
    cdef public object start_ktime, end_ktime, clock_offset_ns
    cdef public object pid, tid, comm, netns, cgroup_id
    cdef public object local_addr, local_port, peer_addr, peer_port, tls
    cdef public object correlation_source, correlation_confidence
    cdef public dict request_headers, response_headers
    cdef public object conn_id
    cdef public object req_first_enter, req_first_exit, req_last_exit
    cdef public object resp_first_enter, resp_first_exit, resp_last_enter, resp_last_exit
    cdef public object resp_tid
    cdef public dict attributes_extra
    cdef public object stack_id, stack

    @cython.locals(server=bint, hdrs=dict, host=object, hp=tuple, host_name=object, host_port=object,
                   a=dict, srv_addr=object, srv_port=object, client=object, ua=object, rid=object)
    cpdef dict attributes(self)
    @cython.locals(d=dict, dur=object)
    cpdef dict to_dict(self)


@cython.locals(end=Py_ssize_t, name=str, rest=str, port=str)
cpdef tuple _split_host(str host)

@cython.locals(s=Span)
cpdef Span exchange_span(conn, bint server, first, req_last, rfirst, last, clock_offset_ns)

@cython.locals(s=Span)
cpdef Span http1_span(conn, req, resp, clock_offset_ns)
