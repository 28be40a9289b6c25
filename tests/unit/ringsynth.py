"""The producer side of a BPF ring buffer, in bytearrays laid out as the
kernel maps them: synthetic rings for tracer.ring.RingBuffer.over (no root)."""

from __future__ import annotations

import struct

from tracer.ring import (
    BPF_RINGBUF_BUSY_BIT,
    BPF_RINGBUF_DISCARD_BIT,
    BPF_RINGBUF_HDR_SZ,
    RingBuffer,
)

PAGE = 4096


class SynthRing:
    """Records written as bpf_ringbuf_reserve/submit do: an 8-byte header
    (length, busy and discard bits), the record, padding to 8 bytes; the
    data area is mapped once, so a record may run past its end and wrap."""

    def __init__(self, size: int = 1 << 16, start: int = 0) -> None:
        assert size & (size - 1) == 0 and size % 8 == 0 and start % 8 == 0
        self.size = size
        self.consumer = bytearray(PAGE)
        self.producer = bytearray(PAGE + size)
        self.prod = start
        struct.pack_into("<Q", self.consumer, 0, start)
        struct.pack_into("<Q", self.producer, 0, start)

    @property
    def consumer_pos(self) -> int:
        return struct.unpack_from("<Q", self.consumer, 0)[0]

    def push(self, rec: bytes, *, busy: bool = False, discard: bool = False) -> int:
        """Append a record (committed unless busy); its position."""
        pos = self.prod
        end = pos + ((len(rec) + BPF_RINGBUF_HDR_SZ + 7) & ~7)
        assert end - self.consumer_pos <= self.size, "ring full"
        flags = (BPF_RINGBUF_BUSY_BIT if busy else 0) | (BPF_RINGBUF_DISCARD_BIT if discard else 0)
        mask = self.size - 1
        struct.pack_into("<II", self.producer, PAGE + (pos & mask), len(rec) | flags, 0)
        start = (pos + BPF_RINGBUF_HDR_SZ) & mask
        head = min(len(rec), self.size - start)
        self.producer[PAGE + start:PAGE + start + head] = rec[:head]
        self.producer[PAGE:PAGE + len(rec) - head] = rec[head:]  # what wrapped
        self.prod = end
        struct.pack_into("<Q", self.producer, 0, end)
        return pos

    def commit(self, pos: int) -> None:
        """Clear the busy bit of the record at pos."""
        off = PAGE + (pos & (self.size - 1))
        length = struct.unpack_from("<I", self.producer, off)[0]
        struct.pack_into("<I", self.producer, off, length & ~BPF_RINGBUF_BUSY_BIT)

    def reader(self) -> RingBuffer:
        return RingBuffer.over(self.consumer, self.producer, self.size, PAGE)


def ring_of(records: list[bytes]) -> SynthRing:
    """All the records in one ring, big enough to hold them."""
    total = sum((len(r) + BPF_RINGBUF_HDR_SZ + 7) & ~7 for r in records)
    size = PAGE
    while size < total:
        size *= 2
    ring = SynthRing(size)
    for r in records:
        ring.push(r)
    return ring
