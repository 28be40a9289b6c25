# cython: annotation_typing=False
"""HPACK decoding that stays exact when the dynamic table state is unknown.

One HpackTable per connection direction (RFC 7541: each direction has its own
encoder/decoder pair). hpack's own Decoder needs the whole table and a whole
header block; we join connections late and lose bytes in capture gaps, so this
walks the representations itself, with hpack's Huffman decoder, integer
decoder and static table.

Why lookups stay exact without knowing the table: the dynamic table is FIFO,
and an encoder only references entries it still holds. Index 62+j is always
the (j+1)-th newest entry present, and every entry newer than the oldest one
present is present too. So if we saw the last k insertions, index 62+j for
j < k is exactly our j-th newest insertion, whatever came before we started
(or whatever a "too large" insertion or size update evicted). An index we
cannot resolve is *unknown*: the block is marked lost, nothing is guessed.
A missed insertion (a header block lost in a gap, or cut by the capture)
breaks that chain, so the table is reset to "k = 0, state unknown".

Eviction here is only a memory bound: entry sizes are kept as lower bounds
(an entry whose name or value is unknown counts its known part + 32), so we
never evict an entry the encoder could still reference.
"""

from __future__ import annotations

import cython
from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import (
    HUFFMAN_COMPLETE,
    HUFFMAN_EMIT_SYMBOL,
    HUFFMAN_FAIL,
    HUFFMAN_TABLE,
    decode_huffman,
)
from hpack.table import HeaderTable

_STATIC = HeaderTable.STATIC_TABLE  # index i (1..61) -> _STATIC[i - 1]
_NSTATIC = len(_STATIC)
DEFAULT_TABLE_SIZE = 4096  # SETTINGS_HEADER_TABLE_SIZE initial value (RFC 9113 6.5.2)
UNKNOWN_TABLE_LIMIT = 65536  # memory bound while the real maximum is unknown
# Continuation octets of an integer past which it is a decoding error: as
# hpack's decoder (its VARINT_MAX_LENGTH), so values stay within 64 bits.
_INT_MAX_EXTRA = 5
_LIMIT = UNKNOWN_TABLE_LIMIT  # a C constant in the compiled module


# hpack's Huffman state machine (nibble at a time), packed for the compiled
# loop: state, flags, symbol per entry. Pure Python uses hpack's decoder.
_HUFF = bytes(x for entry in HUFFMAN_TABLE for x in entry)
_HUFF_BUF = 256  # longest string decoded on the C stack; longer ones by hpack


def _huffman(raw: bytes) -> bytes:
    """hpack's decode_huffman, compiled: the same bytes, the same errors."""
    n = len(raw)
    if not cython.compiled or n * 2 > _HUFF_BUF:
        return decode_huffman(raw)
    out = cython.declare(cython.uchar[256])
    k = _hp_huffman(_HUFF, raw, n, out, HUFFMAN_EMIT_SYMBOL, HUFFMAN_FAIL,  # noqa: F821 (C)
                    HUFFMAN_COMPLETE)
    if k == -1:
        raise HPACKDecodingError("Invalid Huffman string")
    if k == -2:
        raise HPACKDecodingError("Incomplete Huffman string")
    return out[:k]


class Truncated(Exception):
    """The block ended inside a representation (cut by the capture)."""


def _int(data: bytes, pos: int, bits: int) -> tuple[int, int]:
    """An HPACK integer (RFC 7541 5.1) with a `bits`-bit prefix at pos ->
    (value, next pos)."""
    mask = (1 << bits) - 1
    v = data[pos] & mask
    pos += 1
    if v < mask:
        return v, pos
    end = len(data)
    shift = 0
    for _ in range(_INT_MAX_EXTRA):
        if pos >= end:
            raise Truncated
        b = data[pos]
        pos += 1
        v += (b & 0x7F) << shift
        if b < 0x80:
            return v, pos
        shift += 7
    raise Truncated  # longer than any integer an encoder needs


def _string(block: bytes, pos: int, want: bool) -> tuple[bytes | None, int]:
    """A string literal at pos -> (bytes or None if not wanted, next pos)."""
    if pos >= len(block):
        raise Truncated
    huff = block[pos] & 0x80
    length, pos = _int(block, pos, 7)
    end = pos + length
    if end > len(block):
        raise Truncated
    if not want:
        return None, end
    raw = block[pos:end]
    if huff:
        try:
            raw = _huffman(raw)
        except HPACKDecodingError as e:
            raise Truncated from e
    return raw, end


def _entry_size(name: bytes | None, value: bytes | None) -> int:
    return 32 + (len(name) if name is not None else 0) + (len(value) if value is not None else 0)


class HpackTable:
    """The decoder side of one direction's dynamic table."""

    __slots__ = ("entries", "size", "max_size", "known")

    def __init__(self, known: bool = True) -> None:
        # newest last: index 62 + j is entries[-1 - j]; (name, value), either
        # may be None when it came from an entry we could not resolve
        self.entries: list[tuple[bytes | None, bytes | None]] = []
        self.size = 0  # lower bound of the octets held (RFC 7541 4.1 sizes)
        self.max_size = DEFAULT_TABLE_SIZE if known else UNKNOWN_TABLE_LIMIT
        self.known = known  # False: entries older than the ones we saw may exist

    def reset(self) -> None:
        """Insertions were missed: from now on only what we see is known."""
        self.entries = []
        self.size = 0
        self.max_size = UNKNOWN_TABLE_LIMIT
        self.known = False

    def _insert(self, name: bytes | None, value: bytes | None) -> None:
        self.entries.append((name, value))
        self.size += _entry_size(name, value)
        if self.size > self.max_size:
            self._trim()

    def _lookup(self, idx: int) -> tuple[bytes | None, bytes | None]:
        if idx <= _NSTATIC:
            if idx <= 0:
                raise Truncated  # index 0 is a decoding error: treat the rest as lost
            return _STATIC[idx - 1]
        j = idx - _NSTATIC - 1
        entries = self.entries
        if j < len(entries):
            return entries[len(entries) - 1 - j]
        return None, None

    def decode(self, block: bytes, select: dict[bytes, str], out: dict[str, str],
               complete: bool = True) -> bool:
        """Decode a header block, keeping the fields named in `select` (wire
        name -> key) in `out`. Returns True if anything was lost: a field we
        could not resolve, or (complete=False) the block was cut. A cut block
        resets the table, since its later insertions are missed."""
        lost = False
        pos = 0
        n = len(block)
        try:
            while pos < n:
                b = block[pos]
                if b & 0x80:  # indexed field
                    idx, pos = _int(block, pos, 7)
                    name, value = self._lookup(idx)
                    if name is None or value is None:
                        lost = True
                        continue
                    key = select.get(name)
                    if key is not None:
                        out[key] = value.decode("latin-1")
                    continue
                if b & 0x40:  # literal with incremental indexing
                    bits = 6
                    index = True
                elif b & 0x20:  # dynamic table size update
                    size, pos = _int(block, pos, 5)
                    # capped: beyond it only memory is at stake (an entry we
                    # evicted reads as unknown, never wrong); found by fuzzing
                    self.max_size = size if size < _LIMIT else _LIMIT
                    if not size:
                        self.entries = []
                        self.size = 0
                    elif self.size > size:
                        self._trim()
                    continue
                else:  # literal without indexing / never indexed
                    bits = 4
                    index = False
                idx, pos = _int(block, pos, bits)
                if idx:
                    name = self._lookup(idx)[0]
                else:
                    name, pos = _string(block, pos, True)
                key = select.get(name) if name is not None else None
                if index:
                    value, pos = _string(block, pos, True)
                    self._insert(name, value)
                else:  # nobody refers to it later: decode only what we keep
                    value, pos = _string(block, pos, key is not None)
                if name is None:
                    lost = True
                elif key is not None:
                    out[key] = value.decode("latin-1")
        except Truncated:
            self.reset()
            return True
        if not complete:
            lost = True
            self.reset()
        return lost

    def _trim(self) -> None:
        # shrink to the new maximum (oldest first), as the encoder did
        entries = self.entries
        size = self.size
        drop = 0
        while size > self.max_size and drop < len(entries):
            n, v = entries[drop]
            size -= _entry_size(n, v)
            drop += 1
        del entries[:drop]
        self.size = size
