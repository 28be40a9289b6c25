# Compiled form of tracer/conn.py (Cython pure-Python mode). Protocol slots
# (Conn.proto) stay plain objects: the HTTP/1 and HTTP/2 sessions live in
# other modules.
from tracer.connstate cimport Conn
from tracer.correlate cimport Correlator
from tracer.events cimport CloseEvent, DataEvent, OpenEvent
from tracer.session_http1 cimport Http1Session
from tracer.session_http2 cimport Http2Session
from tracer.stats cimport Stats

cdef int ROLE_UNKNOWN, ROLE_SERVER, ROLE_CLIENT, INGRESS, EGRESS, SNIFF_LIMIT
cdef int _SYS_FIRST_TLS, _SETTINGS, _BPF_EXIST
cdef bytes H2_PREFACE

cdef class ConnectionTable


cdef class _Sniffer:
    cdef public Conn conn
    cdef public Py_ssize_t seen
    cdef public list held


cdef class ConnectionTable:
    cdef public object sink, clock_offset_ns, capture_bytes, h2_factory, h2_capture
    cdef public Stats stats
    cdef public Correlator correlator
    cdef public dict conns

    cdef int _set_open(self, Conn conn, OpenEvent ev) except -1
    cdef Conn _add(self, object conn_id, object role)
