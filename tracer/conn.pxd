# Compiled form of tracer/conn.py (Cython pure-Python mode). Protocol slots
# (Conn.proto) stay plain objects: the HTTP/1 and HTTP/2 sessions live in
# other modules.
from tracer.events cimport CloseEvent, DataEvent, OpenEvent
from tracer.stats cimport Stats

cdef int ROLE_UNKNOWN, ROLE_SERVER, ROLE_CLIENT, INGRESS, EGRESS, SNIFF_LIMIT
cdef int _SYS_FIRST_TLS, _SETTINGS, _BPF_EXIST
cdef bytes H2_PREFACE

cdef class ConnectionTable


cdef class Conn:
    cdef public object conn_id, role, proto, last_ts, pid, comm, netns, cgroup_id
    cdef public object laddr, lport, raddr, rport, fresh, tls
    cdef public ConnectionTable table


cdef class _Ignored:
    pass


cdef class _Unparsed:
    cdef public Stats stats


cdef class _Sniffer:
    cdef public Conn conn
    cdef public Py_ssize_t seen
    cdef public list held


cdef class ConnectionTable:
    cdef public object sink, clock_offset_ns, capture_bytes, h2_factory, h2_capture
    cdef public Stats stats
    cdef public object correlator
    cdef public dict conns

    cdef Conn _add(self, object conn_id, object role)
