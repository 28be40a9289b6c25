"""Fuzz targets: one function per parser layer, bytes in, invariants checked.

Each target takes arbitrary bytes and drives one layer with them. A target
returns normally for any input; what it may not do is let an exception out
(a parser crash) or break an invariant (an AssertionError):
- every bad input is counted (malformed/unparsed/lost counters, decode errors),
- buffers held across syscalls stay under their documented caps,
- round trips hold where the layer has one (events encode/decode, HPACK
  against the hpack library's encoder and decoder).

The byte layout of each target's input is a small script (see Script) so that
the seed corpus (seeds()) can be built from real requests, frames and ring
records, and a coverage-guided fuzzer (atheris, tests/fuzz/run.py) mutates
from there. The same functions run without atheris: tests/fuzz/test_fuzz_smoke.py
replays the seeds and a few hundred deterministic mutations of them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import hpack
from hpack.exceptions import HPACKError

from tracer import events, session_http2
from tracer.conn import ConnectionTable
from tracer.events import CloseEvent, DataEvent, DecodeError, OpenEvent
from tracer.protocols import http1
from tracer.protocols.hpack_partial import UNKNOWN_TABLE_LIMIT, HpackTable
from tracer.protocols.http2 import PREFACE, SELECT
from tracer.session_http1 import Http1Session
from tracer.spans import Span
from tracer.stats import COUNTERS, Stats

INGRESS = int(events.DataDir.DIR_INGRESS)
EGRESS = int(events.DataDir.DIR_EGRESS)
ROLES = (int(events.ConnRole.ROLE_UNKNOWN), int(events.ConnRole.ROLE_SERVER),
         int(events.ConnRole.ROLE_CLIENT))
# Extra uncaptured bytes a syscall may carry past its payload (capture gaps).
EXTRA = (0, 0, 0, 0, 1, 2, 7, 100, 5000, 1 << 20)
# The caps the parsers promise for bytes held across syscalls.
HTTP1_BUF_CAP = http1.MAX_HEAD + events.MAX_PAYLOAD
H2_BUF_CAP = len(PREFACE) + 9
H2_HELD_CAP = 64 * 1024  # a header block or a decoded frame body


class Script:
    """Reads a fuzz input as a sequence of small integers and byte strings;
    past the end every read returns zero/empty (inputs of any length work)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def more(self) -> bool:
        return self.pos < len(self.data)

    def u8(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def u16(self) -> int:
        return self.u8() << 8 | self.u8()

    def blob(self) -> bytes:
        """A u16-length-prefixed byte string (cut at the end of the input)."""
        n = self.u16()
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out


def blob(b: bytes) -> bytes:
    """Encode a byte string the way Script.blob reads it."""
    return struct.pack(">H", len(b)) + b


# ---- shared checks ----------------------------------------------------------

def check_stats(stats: Stats) -> None:
    for k in COUNTERS:
        v = getattr(stats, k)
        assert v >= 0, f"counter {k} = {v}"


def check_span(span: Span) -> None:
    d = span.to_dict()
    assert 0 <= d["status"] <= 999, d["status"]
    assert len(d["trace_id"]) == 32 and len(d["span_id"]) == 16
    assert isinstance(d["name"] if "name" in d else "", str)


def check_table(table: ConnectionTable) -> None:
    """Memory bounds of every live connection's parser state."""
    assert table.stats.connections_open == len(table.conns)
    for conn in table.conns.values():
        proto = conn.proto
        if isinstance(proto, Http1Session):
            for p in (proto.req, proto.resp):
                assert len(p.buf) <= HTTP1_BUF_CAP, ("http1 buf", len(p.buf))
                if p.state == http1.DEAD:
                    assert proto.dead
        elif isinstance(proto, session_http2.Http2Session):
            for r in proto.readers:
                assert len(r.buf) <= H2_BUF_CAP, ("h2 buf", len(r.buf))
                body = sum(map(len, r.body)) if r.body else 0
                block = sum(map(len, r.block[1])) if r.block else 0
                assert body <= H2_HELD_CAP and block <= H2_HELD_CAP, ("h2 held", body, block)
                assert not r.block or len(r.block[1]) <= H2_HELD_CAP
                check_hpack(r.hpack)
        held = getattr(proto, "held", None)
        if held is not None:  # the sniffer holds only a split h2 preface
            assert sum(len(e.payload) for e in held) < len(PREFACE)


def check_hpack(t: HpackTable) -> None:
    size = sum(32 + len(n or b"") + len(v or b"") for n, v in t.entries)
    assert size == t.size, (size, t.size)
    assert t.size <= max(t.max_size, 0) or not t.entries
    assert t.size <= UNKNOWN_TABLE_LIMIT, ("hpack table", t.size)


def _table(spans: list) -> tuple[ConnectionTable, Stats]:
    stats = Stats()
    return ConnectionTable(spans.append, stats), stats


def _finish(table: ConnectionTable, stats: Stats, spans: list) -> Stats:
    check_table(table)
    table.close_all()
    table.correlator.close()
    check_stats(stats)
    assert stats.connections_open == 0 and len(table) == 0
    assert stats.spans_emitted == len(spans), (stats.spans_emitted, len(spans))
    for s in spans:
        check_span(s)
    return stats  # what the input did: tests/unit/test_fuzz_regressions.py checks it


# ---- the events decoder ------------------------------------------------------

def fuzz_events(data: bytes) -> None:
    """events.decode on arbitrary records (offset and size from the first
    bytes); decoded events survive encode -> decode unchanged."""
    if len(data) < 2:
        data += b"\0\0"
    off = data[0] % 8
    trim = data[1] % 8
    buf = memoryview(data[2:])
    size = max(len(buf) - off - trim, 0)
    try:
        ev = events.decode(buf, off, size)
    except DecodeError:
        return
    assert isinstance(ev, OpenEvent | DataEvent | CloseEvent)
    if isinstance(ev, DataEvent):
        assert len(ev.payload) <= ev.size
        assert len(ev.payload) <= size - events.PAYLOAD_OFFSET
    # round trip: encode is the inverse of decode (comm: only what survives
    # the utf-8 replacement; ipv4-mapped v6 addresses are decoded as ipv4)
    try:
        raw = events.encode(ev)
    except (struct.error, ValueError):
        # encode is a test helper: it only takes what the kernel can produce
        return
    ev2 = events.decode(raw)
    for f in ev.__slots__:
        a, b = getattr(ev, f), getattr(ev2, f)
        if f == "comm" and not ev.comm.isascii():
            continue
        if f in ("laddr", "raddr") and ev.family == events.AF_INET6 and "." in a:
            continue
        assert a == b, (f, a, b)


def seeds_events() -> list[bytes]:
    out = [b"\0\0" + events.encode(ev) for ev in _sample_events()]
    out.append(b"\x03\x05" + b"\0" * 3 + events.encode(_sample_events()[1]) + b"\0" * 5)
    return out


# ---- HTTP/1 --------------------------------------------------------------------

def _drive(table: ConnectionTable, s: Script, conn_id: int, role: int, capture: int,
           t: list[int]) -> None:
    """The rest of the script as syscalls on one connection: per step a flags
    byte (direction, extra uncaptured bytes) and a payload blob."""
    while s.more():
        flags = s.u8()
        payload = s.blob()
        direction = INGRESS if flags & 1 else EGRESS
        extra = EXTRA[(flags >> 1) % len(EXTRA)]
        if flags & 0x80 and not payload and not extra:
            table.expire(t[0] + 1, 0)  # idle expiry of everything
            continue
        size = len(payload) + extra
        t[0] += 1000
        table.handle(DataEvent(conn_id, 100, 101 + (flags >> 6 & 1), 5, role, direction,
                               1, t[0], t[0] + 500, size, payload[:capture], "app"))


def fuzz_http1(data: bytes) -> Stats:
    """An Http1Session (role from the first byte) fed syscalls in both
    directions, with capture gaps."""
    s = Script(data)
    hdr = s.u8()
    role = ROLES[1 + (hdr & 1)]
    capture = (16, 64, 512, 4096)[hdr >> 1 & 3]
    spans: list = []
    table, stats = _table(spans)
    t = [1_000_000]
    table.handle(OpenEvent(1, 100, 101, 5, role, t[0], 1, 2, events.AF_INET, "10.0.0.1", 8080,
                           "10.0.0.2", 40000, "app"))
    conn = table.conns[1]
    conn.proto = Http1Session(conn, table)  # no sniffing: every byte reaches the parser
    _drive(table, s, 1, role, capture, t)
    return _finish(table, stats, spans)


def seeds_http1() -> list[bytes]:
    from tests.unit.synth import http_request, http_response
    req1 = http_request("GET", "/a?b=1", {"traceparent":
                        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    resp1 = http_response(200, body=b"hello")
    req2 = http_request("POST", "/upload", body=b"x" * 300, chunked=True, chunk_size=100)
    resp2 = http_response(201, body=b"y" * 50, chunked=True, chunk_size=20)
    resp3 = http_response(200, body=b"close-delimited", length=False)
    s100 = b"HTTP/1.1 100 Continue\r\n\r\n"
    up = http_response(101, {"Upgrade": "websocket", "Connection": "Upgrade"}, length=False)

    def step(direction_in: bool, payload: bytes, extra: int = 0) -> bytes:
        return bytes([(1 if direction_in else 0) | EXTRA.index(extra) << 1]) + blob(payload)

    server = bytes([0b100])  # server role, capture 512
    client = bytes([0b101])
    out = [
        server + step(True, req1) + step(False, resp1) + step(True, req2) + step(False, s100)
        + step(False, resp2),
        server + step(True, req1[:10]) + step(True, req1[10:]) + step(False, resp3),
        client + step(False, req1) + step(True, resp1[:20]) + step(True, resp1[20:]),
        server + step(True, req2[:200], 100) + step(True, req2[300:]) + step(False, resp1),
        server + step(True, req1) + step(False, up) + step(True, b"\x81\x05hello"),
        server + step(True, req1 + req1) + step(False, resp1 + resp1),
        bytes([0b0000]) + step(True, req2[:16], 7) + step(False, resp2[:16], 5000),
    ]
    return out


# ---- HTTP/2 -------------------------------------------------------------------

def fuzz_http2(data: bytes) -> Stats:
    """A connection that starts as HTTP/2 (preface in view, or joined late),
    fed frames in both directions with capture gaps."""
    s = Script(data)
    hdr = s.u8()
    role = ROLES[hdr % 3]
    capture = (64, 512, 4096, 4096)[hdr >> 2 & 3]
    known = bool(hdr & 0x10)
    spans: list = []
    table, stats = _table(spans)
    t = [1_000_000]
    if role != ROLES[0]:
        table.handle(OpenEvent(1, 100, 101, 5, role, t[0], 1, 2, events.AF_INET, "10.0.0.1",
                               8080, "10.0.0.2", 40000, "app"))
    else:
        table._add(1, role)
    conn = table.conns[1]
    conn.proto = session_http2.Http2Session(conn, table, known)
    table.stats.h2_connections += 1
    _drive(table, s, 1, role, capture, t)
    return _finish(table, stats, spans)


def _h2_steps(chunks, server_side: bool, cut: int = 0) -> bytes:
    out = bytearray()
    for d, payload in chunks:
        to_server = d == "c2s"
        ingress = to_server if server_side else not to_server
        for i in range(0, len(payload), 60000):
            part = payload[i:i + 60000]
            extra = 0
            if cut and len(part) > cut:
                part, extra = part[:cut], 7 if len(part) - cut == 7 else 0
            out += bytes([(1 if ingress else 0) | EXTRA.index(extra) << 1]) + blob(part)
    return bytes(out)


def h2_recording() -> tuple[tuple[str, bytes], ...]:
    from tests.unit.h2synth import H2Pair, grpc_frame
    p = H2Pair(max_frame=16384)
    a = p.request("GET", "/a", {"traceparent":
                  "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    p.respond(a, 200, {"content-type": "text/plain"}, body=b"ok" * 20)
    g = p.request("POST", "/pkg.Svc/M", body=grpc_frame(b"q" * 30), grpc=True)
    p.respond(g, 200, {"content-type": "application/grpc"},
              body=[grpc_frame(b"m" * 3), grpc_frame(b"n" * 7)], trailers={"grpc-status": "0"})
    r = p.request("GET", "/reset")
    p.client.reset_stream(r)
    p.flush_client()
    big = p.request("GET", "/big", {"x-big": "h" * 17000})  # CONTINUATION
    p.respond(big, 404)
    return tuple(p.chunks)


def seeds_http2() -> list[bytes]:
    rec = h2_recording()
    server = bytes([1 | 2 << 2 | 0x10])  # server, capture 4096, known
    client = bytes([2 | 2 << 2 | 0x10])
    late = bytes([0 | 1 << 2])  # unknown role, capture 512, joined late
    return [server + _h2_steps(rec, True), client + _h2_steps(rec, False),
            late + _h2_steps(rec[4:], True), server + _h2_steps(rec, True, cut=200)]


# ---- HPACK ----------------------------------------------------------------------

def fuzz_hpack(data: bytes) -> None:
    """Mode 0: header blocks of arbitrary bytes, decoded by HpackTable and by
    the hpack library; while the library accepts every block, both must agree
    exactly. Mode 1: header lists from the input, encoded by the library's
    encoder (table size changes included), decoded by HpackTable: exact."""
    s = Script(data)
    mode = s.u8()
    if mode & 1:
        _hpack_roundtrip(s, mode)
        return
    known = not mode & 2
    ours = HpackTable(known)
    theirs = hpack.Decoder()
    theirs.max_header_list_size = 1 << 30
    agree = known
    while s.more():
        block = s.blob()
        complete = not s.u8() & 0x80
        out: dict[str, str] = {}
        lost = ours.decode(block, SELECT, out, complete)
        check_hpack(ours)
        if not complete:
            assert lost
            agree = False
        if not agree:
            continue
        try:
            fields = theirs.decode(block, raw=True)
        except (HPACKError, ValueError, IndexError):
            agree = False
            continue
        want: dict[str, str] = {}
        for n, v in fields:
            key = SELECT.get(n)
            if key is not None:
                want[key] = v.decode("latin-1")
        assert not lost, ("lost with a known table", block)
        assert out == want, (out, want)


def _hpack_roundtrip(s: Script, mode: int) -> None:
    enc = hpack.Encoder()
    ours = HpackTable(True)
    names = list(SELECT) + [b"x-other", b"cookie", b"accept"]
    while s.more():
        op = s.u8()
        if op & 0x80:
            enc.header_table_size = s.u16() % 4097  # within the default SETTINGS value
        hdrs = []
        for _ in range(op & 7):
            name = names[s.u8() % len(names)]
            value = s.blob()[:200]
            sens = bool(s.u8() & 1)
            hdrs.append(hpack.HeaderTuple(name, value) if not sens
                        else hpack.NeverIndexedHeaderTuple(name, value))
        block = enc.encode(hdrs, huffman=bool(mode & 2))
        out: dict[str, str] = {}
        lost = ours.decode(block, SELECT, out, True)
        check_hpack(ours)
        want = {SELECT[n]: v.decode("latin-1") for n, v in hdrs if n in SELECT}
        assert not lost and out == want, (out, want)


def seeds_hpack() -> list[bytes]:
    enc = hpack.Encoder()
    blocks = [enc.encode([(":method", "GET"), (":path", "/a"), (":authority", "svc"),
                          ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-"
                                          "b7ad6b7169203331-01"), ("x-custom", "v" * 40)]),
              enc.encode([(":method", "GET"), (":path", "/b"), (":authority", "svc")]),
              enc.encode([(":status", "200"), ("content-type", "application/grpc")],
                         huffman=False)]
    mode0 = bytes([0]) + b"".join(blob(b) + b"\0" for b in blocks)
    late = bytes([2]) + b"".join(blob(b) + b"\0" for b in blocks[1:])
    cut = bytes([0]) + blob(blocks[0][:20]) + b"\x80" + blob(blocks[1]) + b"\0"
    rt = bytes([1, 0x83, 0x01, 0x00, 1, 2, 0, 3, b"/x"[0]]) + blob(b"GET") + b"\0"
    return [mode0, late, cut, rt, bytes([3, 5]) + (b"\0" + blob(b"v" * 30) + b"\1") * 5]


# ---- the connection table, fed ring-buffer records ------------------------------

def fuzz_conn(data: bytes) -> Stats:
    """The agent's path: u16-length-prefixed ring records, each decoded
    (errors counted) and handed to a ConnectionTable, with idle expiry and
    correlator flushes in between; all counts must add up."""
    s = Script(data)
    spans: list = []
    table, stats = _table(spans)
    decoded = 0
    last_ts = 0
    while s.more():
        rec = s.blob()
        if len(rec) == 1:  # a one-byte record is a housekeeping tick
            now = last_ts + (rec[0] << 20)
            table.expire(now, 1 << 28)
            table.correlator.flush(now)
            check_table(table)
            continue
        try:
            ev = events.decode(rec)
        except DecodeError:
            stats.decode_errors += 1
            continue
        decoded += 1
        last_ts = ev.ts_exit if isinstance(ev, DataEvent) else ev.ts
        table.handle(ev)
    assert stats.events_handled == decoded
    return _finish(table, stats, spans)


def _sample_events() -> list:
    from tests.unit.synth import (
        ROLE_CLIENT,
        ROLE_SERVER,
        ROLE_UNKNOWN,
        Clock,
        Conversation,
        http_request,
        http_response,
    )
    clock = Clock()
    srv = Conversation(clock, conn_id=1, role=ROLE_SERVER)
    cli = Conversation(clock, conn_id=2, role=ROLE_CLIENT, lport=40001, rport=9090,
                       raddr="10.0.0.3")
    late = Conversation(clock, conn_id=3, role=ROLE_UNKNOWN, capture_bytes=64)
    srv.open()
    srv.request(http_request("GET", "/front"))
    cli.open()
    cli.request(http_request("GET", "/back"))
    cli.response(http_response(200, body=b"b"))
    srv.response(http_response(200, body=b"f" * 700))
    late.request(http_request("POST", "/late", body=b"z" * 100))
    late.response(http_response(500))
    cli.close()
    srv.close()
    evs = [e for c in (srv, cli, late) for e in c.events]
    evs.sort(key=lambda e: e.ts_exit if isinstance(e, DataEvent) else e.ts)
    ip6 = OpenEvent(9, 1, 2, 3, ROLE_SERVER, 5, 6, 7, events.AF_INET6, "::1", 80, "fe80::1",
                    5000, "six")
    return [*evs, ip6]


def seeds_conn() -> list[bytes]:
    from tests.unit.synth import ROLE_SERVER
    evs = _sample_events()
    rec = [events.encode(e) for e in evs]
    h2 = []
    from tests.unit.synth import Clock
    conv = None
    from tests.unit.h2synth import H2Pair  # noqa: F401 (recording built below)
    rec2 = h2_recording()
    from tests.unit.synth import Conversation
    conv = Conversation(Clock(), conn_id=4, role=ROLE_SERVER, capture_bytes=4096)
    conv.open()
    for d, payload in rec2:
        conv.syscall(conv.request_dir if d == "c2s" else conv.response_dir, payload)
    conv.close()
    h2 = [events.encode(e) for e in conv.events]
    return [b"".join(blob(r) for r in rec),
            b"".join(blob(r) for r in rec[:6]) + blob(b"\x10") + b"".join(blob(r) for r in rec[6:]),
            b"".join(blob(r) for r in h2),
            blob(b"\x07" + b"\0" * 40) + blob(rec[0][:30]) + blob(rec[1])]


TARGETS: dict[str, tuple[Callable[[bytes], None], Callable[[], list[bytes]]]] = {
    "events": (fuzz_events, seeds_events),
    "http1": (fuzz_http1, seeds_http1),
    "http2": (fuzz_http2, seeds_http2),
    "hpack": (fuzz_hpack, seeds_hpack),
    "conn": (fuzz_conn, seeds_conn),
}
