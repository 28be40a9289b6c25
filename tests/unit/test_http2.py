"""HTTP/2 and gRPC: frames, HPACK, streams, capture gaps, mid-stream joins.

The byte streams come from a real h2 client/server pair (tests/unit/h2synth.py)
replayed as the kernel would report them.
"""

from __future__ import annotations

import hpack
import pytest
from hyperframe.frame import ContinuationFrame, DataFrame, GoAwayFrame, HeadersFrame

from tests.unit.h2synth import H2Pair, grpc_frame
from tests.unit.synth import (
    EGRESS,
    INGRESS,
    ROLE_CLIENT,
    ROLE_SERVER,
    ROLE_UNKNOWN,
    Clock,
    Conversation,
    feed,
)
from tracer.conn import ConnectionTable
from tracer.protocols import grpc
from tracer.protocols.hpack_partial import HpackTable
from tracer.protocols.http2 import PREFACE, SELECT, looks_like_frames
from tracer.stats import Stats

N = 23
OFFSET = 1_700_000_000_000_000_000
ROLES = [ROLE_SERVER, ROLE_CLIENT]


def run(conv: Conversation, *, hook=None):
    spans = []
    stats = Stats()
    t = ConnectionTable(spans.append, stats, OFFSET, h2_capture=hook)
    feed(t, conv.events)
    return spans, stats


def replay(pair: H2Pair, role: int, **kw):
    c = pair.conversation(role, **kw)
    if role != ROLE_UNKNOWN:
        c.events.insert(0, c.open())
        c.events.pop()  # open() appended it too
    c.close()
    return run(c)


def assert_clean(stats, spans):
    assert stats.spans_emitted == spans
    for name in ("unparsed_bytes", "unparsed_connections", "incomplete_requests",
                 "unpaired_responses", "h2_headers_lost", "h2_framing_lost",
                 "grpc_framing_lost"):
        assert getattr(stats, name) == 0, name


STATUSES = (200, 201, 404, 500, 503)


@pytest.mark.parametrize("role", ROLES)
def test_sequential_exchanges_exact(role):
    p = H2Pair()
    for i in range(N):
        method = "POST" if i % 3 == 1 else "GET"
        sid = p.request(method, f"/items/{i}?q={i}", {"x-request-id": f"req-{i}"},
                        body=b"b" * i if method == "POST" else b"")
        p.respond(sid, STATUSES[i % 5], body=b"r" * (i * 11))
    spans, stats = replay(p, role)
    assert_clean(stats, N)
    kind = "server" if role == ROLE_SERVER else "client"
    assert [(s.kind, s.protocol, s.method, s.path, s.query, s.status) for s in spans] == [
        (kind, "http2", "POST" if i % 3 == 1 else "GET", f"/items/{i}", f"q={i}",
         STATUSES[i % 5]) for i in range(N)]
    for i, s in enumerate(spans):
        d = s.to_dict()
        assert d["attributes"]["http.request.header.x-request-id"] == f"req-{i}"
        assert d["attributes"]["network.protocol.version"] == "2"
        assert d["attributes"]["server.address"] == "svc.test"
        assert s.duration_ns > 0


@pytest.mark.parametrize("role", ROLES)
def test_latency_rules(role):
    p = H2Pair()
    sid = p.request("POST", "/up", body=b"x" * 10, end=False)
    p.data(sid, b"y" * 10, end=True)
    p.respond(sid, 200, body=[b"a" * 5, b"b" * 5], trailers={"x-t": "1"})
    c = p.conversation(role)
    first_req = len(p.chunks) - 5  # HEADERS+DATA write, DATA write, 2 DATA writes, trailers
    evs = [e for e in c.events]
    spans, stats = run(c)
    assert_clean(stats, 1)
    s = spans[0]
    req_ev = evs[first_req]
    last_ev = evs[-1]
    if role == ROLE_SERVER:
        assert s.start_ktime == req_ev.ts_exit
    else:
        assert s.start_ktime == req_ev.ts_enter
    assert s.end_ktime == last_ev.ts_exit  # the trailers
    assert s.req_last_exit == evs[first_req + 1].ts_exit


@pytest.mark.parametrize("role", ROLES)
def test_concurrent_streams_out_of_order(role):
    p = H2Pair()
    sids = [p.request("GET", f"/c/{i}", flush=False) for i in range(8)]
    p.flush_client()  # all 8 HEADERS in one write
    # responses interleaved: headers of all, then DATA in reverse, ends in a shuffle
    for i, sid in enumerate(sids):
        p.server.send_headers(sid, [(":status", str(200 + i))])
    p.flush_server()
    for sid in reversed(sids):
        p.server.send_data(sid, b"part1-%d" % sid)
    p.flush_server()
    for sid in sids[1::2] + sids[0::2]:
        p.server.send_data(sid, b"end", end_stream=True)
        p.flush_server()
    spans, stats = replay(p, role)
    assert_clean(stats, 8)
    got = sorted((s.path, s.status) for s in spans)
    assert got == sorted((f"/c/{i}", 200 + i) for i in range(8))
    # completion order is the order the END_STREAMs went out
    assert [s.path for s in spans] == [f"/c/{i}" for i in [1, 3, 5, 7, 0, 2, 4, 6]]


def test_hpack_dynamic_table_exercised():
    p = H2Pair()
    sizes = []
    for i in range(N):
        before = sum(len(d) for _, d in p.chunks)
        sid = p.request("GET", "/same/path", {"user-agent": "agent/1.0 long enough",
                                              "x-request-id": f"id-{i % 4}",
                                              "traceparent": f"00-{'a' * 31}{i % 9 + 1}-"
                                                             f"{'b' * 16}-01"})
        sizes.append(sum(len(d) for _, d in p.chunks) - before)
        p.respond(sid, 200, {"x-resp": "same"})
    # repeated headers became indexed: later requests are much smaller on the wire
    assert sizes[-1] < sizes[0] / 2
    assert len(p.client.encoder.header_table.dynamic_entries) >= 4
    spans, stats = replay(p, ROLE_SERVER)
    assert_clean(stats, N)
    for i, s in enumerate(spans):
        assert s.path == "/same/path"
        assert s.request_headers["user-agent"] == "agent/1.0 long enough"
        assert s.request_headers["x-request-id"] == f"id-{i % 4}"
        assert s.trace_id == "a" * 31 + str(i % 9 + 1)  # correlation: header source
        assert s.parent_span_id == "b" * 16


def _frames_conversation(role, c2s: list[bytes], s2c: list[bytes]):
    c = Conversation(Clock(), role=role)
    c.open()
    for data in c2s:
        c.request(data)
    for data in s2c:
        c.response(data)
    c.close()
    return c


def test_continuation_frames():
    enc = hpack.Encoder()
    block = enc.encode([(":method", "GET"), (":scheme", "http"), (":path", "/cont"),
                        (":authority", "a"), ("x-big", "v" * 300), ("user-agent", "ua")])
    a, b, c3 = block[:7], block[7:100], block[100:]
    h = HeadersFrame(1, a, flags=["END_STREAM"])
    c1 = ContinuationFrame(1, b)
    c2 = ContinuationFrame(1, c3, flags=["END_HEADERS"])
    req = PREFACE + h.serialize() + c1.serialize() + c2.serialize()
    resp_block = hpack.Encoder().encode([(":status", "204")])
    resp = HeadersFrame(1, resp_block, flags=["END_HEADERS", "END_STREAM"]).serialize()
    # the CONTINUATION split across syscalls too
    cut = len(PREFACE) + 9 + len(a) + 20
    spans, stats = run(_frames_conversation(ROLE_SERVER, [req[:cut], req[cut:]], [resp]))
    assert_clean(stats, 1)
    assert (spans[0].path, spans[0].status, spans[0].request_headers["user-agent"]) == \
        ("/cont", 204, "ua")


def test_frame_interleaved_in_header_block_loses_framing():
    enc = hpack.Encoder()
    block = enc.encode([(":method", "GET"), (":path", "/x")])
    bad = (HeadersFrame(1, block[:2]).serialize()
           + HeadersFrame(3, block[2:], flags=["END_HEADERS"]).serialize())
    spans, stats = run(_frames_conversation(ROLE_SERVER, [PREFACE + bad], []))
    assert spans == [] and stats.h2_framing_lost == 1


@pytest.mark.parametrize("role", ROLES)
def test_rst_stream(role):
    p = H2Pair()
    a = p.request("GET", "/cancelled-early")
    p.client.reset_stream(a)
    p.flush_client()
    b = p.request("GET", "/cancelled-late")
    p.server.send_headers(b, [(":status", "200")])
    p.server.send_data(b, b"partial")
    p.flush_server()
    p.client.reset_stream(b, error_code=8)
    p.flush_client()
    c = p.request("GET", "/ok")
    p.respond(c, 200)
    spans, stats = replay(p, role)
    assert [(s.path, s.status) for s in spans] == [("/cancelled-late", 200), ("/ok", 200)]
    assert spans[0].attributes()["http2.rst_stream.error_code"] == 8
    assert stats.h2_streams_reset == 2 and stats.incomplete_requests == 1


def test_goaway_drops_unprocessed_streams():
    p = H2Pair()
    sids = [p.request("GET", f"/g/{i}") for i in range(3)]
    p.respond(sids[0], 200)
    p.respond(sids[1], 200)
    p.chunks.append(("s2c", GoAwayFrame(0, last_stream_id=sids[1]).serialize()))
    c = p.conversation(ROLE_SERVER)  # no close: the GOAWAY alone ends stream 5
    spans, stats = run(c)
    assert [s.path for s in spans] == ["/g/0", "/g/1"]
    assert stats.incomplete_requests == 1


GRPC_REQ_HDRS = {"content-type": "application/grpc"}


@pytest.mark.parametrize("role", ROLES)
def test_grpc_unary_statuses_and_trailers_only(role):
    p = H2Pair()
    expected = []
    for i in range(N):
        sid = p.request("POST", f"/bench.Catalog/GetItem{i % 2}", body=grpc_frame(b"q" * i),
                        grpc=True)
        code = (0, 0, 5, 0, 13)[i % 5]
        if code == 5:  # trailers-only: one HEADERS with END_STREAM
            p.respond(sid, 200, {"content-type": "application/grpc", "grpc-status": "5",
                                 "grpc-message": "no such item"})
        else:
            p.respond(sid, 200, GRPC_REQ_HDRS, body=grpc_frame(b"r" * (2 * i)),
                      trailers={"grpc-status": str(code)})
        expected.append((f"/bench.Catalog/GetItem{i % 2}", code, i, 0 if code == 5 else 2 * i))
    spans, stats = replay(p, role)
    assert_clean(stats, N)
    for s, (path, code, qlen, rlen) in zip(spans, expected, strict=True):
        a = s.to_dict()["attributes"]
        assert (s.protocol, s.method, s.path, s.status) == ("grpc", "POST", path, 200)
        assert a["rpc.system"] == "grpc" and a["rpc.service"] == "bench.Catalog"
        assert a["rpc.method"] == path.rsplit("/", 1)[1]
        assert a["rpc.grpc.status_code"] == code
        assert a["rpc.grpc.request.messages"] == 1 and a["rpc.grpc.request.bytes"] == qlen
        assert a["rpc.grpc.response.messages"] == (0 if code == 5 else 1)
        assert a["rpc.grpc.response.bytes"] == rlen
        if code == 5:
            assert a["rpc.grpc.status_message"] == "no such item"


@pytest.mark.parametrize("role", ROLES)
def test_grpc_server_streaming_and_bidi(role):
    p = H2Pair(max_frame=16384)
    # server streaming: 7 messages, one split across two DATA frames
    s1 = p.request("POST", "/bench.Catalog/ListItems", body=grpc_frame(b"n"), grpc=True)
    msgs = [grpc_frame(b"item-%d" % i * 10) for i in range(7)]
    wire = b"".join(msgs)
    p.respond(s1, 200, GRPC_REQ_HDRS, body=[wire[:3], wire[3:50], wire[50:]],
              trailers={"grpc-status": "0"})
    # bidi: 4 messages each way, alternating
    s2 = p.request("POST", "/bench.Chat/Talk", grpc=True, end=False)
    p.server.send_headers(s2, [(":status", "200"), ("content-type", "application/grpc")])
    p.flush_server()
    for i in range(4):
        p.data(s2, grpc_frame(b"c" * i), end=i == 3)
        p.data(s2, grpc_frame(b"s" * (i + 1)), client=False)
    p.server.send_headers(s2, [("grpc-status", "0")], end_stream=True)
    p.flush_server()
    spans, stats = replay(p, role)
    assert_clean(stats, 2)
    a1, a2 = (s.attributes() for s in spans)
    assert (a1["rpc.grpc.response.messages"], a1["rpc.grpc.response.bytes"]) == \
        (7, sum(len(m) - 5 for m in msgs))
    assert a1["rpc.grpc.request.messages"] == 1
    assert (a2["rpc.grpc.request.messages"], a2["rpc.grpc.response.messages"]) == (4, 4)
    assert (a2["rpc.grpc.request.bytes"], a2["rpc.grpc.response.bytes"]) == (6, 10)
    # the span covers the whole stream: it ends with the trailers
    assert spans[1].end_ktime == p.conversation(role).events[-1].ts_exit


def _big_then_headers(p: H2Pair) -> None:
    """One response write: /big's HEADERS + 3000 bytes of DATA, then /next's HEADERS."""
    a = p.request("GET", "/big")
    b = p.request("GET", "/next")
    p.server.send_headers(a, [(":status", "200")])
    p.server.send_data(a, b"z" * 3000, end_stream=True)
    p.server.send_headers(b, [(":status", "404"), ("x-late", "v")], end_stream=True)
    p.flush_server()
    c = p.request("GET", "/after")
    p.respond(c, 200, {"x-late": "v"})


def test_h2_capture_size_keeps_headers_behind_data():
    p = H2Pair()
    _big_then_headers(p)
    spans, stats = replay(p, ROLE_SERVER, capture=4096)
    assert_clean(stats, 3)
    assert [(s.path, s.status) for s in spans] == [("/big", 200), ("/next", 404),
                                                   ("/after", 200)]


def test_capture_gap_over_a_frame_header_resyncs():
    """With a 512-byte capture the HEADERS after the DATA are in the gap: the
    framing is lost there (counted), the next write resyncs, and later spans
    decode what is static or literal, counting the loss."""
    p = H2Pair()
    _big_then_headers(p)
    spans, stats = replay(p, ROLE_SERVER, capture=512)
    assert [s.path for s in spans] == ["/big", "/after"]
    assert stats.h2_framing_lost == 1 and stats.incomplete_requests == 1  # /next
    after = spans[1]
    assert after.status == 200  # :status 200 is a static index


def test_capture_gap_cuts_a_header_block():
    """The HEADERS frame header is captured but its block is cut: decode the
    captured part, count the loss, never guess, and keep the framing."""
    enc = hpack.Encoder()
    req = PREFACE
    for sid, path in ((1, "/a"), (3, "/b")):
        req += HeadersFrame(sid, enc.encode([(":method", "GET"), (":path", path)]),
                            flags=["END_HEADERS", "END_STREAM"]).serialize()
    senc = hpack.Encoder()
    block = senc.encode([(":status", "200"), ("x-long", "L" * 200)])
    resp = HeadersFrame(1, senc.encode([(":status", "404")]),
                        flags=["END_HEADERS", "END_STREAM"]).serialize()
    resp += HeadersFrame(3, block, flags=["END_HEADERS", "END_STREAM"]).serialize()
    c = Conversation(Clock(), role=ROLE_SERVER, capture_bytes=len(resp) - 100)
    c.open()
    c.request(req)
    c.response(resp)
    c.close()
    spans, stats = run(c)
    assert [(s.path, s.status) for s in spans] == [("/a", 404), ("/b", 200)]
    assert spans[1].attributes()["tracer.h2.headers_lost"] is True
    assert stats.h2_headers_lost == 1 and stats.h2_framing_lost == 0


def test_one_write_two_frames_header_in_gap():
    enc = hpack.Encoder()
    req = (PREFACE + HeadersFrame(1, enc.encode([(":method", "GET"), (":path", "/a")]),
                                  flags=["END_HEADERS", "END_STREAM"]).serialize())
    senc = hpack.Encoder()
    body = HeadersFrame(1, senc.encode([(":status", "200")]), flags=["END_HEADERS"]).serialize()
    body += DataFrame(1, b"x" * 200).serialize() + DataFrame(1, b"", flags=["END_STREAM"]) \
        .serialize()
    c = Conversation(Clock(), role=ROLE_SERVER, capture_bytes=100)
    c.open()
    c.request(req)
    c.response(body)  # the END_STREAM frame header is past the 100-byte capture
    req2 = HeadersFrame(3, enc.encode([(":method", "GET"), (":path", "/b")]),
                        flags=["END_HEADERS", "END_STREAM"]).serialize()
    c.request(req2)
    c.response(HeadersFrame(3, senc.encode([(":status", "200")]),
                            flags=["END_HEADERS", "END_STREAM"]).serialize())
    c.close()
    spans, stats = run(c)
    assert stats.h2_framing_lost == 1
    # /a never saw its end; /b: the response direction resynced, its HPACK
    # table is unknown but :status 200 is a static index
    assert [(s.path, s.status) for s in spans] == [("/b", 200)]
    assert stats.incomplete_requests == 1  # /a, at close


def test_midstream_join_learns_role_and_counts_header_loss():
    p = H2Pair()
    for _ in range(3):
        sid = p.request("POST", "/bench.Catalog/GetItem", body=grpc_frame(b"q"), grpc=True,
                        headers={"x-request-id": "fixed"})
        p.respond(sid, 200, GRPC_REQ_HDRS, body=grpc_frame(b"r"), trailers={"grpc-status": "0"})
    skip = len(p.chunks)
    for i in range(N):
        sid = p.request("POST", "/bench.Catalog/GetItem", body=grpc_frame(b"q"), grpc=True,
                        headers={"x-request-id": "fixed", "x-n": str(i)})
        p.respond(sid, 200, GRPC_REQ_HDRS, body=grpc_frame(b"r" * i),
                  trailers={"grpc-status": "0"})
    got = []
    c = p.conversation(ROLE_UNKNOWN, skip=skip)  # no OpenEvent: opened before the tracer
    spans, stats = run(c, hook=got.append)
    assert len(got) == 1 and stats.h2_midstream == 1 and stats.h2_connections == 1
    assert len(spans) == N
    assert all(s.kind == "server" and s.method == "POST" for s in spans)
    # path and content-type were indexed in the client's table before we
    # joined: unknown, so neither the path nor "grpc" is guessed
    for i, s in enumerate(spans):
        assert s.path in ("", "/bench.Catalog/GetItem")
        if s.protocol == "grpc":
            assert s.attributes()["rpc.grpc.response.bytes"] == i
    assert stats.h2_headers_lost == sum(1 for s in spans
                                        if s.attributes().get("tracer.h2.headers_lost"))
    assert stats.h2_headers_lost >= 1
    assert stats.unpaired_responses == 0


def test_server_settings_first_detected():
    p = H2Pair(server_first=True)
    sid = p.request("GET", "/sf")
    p.respond(sid, 200)
    spans, stats = replay(p, ROLE_SERVER)
    assert p.chunks[0][0] == "s2c"
    assert_clean(stats, 1)
    assert spans[0].path == "/sf"


def test_looks_like_frames():
    p = H2Pair()
    sid = p.request("GET", "/x", body=b"abc")
    p.respond(sid, 200, body=b"z" * 50)
    for _, data in p.chunks[1:]:
        assert looks_like_frames(data, len(data)), data
    assert not looks_like_frames(b"GET / HTTP/1.1\r\n\r\n", 18)
    assert not looks_like_frames(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 517)
    assert not looks_like_frames(b"", 10)
    assert not looks_like_frames(bytes(range(40)), 40)


def test_hpack_partial_matches_hpack_decoder():
    enc = hpack.Encoder()
    dec = hpack.Decoder()
    t = HpackTable()
    keys = {k.decode() for k in SELECT}
    for i in range(200):
        hdrs = [(":method", "POST"), (":path", f"/p/{i % 7}"), ("user-agent", "u" * (i % 50)),
                ("x-request-id", f"r{i % 13}"), ("other", "o" * (i % 300))]
        if i == 100:
            enc.header_table_size = 256  # a size update in the next block
        block = enc.encode(hdrs)
        out = {}
        assert not t.decode(block, SELECT, out)
        assert out == {k: v for k, v in dec.decode(block) if k in keys}


def test_hpack_unknown_table_decodes_static_and_literal_only():
    enc = hpack.Encoder()
    enc.encode([(":path", "/seen-before"), ("user-agent", "u1")])
    t = HpackTable(known=False)
    out = {}
    lost = t.decode(enc.encode([(":method", "GET"), (":path", "/seen-before"),
                                ("user-agent", "new")]), SELECT, out)
    # :path was indexed before we joined; user-agent's name is static, its value literal
    assert lost and out == {":method": "GET", "user-agent": "new"}
    # an entry inserted after we joined is known from then on
    out = {}
    assert not t.decode(enc.encode([(":method", "GET"), ("user-agent", "new")]), SELECT, out)
    assert out == {":method": "GET", "user-agent": "new"}


def test_grpc_counter_prefix_split_and_gap():
    m = grpc.MessageCounter()
    wire = grpc_frame(b"a" * 10) + grpc_frame(b"") + grpc_frame(b"b" * 3)
    for i in range(len(wire)):
        m.feed(wire, i, 1, len(wire))
    assert (m.count, m.total, m.lost) == (3, 13, False)
    g = grpc.MessageCounter()
    g.feed(wire, 0, len(wire), 2)  # the prefix is cut by the capture
    assert g.lost
    assert grpc.split_path("/a.B/C") == ("a.B", "C")
    assert grpc.split_path("/nope") == ("", "")


def test_http1_unchanged_next_to_h2():
    from tests.unit.synth import http_request, http_response
    c = Conversation(Clock(), role=ROLE_UNKNOWN)
    c.send(INGRESS, http_request("GET", "/h1"))
    c.send(EGRESS, http_response(200, body=b"ok"))
    spans, stats = run(c)
    assert [(s.protocol, s.path) for s in spans] == [("http1", "/h1")]
    assert stats.h2_connections == 0


def test_kernel_capture_hook_updates_only_the_same_connection():
    from tracer.conn import kernel_capture_hook
    from tracer.events import ConnInfoC, ConnKeyC, DataEvent

    class FakeMap:
        def __init__(self):
            self.data = {}
            self.flags = []

        def lookup(self, key):
            return self.data.get(key)

        def update(self, key, value, flags=0):
            self.data[key] = value
            self.flags.append(flags)

    m = FakeMap()
    key = bytes(ConnKeyC(1000, 5))
    m.data[key] = bytes(ConnInfoC(conn_id=77, role=0, tracked=1))
    hook = kernel_capture_hook(m)
    ev = DataEvent(99, 1000, 1001, 5, 0, INGRESS, 1, 1, 2, 10, b"x", "app")
    hook(ev)  # another conn_id on the same fd: a reused fd, left alone
    assert ConnInfoC.from_buffer_copy(m.data[key]).capture == 0
    ev.conn_id = 77
    hook(ev)
    info = ConnInfoC.from_buffer_copy(m.data[key])
    assert (info.capture, info.sniffed, info.conn_id) == (4096, 1, 77)
    assert m.flags == [2]  # BPF_EXIST
    ev.fd = 6
    hook(ev)  # closed meanwhile: nothing to do
    assert len(m.data) == 1


def test_padded_and_priority_headers_and_data():
    enc = hpack.Encoder()
    block = enc.encode([(":method", "POST"), (":path", "/pkg.S/M"),
                        ("content-type", "application/grpc")])
    h = HeadersFrame(1, block, pad_length=7, depends_on=0, stream_weight=15,
                     flags=["END_HEADERS", "PADDED", "PRIORITY"])
    d = DataFrame(1, grpc_frame(b"abc"), pad_length=4, flags=["PADDED", "END_STREAM"])
    senc = hpack.Encoder()
    resp = (HeadersFrame(1, senc.encode([(":status", "200")]), flags=["END_HEADERS"]).serialize()
            + DataFrame(1, grpc_frame(b"xy"), pad_length=3, flags=["PADDED"]).serialize()
            + HeadersFrame(1, senc.encode([("grpc-status", "0")]),
                           flags=["END_HEADERS", "END_STREAM"]).serialize())
    spans, stats = run(_frames_conversation(ROLE_SERVER, [PREFACE + h.serialize() + d.serialize()],
                                            [resp]))
    assert_clean(stats, 1)
    a = spans[0].attributes()
    assert spans[0].path == "/pkg.S/M" and a["rpc.grpc.status_code"] == 0
    assert (a["rpc.grpc.request.bytes"], a["rpc.grpc.response.bytes"]) == (3, 2)


@pytest.mark.parametrize("server_first", [False, True])
def test_h2_contexts_waiting_across_a_housekeeping_tick_still_pair(server_first):
    """A gRPC request whose two ends are seen on either side of a 1 s
    housekeeping tick still links server to client by connection. HTTP/2
    contexts once started without a timestamp (start_ts 0), so flush() took
    them for ten-second-old ones and dropped the waiting side."""
    pair = H2Pair()
    setup = len(pair.chunks)
    sids = [pair.request("POST", "/pkg.Svc/M", body=grpc_frame(b"x" * i), grpc=True)
            for i in range(1, N + 1)]
    for sid in sids:
        pair.respond(sid, 200, body=grpc_frame(b"ok"), trailers={"grpc-status": "0"})
    clock = Clock(t0=3600 * 10**9)  # ktime an hour after boot
    cli = Conversation(clock, 1, ROLE_CLIENT, 4096, pid=100, tid=100, comm="cli",
                       laddr="10.0.0.2", lport=40000, raddr="10.0.0.1", rport=50051)
    srv = Conversation(clock, 2, ROLE_SERVER, 4096, pid=200, tid=200, comm="srv",
                       laddr="10.0.0.1", lport=50051, raddr="10.0.0.2", rport=40000)
    spans = []
    stats = Stats()
    t = ConnectionTable(spans.append, stats, OFFSET)
    t.handle(cli.open())
    t.handle(srv.open())
    # each chunk is a write on one end, then a read of it on the other. From
    # the first request on, the later side's events are seen only after the
    # tick (each end's events come from its own CPU and ring order).
    later = cli if server_first else srv
    late = []
    for i, (direction, data) in enumerate(pair.chunks):
        w, r = (cli, srv) if direction == "c2s" else (srv, cli)
        for conv, d in ((w, EGRESS), (r, INGRESS)):
            ev = conv.syscall(d, data)
            if i >= setup and conv is later:
                late.append(ev)
            else:
                t.handle(ev)
    # the tick, 1 ms after the last event seen
    t.correlator.flush(clock.t + 1_000_000)
    feed(t, late)
    t.handle(cli.close())
    t.handle(srv.close())
    t.correlator.close()
    client_spans = {s.span_id: s for s in spans if s.kind == "client"}
    server_spans = [s for s in spans if s.kind == "server"]
    assert len(client_spans) == len(server_spans) == N
    for s in server_spans:
        assert s.correlation_source == "connection"
        parent = client_spans[s.parent_span_id]
        assert (parent.path, parent.trace_id) == (s.path, s.trace_id)
    assert stats.correlation_unresolved == 0
