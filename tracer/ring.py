"""The consumer side of a BPF ring buffer, read through mmap: no libbpf call
and no syscall per record. On the per-event path (compiled, see tracer/core.py).

consume_events() is the agent's ingest loop: each record is decoded in place
(tracer.events.decode_at) and the event handed to one callable, with no
Python-level call in between when compiled. consume() hands the raw records
to a callback instead, for the other rings (TLS execs, funcs, inject).
"""

from __future__ import annotations

import mmap
import os
import select
import signal
import struct
from collections.abc import Callable

import cython

from tracer.events import DecodeError, decode_at

# from the kernel uapi (stable ABI)
BPF_RINGBUF_BUSY_BIT = 1 << 31
BPF_RINGBUF_DISCARD_BIT = 1 << 30
BPF_RINGBUF_HDR_SZ = 8

_BUSY = cython.declare(cython.uint, BPF_RINGBUF_BUSY_BIT)
_DISCARD = cython.declare(cython.uint, BPF_RINGBUF_DISCARD_BIT)
_HDR = cython.declare(cython.Py_ssize_t, BPF_RINGBUF_HDR_SZ)
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


# Positions and record headers are shared with the producer: compiled, they
# are read with acquire and written with release semantics, as libbpf does
# (plain loads and stores on x86). `p` is the start of a mapped area: a
# pointer when compiled, the buffer object itself when pure.

def _load64(p, off: cython.Py_ssize_t) -> cython.ulonglong:
    if cython.compiled:
        return _ring_load64_acquire(p + off)  # noqa: F821 (C, in ring.pxd)
    else:
        return _U64.unpack_from(p, off)[0]


def _load32(p, off: cython.Py_ssize_t) -> cython.uint:
    if cython.compiled:
        return _ring_load32_acquire(p + off)  # noqa: F821 (C, in ring.pxd)
    else:
        return _U32.unpack_from(p, off)[0]


def _store64(p, off: cython.Py_ssize_t, v: cython.ulonglong) -> None:
    if cython.compiled:
        _ring_store64_release(p + off, v)  # noqa: F821 (C, in ring.pxd)
    else:
        _U64.pack_into(p, off, v)


def _copy(p, off: cython.Py_ssize_t, n: cython.Py_ssize_t) -> bytes:
    if cython.compiled:
        return cython.cast(cython.p_char, p)[off:off + n]
    else:
        return bytes(p[off:off + n])


class RingBuffer:
    """Consumer side of a BPF_MAP_TYPE_RINGBUF, mapped into this process.

    Layout (kernel/bpf/ringbuf.c): page 0 holds consumer_pos (read-write),
    page 1 producer_pos, then the data area, which the kernel offers mapped
    twice in a row so that a record that wraps reads linearly. We map it once:
    every page of the mapping counts in our RSS (8 MB for the default ring),
    and the rare record that wraps is copied into one piece instead.
    """

    def __init__(self, fd: int, size: int):
        page = mmap.PAGESIZE
        # OSError on failure: the loader turns it into a MapError
        cons = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            prod = mmap.mmap(fd, page + size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        except OSError:
            cons.close()
            raise
        self._attach(fd, size, page, cons, prod, True)
        self._epoll = select.epoll()
        self._epoll.register(fd, select.EPOLLIN)

    @classmethod
    def over(cls, consumer, producer, size: int, page: int = mmap.PAGESIZE) -> RingBuffer:
        """A reader of memory laid out as the kernel maps it, owned by the
        caller (tests build rings in bytearrays): `consumer` is writable and
        holds consumer_pos at 0; `producer` holds producer_pos at 0 and the
        data area (`size` bytes, a power of two) from `page` on."""
        if size <= 0 or size & (size - 1) or len(producer) < page + size or len(consumer) < 8:
            raise ValueError("a ring needs a power-of-two data area and both positions")
        rb = cls.__new__(cls)
        rb._attach(-1, size, page, consumer, producer, False)
        return rb

    def _attach(self, fd: int, size: int, page: int, cons, prod, owned: bool) -> None:
        self.fd = fd
        self._owned = owned  # mappings of our own, closed with the reader
        self._epoll = None
        self._wake_r = self._wake_w = -1  # wake_on_signals' pipe
        self.size = size
        self.mask = size - 1
        self._page = page
        self._cons = cons
        self._prod = prod
        self.data = memoryview(prod)  # records at page + (pos & mask)
        self._cv = cons
        self._pv = prod
        if cython.compiled:
            self._cp = cython.address(self._cv[0])
            self._pp = cython.address(self._pv[0])
        else:
            self._cp = cons
            self._pp = prod
        self.records = 0
        self.bytes = 0
        self.wrapped = 0  # records copied because they wrapped around the end

    def poll(self, timeout_ms: int) -> bool:
        """Wait until data is available, a signal arrives (wake_on_signals)
        or the timeout passes (no consumption)."""
        if self.available():
            return True
        if self._epoll is None:
            return False
        try:
            ready = self._epoll.poll(timeout_ms / 1000.0)
        except InterruptedError:
            return False
        if self._wake_r >= 0 and ready:
            try:
                os.read(self._wake_r, 512)  # the signal numbers: the handler ran already
            except BlockingIOError:
                pass
        return bool(self.available())

    def wake_on_signals(self) -> bool:
        """Make a signal end poll() at once (signal.set_wakeup_fd on a pipe
        the epoll watches), so that a long poll timeout does not delay a stop.
        Only from the main thread, and only if nobody set a wakeup fd yet;
        False when not. close() puts the previous state back."""
        if self._epoll is None or self._wake_r >= 0:
            return False
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            old = signal.set_wakeup_fd(w)
        except ValueError:  # not the main thread
            old = None
        if old is None or old != -1:
            if old is not None:
                signal.set_wakeup_fd(old)
            os.close(r)
            os.close(w)
            return False
        self._epoll.register(r, select.EPOLLIN)
        self._wake_r, self._wake_w = r, w
        return True

    def available(self) -> int:
        if self._pv is None:
            raise ValueError("ring buffer closed")
        return _load64(self._pp, 0) - _load64(self._cp, 0)

    def consume(self, handler: Callable[[memoryview, int, int], None], limit: int = 0) -> int:
        """Call handler(buf, offset, size) for each committed record, in order;
        the record memory is valid only during the call. Returns the count."""
        return self._drain(handler, None, limit, False)

    def consume_events(self, handle: Callable[[object], None], stats, limit: int = 0) -> int:
        """Decode each committed record (tracer.events) and call handle(event),
        in order; a record that matches no layout counts in stats.decode_errors.
        Returns the count of records, as consume() does."""
        return self._drain(handle, stats, limit, True)

    def _drain(self, fn, stats, limit: cython.Py_ssize_t, decoded: cython.bint) -> cython.Py_ssize_t:
        if self._pv is None:
            raise ValueError("ring buffer closed")
        pp = self._pp
        cp = self._cp
        base: cython.Py_ssize_t = self._page
        mask: cython.ulonglong = self.mask
        ring: cython.Py_ssize_t = self.size
        cons: cython.ulonglong = _load64(cp, 0)
        n: cython.Py_ssize_t = 0
        nbytes: cython.Py_ssize_t = 0
        busy: cython.bint = False
        try:
            while not busy:
                prod: cython.ulonglong = _load64(pp, 0)
                if cons >= prod:
                    break
                while cons < prod:
                    length: cython.uint = _load32(pp, base + (cons & mask))
                    if length & _BUSY:
                        busy = True  # not committed yet: resume from here next time
                        break
                    size: cython.Py_ssize_t = length & ~(_BUSY | _DISCARD)
                    if not length & _DISCARD:
                        # the 8-byte header never wraps (8-aligned, ring a page multiple)
                        start: cython.Py_ssize_t = (cons + _HDR) & mask
                        whole: cython.bint = start + size <= ring
                        if not whole:
                            head = ring - start
                            rec = _copy(pp, base + start, head) + _copy(pp, base, size - head)
                            self.wrapped += 1
                        if not decoded:
                            if whole:
                                fn(self.data, base + start, size)
                            else:
                                fn(rec, 0, size)
                        else:
                            try:
                                if whole:
                                    ev = decode_at(self._pv, base + start, size)
                                else:
                                    ev = decode_at(rec, 0, size)
                            except DecodeError:
                                stats.decode_errors += 1
                            else:
                                fn(ev)
                        n += 1
                        nbytes += size
                    cons += (size + _HDR + 7) & ~7
                    _store64(cp, 0, cons)  # release the slot to the producer
                    if limit and n >= limit:
                        busy = True
                        break
        finally:
            self.records += n
            self.bytes += nbytes
        return n

    def close(self) -> None:
        if cython.compiled:
            self._cp = cython.NULL
            self._pp = cython.NULL
        else:
            self._cp = self._pp = None
        self._cv = None
        self._pv = None
        self.data.release()
        if self._wake_r >= 0:
            try:
                cur = signal.set_wakeup_fd(-1)
                if cur != self._wake_w:
                    signal.set_wakeup_fd(cur)  # someone set theirs since: keep it
            except ValueError:
                pass  # closed from another thread: the process is going away
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1
        if self._epoll is not None:
            self._epoll.close()
        if self._owned:
            self._prod.close()
            self._cons.close()
