# Compiled form of tracer/events.py (Cython pure-Python mode): the event
# objects are extension types, decode_at reads a record in place.
cdef class OpenEvent:
    cdef public object conn_id, pid, tid, fd, role, ts, cgroup_id, netns, family
    cdef public object laddr, lport, raddr, rport, comm


cdef class DataEvent:
    cdef public object conn_id, pid, tid, fd, role, direction, syscall, ts_enter, ts_exit
    cdef public object size, payload, comm, stack


cdef class CloseEvent:
    cdef public object conn_id, pid, tid, fd, role, ts


cdef Py_ssize_t _HDR_SIZE, _PAYLOAD_OFFSET, _OPEN_SIZE
cdef int _EV_DATA, _EV_OPEN, _EV_CLOSE
cdef Py_ssize_t _O_DIR, _O_ROLE, _O_SYSCALL, _O_PID, _O_TID, _O_FD, _O_CONN_ID
cdef Py_ssize_t _O_TS_ENTER, _O_TS_EXIT, _O_BYTES, _O_CAPTURED, _O_STACK, _O_DCOMM, _COMM_LEN
cdef bytes _comm_raw
cdef str _comm_str


cdef unsigned int _le32(const unsigned char *p) noexcept
cdef unsigned long long _le64(const unsigned char *p) noexcept
cdef str _comm_at(const unsigned char *p)
cpdef object decode_at(const unsigned char[::1] view, Py_ssize_t offset, Py_ssize_t size)
