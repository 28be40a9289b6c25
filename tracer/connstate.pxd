# Compiled form of tracer/connstate.py (Cython pure-Python mode, see tracer/core.py).
cimport cython
from tracer.stats cimport Stats


cdef class Conn:
    cdef public object conn_id, role, proto, last_ts, pid, comm, netns, cgroup_id
    cdef public object laddr, lport, raddr, rport, fresh, tls
    cdef public object table

    @cython.locals(stats=Stats)
    cpdef give_up(self, bint counted)


cdef class _Ignored:
    pass


cdef class _Unparsed:
    cdef public Stats stats
