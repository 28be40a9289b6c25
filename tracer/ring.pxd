# Compiled form of tracer/ring.py (Cython pure-Python mode).
from tracer.events cimport decode_at

cdef extern from *:
    """
    static inline unsigned long long _ring_load64_acquire(const unsigned char *p) {
        return __atomic_load_n((const unsigned long long *)p, __ATOMIC_ACQUIRE);
    }
    static inline unsigned int _ring_load32_acquire(const unsigned char *p) {
        return __atomic_load_n((const unsigned int *)p, __ATOMIC_ACQUIRE);
    }
    static inline void _ring_store64_release(unsigned char *p, unsigned long long v) {
        __atomic_store_n((unsigned long long *)p, v, __ATOMIC_RELEASE);
    }
    """
    unsigned long long _ring_load64_acquire(const unsigned char *p) noexcept nogil
    unsigned int _ring_load32_acquire(const unsigned char *p) noexcept nogil
    void _ring_store64_release(unsigned char *p, unsigned long long v) noexcept nogil

cdef unsigned int _BUSY, _DISCARD
cdef Py_ssize_t _HDR

cdef unsigned long long _load64(const unsigned char *p, Py_ssize_t off) noexcept
cdef unsigned int _load32(const unsigned char *p, Py_ssize_t off) noexcept
cdef void _store64(unsigned char *p, Py_ssize_t off, unsigned long long v) noexcept
cdef bytes _copy(const unsigned char *p, Py_ssize_t off, Py_ssize_t n)


cdef class RingBuffer:
    cdef public object fd, data
    cdef public Py_ssize_t size, mask, records, bytes, wrapped
    cdef Py_ssize_t _page
    cdef bint _owned
    cdef int _wake_r, _wake_w
    cdef object _epoll, _cons, _prod
    cdef unsigned char[::1] _cv
    cdef const unsigned char[::1] _pv
    cdef unsigned char *_cp
    cdef const unsigned char *_pp

    cdef Py_ssize_t _drain(self, fn, stats, Py_ssize_t limit, bint decoded) except -1
