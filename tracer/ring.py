"""The consumer side of a BPF ring buffer, read through mmap: no libbpf call
and no syscall per record. On the per-event path (compiled, see tracer/core.py).
"""

from __future__ import annotations

import mmap
import select
import struct
from collections.abc import Callable

# from the kernel uapi (stable ABI)
BPF_RINGBUF_BUSY_BIT = 1 << 31
BPF_RINGBUF_DISCARD_BIT = 1 << 30
BPF_RINGBUF_HDR_SZ = 8


class RingBuffer:
    """Consumer side of a BPF_MAP_TYPE_RINGBUF, mapped into this process.

    Layout (kernel/bpf/ringbuf.c): page 0 holds consumer_pos (read-write),
    page 1 producer_pos, then the data area, which the kernel offers mapped
    twice in a row so that a record that wraps reads linearly. We map it once:
    every page of the mapping counts in our RSS (8 MB for the default ring),
    and the rare record that wraps is copied into one piece instead.
    """

    def __init__(self, fd: int, size: int):
        self.fd = fd
        self.size = size
        self.mask = size - 1
        page = mmap.PAGESIZE
        self._page = page
        # OSError on failure: the loader turns it into a MapError
        self._cons = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._prod = mmap.mmap(fd, page + size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self.data = memoryview(self._prod)  # records at page + (pos & mask)
        self._epoll = select.epoll()
        self._epoll.register(fd, select.EPOLLIN)
        self.records = 0
        self.bytes = 0
        self.wrapped = 0  # records copied because they wrapped around the end

    def poll(self, timeout_ms: int) -> bool:
        """Wait until data is available or the timeout passes (no consumption)."""
        if self.available():
            return True
        try:
            return bool(self._epoll.poll(timeout_ms / 1000.0))
        except InterruptedError:
            return False

    def available(self) -> int:
        cons = struct.unpack_from("<Q", self._cons, 0)[0]
        prod = struct.unpack_from("<Q", self._prod, 0)[0]
        return prod - cons

    def consume(self, handler: Callable[[memoryview, int, int], None], limit: int = 0) -> int:
        """Call handler(buf, offset, size) for each committed record, in order;
        the record memory is valid only during the call. Returns the count."""
        unpack = struct.unpack_from
        cons_mm, prod_mm, data = self._cons, self._prod, self.data
        base, mask, ring = self._page, self.mask, self.size
        cons = unpack("<Q", cons_mm, 0)[0]
        n = 0
        nbytes = 0
        busy = False
        while not busy:
            prod = unpack("<Q", prod_mm, 0)[0]
            if cons >= prod:
                break
            while cons < prod:
                off = base + (cons & mask)
                length = unpack("<I", data, off)[0]
                if length & BPF_RINGBUF_BUSY_BIT:
                    busy = True  # not committed yet: resume from here next time
                    break
                size = length & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT)
                if not length & BPF_RINGBUF_DISCARD_BIT:
                    # the 8-byte header never wraps (8-aligned, ring a page multiple)
                    start = (cons + BPF_RINGBUF_HDR_SZ) & mask
                    if start + size <= ring:
                        handler(data, base + start, size)
                    else:
                        head = ring - start
                        handler(bytes(data[base + start:base + ring])
                                + bytes(data[base:base + size - head]), 0, size)
                        self.wrapped += 1
                    n += 1
                    nbytes += size
                cons += (size + BPF_RINGBUF_HDR_SZ + 7) & ~7
                # release the slot to the producer (x86 stores are ordered)
                struct.pack_into("<Q", cons_mm, 0, cons)
                if limit and n >= limit:
                    busy = True
                    break
        self.records += n
        self.bytes += nbytes
        return n

    def close(self) -> None:
        self.data.release()
        self._epoll.close()
        self._prod.close()
        self._cons.close()
