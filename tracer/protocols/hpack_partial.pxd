# Compiled form of tracer/protocols/hpack_partial.py (Cython pure-Python mode).
cimport cython

cdef extern from *:
    """
    /* hpack's Huffman state machine over its packed table (3 bytes per entry:
     * next state, flags, symbol): the symbols emitted into out (room for 2n),
     * -1 on a failing state, -2 when the input ends mid-symbol. An empty
     * input decodes to nothing, as in hpack. */
    static inline Py_ssize_t _hp_huffman(const unsigned char *table, const unsigned char *in,
                                  Py_ssize_t n, unsigned char *out, int emit, int fail,
                                  int complete) {
        unsigned int state = 0, flags = 0;
        Py_ssize_t k = 0;
        if (n == 0)
            return 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            const unsigned char *e = table + 3 * (state * 16 + (in[i] >> 4));
            state = e[0]; flags = e[1];
            if (flags & fail) return -1;
            if (flags & emit) out[k++] = e[2];
            e = table + 3 * (state * 16 + (in[i] & 15));
            state = e[0]; flags = e[1];
            if (flags & fail) return -1;
            if (flags & emit) out[k++] = e[2];
        }
        return (flags & complete) ? k : -2;
    }
    """
    Py_ssize_t _hp_huffman(const unsigned char *table, const unsigned char *inp, Py_ssize_t n,
                           unsigned char *out, int emit, int fail, int complete) noexcept nogil

cdef bytes _HUFF
cdef Py_ssize_t _HUFF_BUF

@cython.locals(n=Py_ssize_t, k=Py_ssize_t)
cpdef bytes _huffman(bytes raw)

cdef tuple _STATIC
cdef Py_ssize_t _NSTATIC, _LIMIT, _INT_MAX_EXTRA

# b is as wide as v: (b & 0x7F) << 28 overflowed a C int into a negative
# index (the pure path has no such limit; found by fuzzing the compiled core)
@cython.locals(mask=Py_ssize_t, v=Py_ssize_t, end=Py_ssize_t, shift=cython.int,
               b=Py_ssize_t, _=Py_ssize_t)
cdef (Py_ssize_t, Py_ssize_t) _int(bytes data, Py_ssize_t pos, int bits)

@cython.locals(huff=cython.bint, length=Py_ssize_t, end=Py_ssize_t, raw=bytes)
cdef tuple _string(bytes block, Py_ssize_t pos, bint want)

cdef Py_ssize_t _entry_size(object name, object value)


cdef class HpackTable:
    cdef public list entries
    cdef public Py_ssize_t size
    cdef public Py_ssize_t max_size
    cdef public bint known

    cpdef reset(self)
    cdef _insert(self, object name, object value)

    @cython.locals(j=Py_ssize_t)
    cdef tuple _lookup(self, Py_ssize_t idx)

    @cython.locals(lost=cython.bint, pos=Py_ssize_t, n=Py_ssize_t, b=cython.uchar,
                   idx=Py_ssize_t, bits=cython.int, index=cython.bint, size=Py_ssize_t,
                   value=bytes)
    cpdef bint decode(self, bytes block, dict select, dict out, bint complete=*)

    @cython.locals(entries=list, size=Py_ssize_t, drop=Py_ssize_t)
    cdef _trim(self)
