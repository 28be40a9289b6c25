# cython: annotation_typing=False
"""HTTP/2 (h2c, and gRPC over it) frames from captured syscall byte streams.

Sans-IO: a FrameReader takes one direction's data events and reports what it
found to its owner (an `Owner`: tracer/session_http2.py's Http2Session, or a
test's recorder): decoded header blocks, DATA ends, RST_STREAM and
GOAWAY. It knows nothing of streams' pairing, spans or the correlator; each
direction has its own HPACK table.

The owner provides: `stats` (counters), `give_up()`, `msg_counter(reader,
sid)` (a gRPC message counter for a stream's DATA, or None),
`on_headers(reader, sid, fields, lost, end_stream, first, last)`,
`on_data_end(reader, sid, end_stream, ev)`, `on_rst(reader, sid, code, ev)`
and `on_goaway(reader, last_sid, ev)`.

Capture gaps (a syscall moved `size` bytes, only a prefix was copied) do not
break framing: frame lengths come from the 9-byte frame headers, and bytes
past the capture are skipped by count. What a gap can cost:
- a HEADERS/CONTINUATION/PUSH_PROMISE body: the block is decoded as far as it
  was captured, the span is marked as having lost headers, and the HPACK table
  of that direction becomes "unknown" (see hpack_partial);
- a frame header: framing is lost. The direction resyncs on the next syscall
  that starts with a plausible run of frames (writers emit whole frames, so
  this comes soon), with its HPACK table unknown; or the connection is given
  up after RESYNC_LIMIT syscalls. Counted in h2_framing_lost.

The frame layer is hyperframe's: frame classes, flag definitions, and body
parsing of the rare frames; DATA (the hot case) and the 9-byte header are
handled inline, since their bodies are usually only partly captured.
"""

from __future__ import annotations

import cython
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import (
    FRAMES,
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from tracer.events import DataEvent
from tracer.protocols.hpack_partial import HpackTable

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_PREFACE_LEN = len(PREFACE)

_DATA = DataFrame.type
_HEADERS = HeadersFrame.type
_PRIORITY = PriorityFrame.type
_RST = RstStreamFrame.type
_SETTINGS = SettingsFrame.type
_PUSH = PushPromiseFrame.type
_PING = PingFrame.type
_GOAWAY = GoAwayFrame.type
_WINDOW = WindowUpdateFrame.type
_CONT = ContinuationFrame.type

_END_STREAM = 0x01
_END_HEADERS = 0x04
_PADDED = 0x08
_PRIORITY_FLAG = 0x20

# flags each core frame type may carry (by type), from hyperframe's definitions
_VALID_FLAGS = tuple(sum(bit for _, bit in FRAMES[t].defined_flags) for t in range(_CONT + 1))
# Open streams tracked per connection (peers usually allow 100 concurrent):
# past this, new streams are counted in requests_overflow, not traced, so a
# peer that never answers cannot grow the table without bound.
MAX_STREAMS = 1024
# Frames larger than this are not believed when recognising frames by shape
# (the default SETTINGS_MAX_FRAME_SIZE is 16384; some peers raise it).
SHAPE_MAX_LEN = 1 << 20
RESYNC_LIMIT = 64  # syscalls without a frame-aligned start before giving up
# Bytes of one header block (HEADERS + CONTINUATIONs) or frame body kept for
# decoding; past it the rest counts as cut by the capture (a memory bound
# against CONTINUATION floods and huge frames; found by the fuzz invariant).
MAX_HELD = 64 * 1024
_MAX_HELD = MAX_HELD  # C constants in the compiled module
_SHAPE_MAX_LEN = SHAPE_MAX_LEN

# Header fields kept (wire name -> key). Every field still goes through the
# HPACK table; these are the ones spans and correlation use.
SELECT = {
    k.encode(): k
    for k in (":method", ":path", ":status", ":authority", ":scheme", "content-type",
              "grpc-status", "grpc-message", "user-agent", "traceparent", "tracestate", "b3",
              "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled",
              "x-request-id")
}


def frame_ok(ftype: int, flags: int, sid: int, length: int) -> bool:
    """Is this 9-byte header shaped like a valid frame of a core type?
    (Unknown types are allowed by RFC 9113 and accepted by the parser; the
    shape check is for recognising frames, so it sticks to core types.)"""
    if ftype < 0 or ftype > _CONT:
        return False
    valid = _VALID_FLAGS[ftype]
    if flags & ~valid & 0xFF or sid >> 31 & 1:  # the reserved bit
        return False
    if ftype == _SETTINGS or ftype == _PING or ftype == _GOAWAY:  # connection-level only
        if sid:
            return False
        if ftype == _SETTINGS:
            return not length % 6 and not (flags and length)
        if ftype == _GOAWAY:
            return length >= 8
    elif not sid and ftype != _WINDOW:
        return False
    if ftype == _PRIORITY:
        return length == 5
    if ftype == _RST or ftype == _WINDOW:
        return length == 4
    if ftype == _PING:
        return length == 8
    return True


def looks_like_frames(data: bytes, size: int, first_type: int = -1) -> bool:
    """Does a syscall's payload start with a run of HTTP/2 frames? Every frame
    header within the capture must be well-shaped and the run must fit the
    syscall: it ends exactly at `size`, or runs on past the capture. One lone
    frame that does not end exactly at `size` is not enough (too weak)."""
    cap = len(data)
    pos = 0
    n = 0
    while pos + 9 <= cap:
        length = data[pos] << 16 | data[pos + 1] << 8 | data[pos + 2]
        ftype = data[pos + 3]
        flags = data[pos + 4]
        sid = data[pos + 5]  # shifted in its own (64-bit) type
        sid = sid << 24 | data[pos + 6] << 16 | data[pos + 7] << 8 | data[pos + 8]
        if length > _SHAPE_MAX_LEN or not frame_ok(ftype, flags, sid, length):
            return False
        if not n and first_type >= 0 and ftype != first_type:
            return False
        n += 1
        pos += 9 + length
    if not n or pos > size:
        # the last frame continues in a later syscall: fine if others vouch for it
        return n >= 2
    if pos == size:
        return True
    # stopped inside the capture (a partial header at its end) or in the gap
    return n >= 2


@cython.cclass
class Owner:
    """What a FrameReader reports to (module docstring): Http2Session, or a
    test recorder, subclasses it. Compiled, the reader's calls are C calls."""

    __slots__ = ("stats",)

    def give_up(self) -> None:
        raise NotImplementedError

    def msg_counter(self, reader: FrameReader, sid: int):
        raise NotImplementedError

    def on_headers(self, reader: FrameReader, sid: int, fields: dict, lost: bool,
                   end_stream: bool, first: DataEvent, last: DataEvent) -> None:
        raise NotImplementedError

    def on_data_end(self, reader: FrameReader, sid: int, end_stream: bool,
                    ev: DataEvent) -> None:
        raise NotImplementedError

    def on_rst(self, reader: FrameReader, sid: int, code: int, ev: DataEvent) -> None:
        raise NotImplementedError

    def on_goaway(self, reader: FrameReader, last_sid: int, ev: DataEvent) -> None:
        raise NotImplementedError


class FrameReader:
    """Frames of one direction of one connection, reassembled across syscalls."""

    __slots__ = ("session", "direction", "hpack", "buf", "buf_ev", "preface", "remaining",
                 "ftype", "flags", "sid", "flen", "frame_ev", "body", "short", "msgs",
                 "dpre", "dcontent", "block", "lost", "lost_events", "held")

    def __init__(self, session: Owner, direction: int, known: bool, preface: bool) -> None:
        self.session = session
        self.direction = direction
        self.hpack = HpackTable(known)
        self.buf = b""  # an unfinished frame header (no gap), kept across syscalls
        self.buf_ev: DataEvent | None = None
        self.preface = preface  # the client preface may come first in this direction
        self.remaining = 0  # body bytes of the current frame still to come
        self.ftype = -1  # current frame (type -1: between frames)
        self.flags = 0
        self.sid = 0
        self.flen = 0
        self.frame_ev: DataEvent | None = None  # the syscall that carried its first byte
        self.body: list[bytes] | None = None  # captured body parts, for frames we decode
        self.short = False  # part of that body fell in a gap
        self.held = 0  # bytes in body (and, for CONTINUATIONs, in the open block)
        self.msgs = None  # DATA of a gRPC stream: the owner's message counter
        self.dpre = 0  # DATA: pad-length byte still to come
        self.dcontent = 0  # DATA: content bytes still to come (-1: unknown)
        # an open header block: [sid, parts, flags of the HEADERS frame, first ev, short,
        # push, bytes held]
        self.block: list | None = None
        self.lost = False  # framing lost: waiting for a frame-aligned syscall
        self.lost_events = 0

    # ---- bytes in ----

    def feed(self, ev: DataEvent) -> None:
        data = ev.payload
        size = ev.size
        if self.lost:
            if not looks_like_frames(data, size):
                stats = self.session.stats
                stats.unparsed_bytes += size
                self.lost_events += 1
                if self.lost_events >= RESYNC_LIMIT:
                    self.session.give_up()
                return
            self.lost = False
            self.lost_events = 0
        if self.buf:
            # positions stay consistent: the buffered bytes were all captured
            data = self.buf + data
            size += len(self.buf)
            self.buf = b""
        cap = len(data)
        pos = 0
        if self.preface:
            if PREFACE.startswith(data[:_PREFACE_LEN]):
                if size >= _PREFACE_LEN:
                    self.preface = False
                    pos = _PREFACE_LEN
                elif cap == size:
                    self.buf = data  # the preface itself split across syscalls
                    return
            self.preface = False
        while pos < size:
            rem = self.remaining
            if rem:
                avail = size - pos
                take = rem if rem <= avail else avail
                body = self.body
                if body is not None:
                    end = pos + take
                    if end > cap:
                        end = cap
                        self.short = True
                    if end - pos > _MAX_HELD - self.held:
                        end = pos + _MAX_HELD - self.held
                        self.short = True
                    if end > pos:
                        body.append(data[pos:end])
                        self.held += end - pos
                elif self.msgs is not None:
                    self._data(data, pos, take, cap)
                pos += take
                self.remaining = rem - take
                if rem == take:
                    self._frame_end(ev)
                    if self.lost:
                        return
                continue
            if pos + 9 > cap:
                if cap == size:
                    # no gap: the header continues in the next syscall
                    self.buf = data[pos:cap]
                    if self.buf_ev is None:
                        self.buf_ev = ev
                    return
                self._lose(size - pos)
                return
            length = data[pos] << 16 | data[pos + 1] << 8 | data[pos + 2]
            ftype = data[pos + 3]
            flags = data[pos + 4]
            # the reserved bit is ignored
            sid = (data[pos + 5] & 0x7F) << 24 | data[pos + 6] << 16 | data[pos + 7] << 8 \
                | data[pos + 8]
            pos += 9
            first = self.buf_ev or ev
            self.buf_ev = None
            block = self.block
            if block is not None and (ftype != _CONT or sid != block[0]):
                # RFC 9113 6.10: nothing may come between a block's frames
                self._lose(size - pos + 9)
                return
            if ftype <= _CONT and not frame_ok(ftype, flags, sid, length):
                self._lose(size - pos + 9)
                return
            self.ftype = ftype
            self.flags = flags
            self.sid = sid
            self.flen = length
            self.frame_ev = first
            self.remaining = length
            if ftype == _DATA:
                self.body = None
                self.msgs = self.session.msg_counter(self, sid)
                if self.msgs is not None:
                    self.dpre = 1 if flags & _PADDED else 0
                    self.dcontent = length - self.dpre if not self.dpre else -1
            elif ftype == _HEADERS or ftype == _CONT or ftype == _PUSH or ftype == _RST \
                    or ftype == _GOAWAY:
                self.body = []
                self.short = False
                # a CONTINUATION counts toward its block's bound
                self.held = block[6] if block is not None else 0
                self.msgs = None
            else:
                self.body = None
                self.msgs = None
            if not length:
                self._frame_end(ev)
                if self.lost:
                    return

    def _data(self, data: bytes, pos: int, n: int, cap: int) -> None:
        """DATA body bytes of a gRPC stream: strip padding, count messages."""
        if self.dpre:
            self.dpre = 0
            if pos < cap:
                content = self.flen - 1 - data[pos]
                self.dcontent = content if content >= 0 else 0
            else:
                self.msgs.lost = True  # padding length unknown
                self.dcontent = 0
            pos += 1
            n -= 1
        c = self.dcontent
        if n > c:
            n = c
        if n > 0:
            self.dcontent = c - n
            self.msgs.feed(data, pos, n, cap)

    def _frame_end(self, ev: DataEvent) -> None:
        ftype = self.ftype
        self.ftype = -1
        session = self.session
        if ftype == _DATA:
            self.msgs = None
            session.on_data_end(self, self.sid, self.flags & _END_STREAM, ev)
            return
        body = self.body
        if body is None:
            return
        self.body = None
        raw = b"".join(body) if len(body) != 1 else body[0]
        short = self.short
        if ftype == _HEADERS or ftype == _PUSH:
            frag = self._fragment(ftype, raw, short)
            if frag is None:
                self._lose(0)
                return
            if self.flags & _END_HEADERS:
                self._block_done(self.sid, frag, self.flags, self.frame_ev, ev, short,
                                 ftype == _PUSH)
            else:
                self.block = [self.sid, [frag], self.flags, self.frame_ev, short,
                              ftype == _PUSH, len(frag)]
        elif ftype == _CONT:
            block = self.block
            if block is None:
                # no HEADERS before it (joined mid-block, or malformed; found by
                # fuzzing): its table insertions are missed, so the table is unknown
                self.hpack.reset()
                session.stats.h2_headers_lost += 1
                return
            if raw:
                block[1].append(raw)
                block[6] += len(raw)
            block[4] = block[4] or short
            if self.flags & _END_HEADERS:
                self.block = None
                self._block_done(block[0], b"".join(block[1]), block[2], block[3], ev,
                                 block[4], block[5])
        elif short:
            return  # an RST_STREAM/GOAWAY cut by the capture: its fields are unknown
        elif ftype == _RST:
            f = RstStreamFrame(self.sid)
            try:
                f.parse_body(memoryview(raw))
            except HyperframeError:
                return
            session.on_rst(self, self.sid, f.error_code, ev)
        elif ftype == _GOAWAY:
            f = GoAwayFrame(0)
            try:
                f.parse_body(memoryview(raw))
            except HyperframeError:
                return
            session.on_goaway(self, f.last_stream_id, ev)

    def _fragment(self, ftype: int, raw: bytes, short: bool) -> bytes | None:
        """The header block fragment of a HEADERS/PUSH_PROMISE body; None if malformed."""
        flags = self.flags
        if ftype == _HEADERS and not flags & (_PADDED | _PRIORITY_FLAG):
            return raw  # the common case: the body is the fragment
        if not short:
            # whole body: hyperframe strips padding and priority fields
            f = HeadersFrame(self.sid) if ftype == _HEADERS else PushPromiseFrame(self.sid)
            f.parse_flags(flags)
            try:
                f.parse_body(memoryview(raw))
            except HyperframeError:
                return None
            return f.data
        # cut by the capture: skip the leading fields, keep what was captured
        # (padding is at the end, past the capture)
        skip = 0
        if flags & _PADDED:
            skip += 1
        if ftype == _PUSH:
            skip += 4
        elif flags & _PRIORITY_FLAG:
            skip += 5
        return raw[skip:]

    def _block_done(self, sid: int, block: bytes, flags: int, first: DataEvent,
                    last: DataEvent, short: bool, push: bool) -> None:
        fields: dict[str, str] = {}
        lost = self.hpack.decode(block, SELECT, fields, not short)
        if push:
            return  # decoded for the table's sake; pushed streams are not traced
        self.session.on_headers(self, sid, fields, lost, flags & _END_STREAM, first, last)

    def _lose(self, nbytes: int) -> None:
        """Framing lost (a frame header in a gap, or a malformed one)."""
        session = self.session
        session.stats.h2_framing_lost += 1
        session.stats.unparsed_bytes += nbytes
        self.lost = True
        self.lost_events = 0
        self.remaining = 0
        self.ftype = -1
        self.body = None
        self.msgs = None
        self.block = None
        self.buf = b""
        self.buf_ev = None
        self.hpack.reset()  # the skipped bytes may have held header blocks
