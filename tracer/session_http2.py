# cython: annotation_typing=False
"""HTTP/2 on one connection: the owner of two protocols/http2.FrameReaders.

It pairs requests and responses by stream id, counts gRPC messages, and
finishes spans through the correlator (the parser below it is sans-IO).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote

import cython

from tracer.connstate import Conn
from tracer.events import ConnRole, DataDir, DataEvent
from tracer.protocols import grpc
from tracer.protocols.grpc import MessageCounter
from tracer.protocols.http2 import MAX_STREAMS, FrameReader, Owner
from tracer.spans import Span, exchange_span

if TYPE_CHECKING:
    from tracer.conn import ConnectionTable

_ROLE_SERVER = int(ConnRole.ROLE_SERVER)
_ROLE_CLIENT = int(ConnRole.ROLE_CLIENT)
_ROLE_UNKNOWN = int(ConnRole.ROLE_UNKNOWN)
_INGRESS = int(DataDir.DIR_INGRESS)
_EGRESS = int(DataDir.DIR_EGRESS)


class _Stream:
    """One HTTP/2 stream (one request/response exchange)."""

    __slots__ = ("sid", "req", "resp_hdrs", "status", "trailers", "ctx", "lost", "orphan",
                 "req_first", "req_last", "resp_first", "resp_last", "grpc", "req_msgs",
                 "resp_msgs")

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.req: dict[str, str] = {}
        self.resp_hdrs: dict[str, str] | None = None
        self.status = 0
        self.trailers: dict[str, str] | None = None
        self.ctx = None
        self.lost = False  # some header field could not be decoded
        self.orphan = False  # request not seen (joined late): not a span
        self.req_first: DataEvent | None = None
        self.req_last: DataEvent | None = None
        self.resp_first: DataEvent | None = None
        self.resp_last: DataEvent | None = None
        self.grpc = False
        self.req_msgs: grpc.MessageCounter | None = None
        self.resp_msgs: grpc.MessageCounter | None = None


class Http2Session(Owner):
    """HTTP/2 on one connection: streams paired by id, spans through the correlator.

    known: the connection was seen from its start (HPACK tables known).
    The request direction is the conn's role; for ROLE_UNKNOWN (joined late)
    it is learnt from the first decodable HEADERS (:method/:path in requests,
    :status in responses)."""

    __slots__ = ("conn", "table", "correlator", "streams", "readers", "req_dir", "dead")

    def __init__(self, conn: Conn, table: ConnectionTable, known: bool = True) -> None:
        self.conn = conn
        self.table = table
        self.stats = table.stats
        self.correlator = table.correlator
        self.streams: dict[int, _Stream] = {}
        role = conn.role
        if role == _ROLE_SERVER:
            self.req_dir = _INGRESS
        elif role == _ROLE_CLIENT:
            self.req_dir = _EGRESS
        else:
            self.req_dir = -1
        # index = direction; the client preface can only lead the request direction
        self.readers = (FrameReader(self, _EGRESS, known, known and self.req_dir != _INGRESS),
                        FrameReader(self, _INGRESS, known, known and self.req_dir != _EGRESS))
        self.dead = False

    def on_data(self, ev: DataEvent) -> None:
        reader = self.readers[ev.direction]
        reader.feed(ev)

    def on_close(self, eof: bool) -> None:
        if self.dead:
            return
        self.dead = True
        n = 0
        for st in self.streams.values():
            if not st.orphan:
                n += 1
        self.stats.incomplete_requests += n
        self.streams.clear()

    def give_up(self) -> None:
        """Framing never came back: stop parsing this connection (counted)."""
        self.on_close(False)
        self.conn.give_up(counted=True)

    # ---- from the frame readers ----

    def msg_counter(self, reader: FrameReader, sid: int) -> grpc.MessageCounter | None:
        st = self.streams.get(sid)
        if st is None or not st.grpc:
            return None
        return st.req_msgs if _direction(reader) == self.req_dir else st.resp_msgs

    def on_headers(self, reader: FrameReader, sid: int, fields: dict[str, str], lost: bool,
                   end_stream: int, first: DataEvent, last: DataEvent) -> None:
        if self.req_dir < 0 and not self._learn_role(_direction(reader), fields):
            self.stats.h2_headers_lost += 1  # neither a request nor a response we can tell
            return
        streams = self.streams
        st = streams.get(sid)
        if _direction(reader) == self.req_dir:
            if st is None:
                if len(streams) >= MAX_STREAMS:
                    self.stats.requests_overflow += 1
                    return
                st = _Stream(sid)
                streams[sid] = st
                st.req = fields
                st.lost = lost
                st.req_first = first
                authority = fields.get(":authority")
                if authority is not None:
                    fields["host"] = authority
                ctype = fields.get("content-type", "")
                st.grpc = ctype.startswith("application/grpc")
                if st.grpc:
                    st.req_msgs = MessageCounter()
                    st.resp_msgs = MessageCounter()
                server = self.req_dir == _INGRESS
                # the start time, as for HTTP/1: flush() ages waiting contexts by it
                st.ctx = self.correlator.start(
                    self.conn, server, first.pid, first.tid, fields, sid,
                    first.ts_exit if server else first.ts_enter)
            else:
                st.lost = st.lost or lost  # request trailers
            st.req_last = last
            return
        # response direction
        if st is None:
            if sid & 1:  # a stream whose request we never saw (joined late)
                if len(streams) >= MAX_STREAMS:
                    self.stats.unpaired_responses += 1
                    return
                st = _Stream(sid)
                st.orphan = True
                streams[sid] = st
                self.stats.unpaired_responses += 1
            else:
                return  # a pushed stream's response: not traced
        if st.orphan:
            if end_stream:
                del streams[sid]
            return
        st.lost = st.lost or lost
        if st.resp_hdrs is None:
            status = fields.get(":status", "")
            if status[:1] == "1" and not end_stream:
                return  # interim (1xx): the final response follows
            st.resp_hdrs = fields
            # isascii: str.isdigit() admits digits that int() refuses ("²")
            st.status = int(status) if status.isascii() and status.isdigit() else 0
            st.resp_first = first
        else:
            st.trailers = fields
        st.resp_last = last
        if end_stream:
            del streams[sid]
            self._finish(st)

    def on_data_end(self, reader: FrameReader, sid: int, end_stream: int,
                    ev: DataEvent) -> None:
        st = self.streams.get(sid)
        if st is None:
            return
        if _direction(reader) == self.req_dir:
            st.req_last = ev
            return
        if st.resp_hdrs is None:
            return  # DATA before response HEADERS: malformed or lost with the headers
        st.resp_last = ev
        if end_stream:
            del self.streams[sid]
            if not st.orphan:
                self._finish(st)

    def on_rst(self, reader: FrameReader, sid: int, code: int, ev: DataEvent) -> None:
        st = self.streams.pop(sid, None)
        if st is None or st.orphan:
            return
        self.stats.h2_streams_reset += 1
        if st.resp_hdrs is None:
            self.stats.incomplete_requests += 1
            return
        # reset after the response started: the span ends here, marked
        if _direction(reader) != self.req_dir:
            st.resp_last = ev
        self._finish(st, code)

    def on_goaway(self, reader: FrameReader, last_sid: int, ev: DataEvent) -> None:
        # streams above last_sid were never processed by the GOAWAY's sender
        streams = self.streams
        dropped = [sid for sid in streams if sid > last_sid]
        for sid in dropped:
            if not streams.pop(sid).orphan:
                self.stats.incomplete_requests += 1

    # ---- helpers ----

    def _learn_role(self, direction: int, fields: dict[str, str]) -> bool:
        if ":method" in fields or ":path" in fields:
            req_dir = direction
        elif ":status" in fields:
            req_dir = _EGRESS if direction == _INGRESS else _INGRESS
        else:
            return False
        self.req_dir = req_dir
        conn = self.conn
        if conn.role == _ROLE_UNKNOWN:
            conn.role = _ROLE_SERVER if req_dir == _INGRESS else _ROLE_CLIENT
        return True

    def _finish(self, st: _Stream, reset_code: int = -1) -> None:
        table = self.table
        span = h2_span(self.conn, st, table.clock_offset_ns, self.req_dir == _INGRESS,
                       reset_code)
        if st.lost:
            self.stats.h2_headers_lost += 1
        if (st.req_msgs is not None and st.req_msgs.lost) or \
                (st.resp_msgs is not None and st.resp_msgs.lost):
            self.stats.grpc_framing_lost += 1
        self.correlator.finish(st.ctx, span)


def _direction(reader) -> int:
    # a FrameReader (a final type) read as a C field; anything else by name
    if type(reader) is FrameReader:
        return cython.cast(FrameReader, reader).direction
    return reader.direction


def h2_span(conn: Conn, st: _Stream, clock_offset_ns: int, server: bool,
            reset_code: int = -1) -> Span:
    """One finished stream -> Span (latency rules as for HTTP/1, see spans.py)."""
    first = st.req_first
    last = st.resp_last
    rfirst = st.resp_first
    req = st.req
    target = req.get(":path", "")
    path, _, query = target.partition("?")
    extra = None
    if st.grpc:
        trailers = st.trailers or st.resp_hdrs  # trailers-only responses carry it in HEADERS
        gmsg = trailers.get("grpc-message")
        extra = grpc.attributes(path, trailers.get("grpc-status"),
                                unquote(gmsg) if gmsg else None, st.req_msgs, st.resp_msgs)
    if st.lost or reset_code >= 0:
        extra = extra if extra is not None else {}
        if st.lost:
            extra["tracer.h2.headers_lost"] = True
        if reset_code >= 0:
            extra["http2.rst_stream.error_code"] = reset_code
    s = exchange_span(conn, server, first, st.req_last, rfirst, last, clock_offset_ns)
    s.protocol = "grpc" if st.grpc else "http2"
    s.method = req.get(":method", "")
    s.path = path
    s.query = query
    s.status = st.status
    s.version = "2"
    s.request_headers = req
    s.attributes_extra = extra
    return s
