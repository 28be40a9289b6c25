"""Connection table: per-connection state, protocol detection and dispatch.

Each connection (keyed by the kernel's never-reused conn_id) has a protocol
slot, `Conn.proto`, an object with on_data(ev) and on_close(eof). It starts as
a sniffer that picks the protocol from the first request bytes:
- HTTP/1 request line -> tracer.session_http1.Http1Session
- HTTP/2 prior-knowledge preface in the request direction, or a SETTINGS
  frame first in the response direction (servers may speak first) ->
  tracer.session_http2.Http2Session (or the h2 factory given to the
  table), counted in h2_connections
- anything else -> given up, counted as unparsed.
For ROLE_UNKNOWN connections (open before the tracer started, possibly no
OpenEvent ever) the sniffer also infers the role: the direction that carries
a request line is the request direction. HTTP/2 joined mid-stream is
recognised by frame shape (a syscall starting with a run of well-formed
frames, see http2.looks_like_frames), counted in h2_midstream; its role is
learnt from the first decodable HEADERS, and its HPACK tables start unknown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import cython

from tracer.connstate import Conn
from tracer.correlate import Correlator
from tracer.events import (
    MAX_PAYLOAD,
    SYS_FIRST_TLS,
    CloseEvent,
    ConnInfoC,
    ConnKeyC,
    ConnRole,
    DataDir,
    DataEvent,
    OpenEvent,
)
from tracer.protocols.http1 import is_request_start
from tracer.protocols.http2 import looks_like_frames
from tracer.session_http1 import Http1Session
from tracer.session_http2 import Http2Session
from tracer.spans import Span
from tracer.stats import Stats

ROLE_UNKNOWN = int(ConnRole.ROLE_UNKNOWN)
ROLE_SERVER = int(ConnRole.ROLE_SERVER)
ROLE_CLIENT = int(ConnRole.ROLE_CLIENT)
INGRESS = int(DataDir.DIR_INGRESS)
EGRESS = int(DataDir.DIR_EGRESS)

H2_PREFACE = b"PRI * HTTP/2.0\r\n"
# A pre-existing connection that shows no request line in this many syscalls
# is given up (it is probably not HTTP, or stuck in a long stream).
SNIFF_LIMIT = 16


class ProtocolHandler(Protocol):
    """The per-connection protocol slot (Http1Session, Http2Session)."""

    def on_data(self, ev: DataEvent) -> None: ...

    def on_close(self, eof: bool) -> None:
        """eof: the socket closed (close-delimited messages are complete).
        False: shutdown or expiry; unfinished requests count as incomplete."""


H2Factory = Callable[["Conn", "ConnectionTable"], ProtocolHandler]
# Called with the DataEvent that revealed an HTTP/2 connection joined
# mid-stream, so the kernel side can raise that connection's capture size
# (the preface case is handled in the kernel itself).
H2CaptureHook = Callable[[DataEvent], None]
_SETTINGS = 4


def kernel_capture_hook(conns_map, capture: int = MAX_PAYLOAD) -> H2CaptureHook:
    """An H2CaptureHook that raises the capture of a connection in sock.bpf.c's
    "conns" map (anything with lookup(key) -> bytes | None and update(key,
    value, flags)). The conn_id check keeps a reused fd's new socket alone;
    BPF_EXIST never recreates an entry that a close removed meanwhile."""
    from tracer.loader import MapError  # the loader is only needed with a kernel

    def raise_capture(ev: DataEvent) -> None:
        key = bytes(ConnKeyC(ev.pid, ev.fd))
        raw = conns_map.lookup(key)
        if raw is None:
            return
        info = ConnInfoC.from_buffer_copy(raw)
        if info.conn_id != ev.conn_id or info.capture >= capture:
            return
        info.capture = capture
        info.sniffed = 1
        try:
            conns_map.update(key, bytes(info), _BPF_EXIST)
        except MapError:
            pass  # closed meanwhile (ENOENT): nothing left to raise

    return raise_capture


_BPF_EXIST = 2
_SYS_FIRST_TLS = int(SYS_FIRST_TLS)


class _Sniffer:
    """First bytes of a connection: pick the protocol (and the role if unknown)."""

    __slots__ = ("conn", "seen", "held")

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.seen = 0
        # request-direction syscalls that are only a prefix of the h2 preface
        # (a split write): held until the protocol is known, then replayed
        self.held: list[DataEvent] = []

    def on_data(self, ev: DataEvent) -> None:
        conn = self.conn
        table = conn.table
        stats = table.stats
        data = ev.payload
        role = conn.role
        if role == ROLE_UNKNOWN:
            ingress = ev.direction == INGRESS
            if data.startswith(H2_PREFACE):
                conn.role = ROLE_SERVER if ingress else ROLE_CLIENT
                self._h2(ev, True)
            elif is_request_start(data):
                conn.role = ROLE_SERVER if ingress else ROLE_CLIENT
                self._http1(ev)
            elif looks_like_frames(data, ev.size):
                # h2 joined late: the role comes from the first decodable HEADERS
                stats.h2_midstream += 1
                hook = table.h2_capture
                if hook is not None:
                    hook(ev)
                self._h2(ev, False)
            else:
                # mid-stream bytes of a connection we joined late: skip to a request
                stats.unparsed_bytes += ev.size
                self.seen += 1
                if self.seen >= SNIFF_LIMIT:
                    conn.give_up(counted=True)
            return
        if (ev.direction == INGRESS) != (role == ROLE_SERVER):
            if looks_like_frames(data, ev.size, _SETTINGS):
                # an h2 server's SETTINGS, sent before it read the client preface
                self._h2(ev, True)
                return
            # response-direction bytes before any request: not HTTP/1 (server
            # speaks first) or the request was lost; wait for a request
            stats.unparsed_bytes += ev.size
            self.seen += 1
            if self.seen >= SNIFF_LIMIT:
                conn.give_up(counted=True)
            return
        if self.held:
            data = b"".join(e.payload for e in self.held) + data
        if data.startswith(H2_PREFACE):
            self._h2(ev, True)
        elif len(data) < len(H2_PREFACE) and ev.size == len(ev.payload) \
                and H2_PREFACE.startswith(data):
            self.held.append(ev)
        else:
            # the HTTP/1 parser validates the start and gives up on garbage
            self._http1(ev)

    def _http1(self, ev: DataEvent) -> None:
        conn = self.conn
        conn.proto = proto = Http1Session(conn, conn.table)
        for held in self.held:
            proto.on_data(held)
        proto.on_data(ev)

    def _h2(self, ev: DataEvent, known: bool) -> None:
        """known: the connection's start is in view (HPACK tables known)."""
        conn = self.conn
        table = conn.table
        table.stats.h2_connections += 1
        factory = table.h2_factory
        conn.proto = proto = (Http2Session(conn, table, known) if factory is None
                              else factory(conn, table))
        for held in self.held:
            proto.on_data(held)
        proto.on_data(ev)

    def on_close(self, eof: bool) -> None:
        pass


class ConnectionTable:
    """Events in, spans out (through `sink`). Single-threaded, like the pipeline.

    capture_bytes is informational here (each DataEvent says what it captured);
    it is kept so the table reports the configuration it was built for."""

    __slots__ = ("sink", "stats", "clock_offset_ns", "capture_bytes", "h2_factory", "h2_capture",
                 "conns", "correlator")

    def __init__(self, sink: Callable[[Span], None], stats: Stats, clock_offset_ns: int = 0,
                 capture_bytes: int = 512, h2_factory: H2Factory | None = None,
                 h2_capture: H2CaptureHook | None = None) -> None:
        self.sink = sink
        self.stats = stats
        self.clock_offset_ns = clock_offset_ns
        self.capture_bytes = capture_bytes
        self.h2_factory = h2_factory  # None: tracer.session_http2.Http2Session
        self.h2_capture = h2_capture
        self.conns: dict[int, Conn] = {}
        # every protocol goes through the correlator: ids at request start, links
        self.correlator = Correlator(sink, stats)

    def __len__(self) -> int:
        return len(self.conns)

    def handle(self, ev: DataEvent | OpenEvent | CloseEvent) -> None:
        self.stats.events_handled += 1
        kind = type(ev)
        if kind is DataEvent:
            data: DataEvent = ev
            conn: Conn = self.conns.get(data.conn_id)
            if conn is None:
                if not data.size:
                    return
                conn = self._add(data.conn_id, data.role)
                conn.pid = data.pid
                conn.comm = data.comm
            conn.last_ts = data.ts_exit
            if data.syscall >= _SYS_FIRST_TLS:
                conn.tls = True
            if data.size:
                proto = conn.proto
                # the sessions by their C methods; anything else (the sniffer) by name
                if type(proto) is Http1Session:
                    cython.cast(Http1Session, proto).on_data(data)
                elif type(proto) is Http2Session:
                    cython.cast(Http2Session, proto).on_data(data)
                else:
                    proto.on_data(ev)
        elif kind is OpenEvent:
            opened: OpenEvent = ev
            conn = self.conns.get(opened.conn_id)
            if conn is None:
                conn = self._add(opened.conn_id, opened.role)
            self._set_open(conn, opened)
            conn.last_ts = opened.ts
        elif kind is CloseEvent:
            closed: CloseEvent = ev
            conn = self.conns.pop(closed.conn_id, None)
            if conn is not None:
                self.stats.connections_open -= 1
                conn.proto.on_close(True)

    def _set_open(self, conn: Conn, ev: OpenEvent) -> None:
        conn.pid = ev.pid
        conn.comm = ev.comm
        conn.netns = ev.netns
        conn.cgroup_id = ev.cgroup_id
        conn.laddr = ev.laddr
        conn.lport = ev.lport
        conn.raddr = ev.raddr
        conn.rport = ev.rport
        conn.fresh = ev.role != ROLE_UNKNOWN
        if ev.role == ROLE_CLIENT:
            self.correlator.note_client(ev.laddr, ev.netns)
        if conn.role == ROLE_UNKNOWN:
            conn.role = ev.role

    def _add(self, conn_id, role) -> Conn:
        conn = Conn(self, conn_id, role)
        conn.proto = _Sniffer(conn)
        self.conns[conn_id] = conn
        stats = self.stats
        stats.connections_total += 1
        stats.connections_open += 1
        return conn

    def expire(self, now_ktime_ns: int, idle_ns: int) -> int:
        """Drop connections idle for idle_ns or more; what they had in flight is
        counted as lost. Returns how many were dropped."""
        limit = now_ktime_ns - idle_ns
        idle = [c for c in self.conns.values() if c.last_ts <= limit]
        for conn in idle:
            del self.conns[conn.conn_id]
            conn.proto.on_close(False)
        n = len(idle)
        self.stats.connections_open -= n
        self.stats.connections_expired += n
        return n

    def close_all(self) -> None:
        """Shutdown: no half spans; unfinished requests count as incomplete."""
        conns = self.conns
        self.conns = {}
        self.stats.connections_open -= len(conns)
        for conn in conns.values():
            conn.proto.on_close(False)
