"""ConnectionTable: events in, spans out, every loss counted."""

from __future__ import annotations

import pytest

from tests.unit.synth import (
    EGRESS,
    INGRESS,
    ROLE_CLIENT,
    ROLE_SERVER,
    ROLE_UNKNOWN,
    Clock,
    Conversation,
    expected_bounds,
    feed,
    http_request,
    http_response,
    merge,
)
from tracer.conn import ConnectionTable
from tracer.events import DataEvent
from tracer.spans import Span
from tracer.stats import Stats

N = 23  # a prime number of exchanges: off-by-one pairing cannot hide
OFFSET = 1_700_000_000_000_000_000

STATUSES = (200, 201, 202, 203, 206, 400, 404, 500, 503)  # statuses that carry a body


def status_of(i: int) -> int:
    return STATUSES[i % len(STATUSES)]


SCHEMA_KEYS = {
    "schema", "trace_id", "span_id", "parent_span_id", "kind", "protocol", "method", "path",
    "status", "start_time_unix_nano", "duration_ns", "pid", "tid", "comm", "netns",
    "cgroup_id", "local_addr", "local_port", "peer_addr", "peer_port", "tls", "attributes",
    "correlation",
}


def table(capture=512, **kw):
    spans: list[Span] = []
    stats = Stats()
    return ConnectionTable(spans.append, stats, OFFSET, capture, **kw), spans, stats


def assert_clean(stats, *, spans):
    assert stats.spans_emitted == spans
    for name in ("unparsed_bytes", "unparsed_connections", "malformed_messages",
                 "truncated_messages", "incomplete_requests", "unpaired_responses",
                 "framing_lost"):
        assert getattr(stats, name) == 0, name


@pytest.mark.parametrize("role", [ROLE_SERVER, ROLE_CLIENT])
def test_keepalive_exchanges_exact(role):
    t, spans, stats = table()
    c = Conversation(conn_id=9, role=role, pid=321, tid=322, comm="svc")
    c.open()
    expected = []
    for i in range(N):
        method = ("GET", "POST", "PUT")[i % 3]
        body = b"x" * (i * 7) if method != "GET" else b""
        req_evs, resp_evs = c.exchange(
            http_request(method, f"/items/{i}?page={i}", {"User-Agent": "t/1"}, body),
            http_response(status_of(i), body=b"r" * i))
        expected.append((method, f"/items/{i}", status_of(i),
                         expected_bounds(role, req_evs, resp_evs)))
    c.close()
    feed(t, c.events)
    assert len(spans) == N
    assert_clean(stats, spans=N)
    assert stats.connections_total == 1 and stats.connections_open == 0
    kind = "server" if role == ROLE_SERVER else "client"
    for s, (method, path, status, (start, end)) in zip(spans, expected, strict=True):
        d = s.to_dict()
        assert set(d) == SCHEMA_KEYS
        assert (d["kind"], d["method"], d["path"], d["status"]) == (kind, method, path, status)
        assert d["start_time_unix_nano"] == start + OFFSET
        assert d["duration_ns"] == end - start > 0
        assert (d["pid"], d["tid"], d["comm"]) == (321, 322, "svc")
        assert (d["local_addr"], d["local_port"], d["peer_addr"], d["peer_port"]) == (
            "10.0.0.1", 8080, "10.0.0.2", 40000)
        assert (d["netns"], d["cgroup_id"], d["tls"], d["protocol"]) == (
            4026532000, 4242, False, "http1")
        assert d["correlation"] == {"source": "none", "confidence": 0.0}
        assert d["parent_span_id"] is None
        assert len(d["trace_id"]) == 32 and len(d["span_id"]) == 16
        int(d["trace_id"], 16), int(d["span_id"], 16)
        assert d["attributes"]["url.query"] == path.replace("/items/", "page=")
        assert d["attributes"]["user_agent.original"] == "t/1"
    assert len({s.span_id for s in spans}) == N


def test_server_latency_uses_read_exit_and_write_exit():
    # A blocking read that waited 5 ms before the request arrived must not count.
    t, spans, _ = table()
    c = Conversation(role=ROLE_SERVER)
    c.open()
    ev = c.syscall(INGRESS, http_request("GET", "/slow"))
    ev.ts_enter -= 5_000_000
    c.clock.advance(1_000_000)  # the handler works 1 ms
    w1 = c.syscall(EGRESS, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
    w2 = c.syscall(EGRESS, b"done")
    feed(t, c.events)
    (s,) = spans
    assert s.start_ktime == ev.ts_exit and s.end_ktime == w2.ts_exit
    assert s.duration_ns == w2.ts_exit - ev.ts_exit
    assert (s.req_first_enter, s.resp_first_enter, s.resp_last_enter) == (
        ev.ts_enter, w1.ts_enter, w2.ts_enter)


def test_client_latency_uses_write_enter_and_read_exit():
    t, spans, _ = table()
    c = Conversation(role=ROLE_CLIENT)
    c.open()
    w = c.request(http_request("POST", "/c", body=b"abc"), splits=[10])
    r = c.response(http_response(201, body=b"created"), splits=[3, 20])
    feed(t, c.events)
    (s,) = spans
    assert s.kind == "client"
    assert s.start_ktime == w[0].ts_enter and s.end_ktime == r[-1].ts_exit
    assert s.to_dict()["attributes"]["server.port"] == 40000


def test_many_connections_interleaved():
    clock = Clock()
    convs = [Conversation(clock, conn_id=100 + i, rport=50000 + i, tid=2000 + i)
             for i in range(N)]
    for c in convs:
        c.open()
    for c in convs:
        c.request(http_request("GET", f"/c{c.conn_id}"))
    for c in reversed(convs):
        c.response(http_response(200, body=b"ok"))
        c.close()
    t, spans, stats = table()
    feed(t, merge(*convs))
    assert sorted(s.path for s in spans) == sorted(f"/c{c.conn_id}" for c in convs)
    assert all(s.peer_port == 50000 + s.conn_id - 100 and s.tid == 2000 + s.conn_id - 100
               for s in spans)
    assert_clean(stats, spans=N)
    assert stats.connections_total == N and stats.connections_open == 0 and len(t) == 0


def test_pipelining_pairs_in_order():
    t, spans, stats = table()
    c = Conversation(role=ROLE_SERVER)
    c.open()
    reqs = b"".join(http_request("GET", f"/p{i}") for i in range(5))
    first_read = c.syscall(INGRESS, reqs[:100])
    second_read = c.syscall(INGRESS, reqs[100:])
    resps = [http_response(status_of(i), body=b"#" * i) for i in range(5)]
    w1 = c.syscall(EGRESS, b"".join(resps[:2]))
    w2 = c.syscall(EGRESS, b"".join(resps[2:]))
    feed(t, c.events)
    assert [(s.path, s.status) for s in spans] == [(f"/p{i}", status_of(i)) for i in range(5)]
    per_req = len(http_request("GET", "/p0"))
    # each request starts in the read that returned its first byte
    assert [s.start_ktime for s in spans] == [
        (first_read if i * per_req < 100 else second_read).ts_exit for i in range(5)]
    assert [s.end_ktime for s in spans] == [w1.ts_exit] * 2 + [w2.ts_exit] * 3
    assert_clean(stats, spans=5)


@pytest.mark.parametrize("splits", [[], [70], [70, 71, 72, 73, 74, 75], list(range(1, 200, 9))])
def test_chunked_responses(splits):
    t, spans, stats = table(capture=4096)
    c = Conversation(role=ROLE_SERVER, capture_bytes=4096)
    c.open()
    for i in range(N):
        c.request(http_request("GET", f"/chunk/{i}"))
        c.response(http_response(200, body=b"k" * (i * 40), chunked=True, chunk_size=97),
                   splits=splits)
    feed(t, c.events)
    assert [s.path for s in spans] == [f"/chunk/{i}" for i in range(N)]
    assert_clean(stats, spans=N)


def test_one_megabyte_bodies_with_512_byte_capture():
    t, spans, stats = table(capture=512)
    c = Conversation(role=ROLE_SERVER, capture_bytes=512, max_syscall=65536)
    c.open()
    mb = b"\xab" * 1_048_576
    up_req, up_resp = c.exchange(http_request("POST", "/upload", body=mb),
                                 http_response(201, body=b"stored"))
    dn_req, dn_resp = c.exchange(http_request("GET", "/download"),
                                 http_response(200, body=mb))
    chunk_req, chunk_resp = c.exchange(http_request("GET", "/stream"),
                                       http_response(200, body=mb, chunked=True,
                                                     chunk_size=40_000))
    c.exchange(http_request("GET", "/after"), http_response(204, length=False))
    feed(t, c.events)
    assert max(len(ev.payload) for ev in c.events if isinstance(ev, DataEvent)) == 512
    assert [(s.path, s.status) for s in spans] == [
        ("/upload", 201), ("/download", 200), ("/stream", 200), ("/after", 204)]
    assert spans[0].end_ktime == up_resp[-1].ts_exit
    assert spans[1].end_ktime == dn_resp[-1].ts_exit
    # chunk size lines fall in capture gaps: the terminator syscall ends it
    assert spans[2].end_ktime == chunk_resp[-1].ts_exit
    assert stats.framing_lost == 1 and stats.unparsed_bytes == 0
    assert stats.truncated_messages == 0 and stats.incomplete_requests == 0


def test_truncated_response_headers_resync_by_alternation():
    t, spans, stats = table(capture=128)
    c = Conversation(role=ROLE_SERVER, capture_bytes=128)
    c.open()
    ends = []
    for i in range(N):
        c.request(http_request("GET", f"/t{i}"))
        hdrs = {"Set-Cookie": "s" * 200} if i % 2 else {}
        resp = c.response(http_response(status_of(i), hdrs, body=b"b" * 50), splits=[250])
        ends.append(resp[-1].ts_exit)
    c.close()
    feed(t, c.events)
    assert [(s.path, s.status) for s in spans] == [(f"/t{i}", status_of(i)) for i in range(N)]
    assert [s.end_ktime for s in spans] == ends
    assert stats.truncated_messages == N // 2
    assert stats.incomplete_requests == 0 and stats.malformed_messages == 0


def test_truncated_request_headers_still_paired():
    t, spans, stats = table(capture=64)
    c = Conversation(role=ROLE_CLIENT, capture_bytes=64)
    c.open()
    for i in range(N):
        c.exchange(http_request("GET", f"/r{i}", {"Authorization": "Bearer " + "t" * 100}),
                   http_response(200, body=b"ok"))
    feed(t, c.events)
    assert [s.path for s in spans] == [f"/r{i}" for i in range(N)]
    assert stats.truncated_messages == N and stats.spans_emitted == N


def test_binary_garbage_isolated_to_its_connection():
    clock = Clock()
    good = Conversation(clock, conn_id=1)
    bad = Conversation(clock, conn_id=2)
    good.open()
    bad.open()
    garbage = bytes((i * 37 + 11) % 256 for i in range(3000))
    for i in range(N):
        good.exchange(http_request("GET", f"/g{i}"), http_response(200))
        if i < 5:
            bad.request(garbage, splits=[1000, 2000])
    bad.close()
    good.close()
    t, spans, stats = table()
    feed(t, merge(good, bad))
    assert [s.path for s in spans] == [f"/g{i}" for i in range(N)]
    assert stats.unparsed_connections == 1 and stats.malformed_messages == 1
    assert stats.unparsed_bytes == 5 * len(garbage)
    assert stats.spans_emitted == N


def test_peer_closes_mid_response():
    t, spans, stats = table()
    c = Conversation(role=ROLE_CLIENT)
    c.open()
    c.exchange(http_request("GET", "/ok"), http_response(200, body=b"fine"))
    c.request(http_request("GET", "/cut"))
    c.response(http_response(200, body=b"x" * 1000)[:300])
    c.close()
    feed(t, c.events)
    assert [s.path for s in spans] == ["/ok"]
    assert stats.incomplete_requests == 1 and stats.spans_emitted == 1


def test_preexisting_connection_without_open_event():
    t, spans, stats = table()
    c = Conversation(role=ROLE_UNKNOWN, conn_id=77)
    # we joined mid-response of an earlier exchange: skipped, counted
    tail = c.syscall(EGRESS, b"tail of an earlier body")
    for i in range(N):
        c.exchange(http_request("GET", f"/late{i}"), http_response(200))
    feed(t, c.events)
    assert [s.path for s in spans] == [f"/late{i}" for i in range(N)]
    s = spans[0]
    assert (s.kind, s.local_addr, s.local_port, s.netns, s.cgroup_id) == ("server", "", 0, 0, 0)
    assert stats.unparsed_bytes == tail.size and stats.unparsed_connections == 0
    assert t.conns[77].role == ROLE_SERVER


def test_preexisting_client_connection_role_inferred():
    t, spans, _ = table()
    c = Conversation(role=ROLE_UNKNOWN, conn_id=78)
    req_evs = c.send(EGRESS, http_request("GET", "/out"))
    c.send(INGRESS, http_response(200))
    feed(t, c.events)
    (s,) = spans
    assert s.kind == "client" and s.start_ktime == req_evs[0].ts_enter


def test_head_204_304_have_no_body():
    t, spans, stats = table()
    c = Conversation()
    c.open()
    c.exchange(http_request("HEAD", "/h"), http_response(200, {"Content-Length": "5000"},
                                                         length=False))
    c.exchange(http_request("DELETE", "/d"), http_response(204, length=False))
    c.exchange(http_request("GET", "/n", {"If-None-Match": '"e"'}),
               http_response(304, {"ETag": '"e"'}, length=False))
    c.exchange(http_request("GET", "/last"), http_response(200, body=b"y"))
    feed(t, c.events)
    assert [(s.method, s.path, s.status) for s in spans] == [
        ("HEAD", "/h", 200), ("DELETE", "/d", 204), ("GET", "/n", 304), ("GET", "/last", 200)]
    assert_clean(stats, spans=4)


def test_expect_100_continue():
    t, spans, stats = table()
    c = Conversation(role=ROLE_CLIENT)
    c.open()
    body = b"p" * 5000
    head = http_request("PUT", "/e", {"Expect": "100-continue"}, body)
    cut = len(head) - len(body)
    first = c.request(head[:cut])
    c.response(b"HTTP/1.1 100 Continue\r\n\r\n")
    c.request(head[cut:])
    last = c.response(http_response(200, body=b"ok"))
    feed(t, c.events)
    (s,) = spans
    assert (s.path, s.status) == ("/e", 200)
    assert s.start_ktime == first[0].ts_enter and s.end_ktime == last[-1].ts_exit
    assert_clean(stats, spans=1)


def test_close_delimited_response_ends_at_close():
    t, spans, stats = table()
    c = Conversation(role=ROLE_CLIENT)
    c.open()
    c.request(http_request("GET", "/old", version="1.0"))
    r = c.response(http_response(200, body=b"legacy body", length=False, version="1.0"),
                   splits=[20])
    c.close()
    feed(t, c.events[:-1])
    assert spans == []
    feed(t, c.events[-1:])
    (s,) = spans
    assert s.end_ktime == r[-1].ts_exit and s.to_dict()["attributes"][
        "network.protocol.version"] == "1.0"
    assert_clean(stats, spans=1)


def test_close_all_counts_unfinished_and_emits_nothing_half():
    t, spans, stats = table()
    clock = Clock()
    a = Conversation(clock, conn_id=1)
    b = Conversation(clock, conn_id=2, role=ROLE_CLIENT)
    a.open()
    b.open()
    a.request(http_request("GET", "/a1") + http_request("GET", "/a2"))
    b.request(http_request("GET", "/b"))
    b.response(http_response(200, length=False, body=b"streaming"))
    feed(t, merge(a, b))
    t.close_all()
    assert spans == [] and stats.incomplete_requests == 3
    assert stats.connections_open == 0 and len(t) == 0


def test_expire_idle_connections():
    t, spans, stats = table()
    clock = Clock()
    idle = Conversation(clock, conn_id=1)
    busy = Conversation(clock, conn_id=2)
    idle.open()
    busy.open()
    idle.request(http_request("GET", "/never-answered"))
    clock.advance(10_000_000_000)
    busy.exchange(http_request("GET", "/fresh"), http_response(200))
    feed(t, merge(idle, busy))
    assert t.expire(clock.t, 5_000_000_000) == 1
    assert set(t.conns) == {2}
    assert stats.connections_expired == 1 and stats.incomplete_requests == 1
    assert stats.connections_open == 1 and [s.path for s in spans] == ["/fresh"]


def test_h2_preface_left_alone_or_handed_to_factory():
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    t, spans, stats = table()
    c = Conversation(role=ROLE_SERVER)
    c.open()
    c.request(preface)
    c.response(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    feed(t, c.events)
    assert spans == [] and stats.h2_connections == 1
    assert stats.unparsed_bytes == 0 and stats.malformed_messages == 0

    got = []

    class FakeH2:
        def __init__(self, conn, table):
            self.conn = conn

        def on_data(self, ev):
            got.append((self.conn.conn_id, ev.payload))

        def on_close(self, eof):
            got.append(("closed", eof))

    t2, _, stats2 = table(h2_factory=FakeH2)
    u = Conversation(role=ROLE_UNKNOWN, conn_id=5)
    u.send(EGRESS, preface)
    u.close()
    feed(t2, u.events)
    assert got == [(5, preface), ("closed", True)]
    assert stats2.h2_connections == 1 and t2.conns == {}


def test_switching_protocols_stops_parsing():
    t, spans, stats = table()
    c = Conversation()
    c.open()
    c.exchange(http_request("GET", "/ws", {"Upgrade": "websocket", "Connection": "Upgrade"}),
               http_response(101, {"Upgrade": "websocket"}, length=False))
    c.request(b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")
    c.response(b"\x81\x05hello")
    feed(t, c.events)
    assert [(s.path, s.status) for s in spans] == [("/ws", 101)]
    assert stats.upgraded_connections == 1
    assert stats.unparsed_bytes == 0 and stats.malformed_messages == 0


def test_traceparent_sets_trace_and_parent():
    t, spans, _ = table()
    c = Conversation()
    c.open()
    c.exchange(http_request("GET", "/tp", {
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "X-Request-ID": "req-42"}), http_response(200))
    c.exchange(http_request("GET", "/bad", {
        "traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}),
        http_response(200))
    feed(t, c.events)
    d = spans[0].to_dict()
    assert d["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert d["parent_span_id"] == "00f067aa0ba902b7"
    assert d["span_id"] != "00f067aa0ba902b7"
    assert d["correlation"] == {"source": "header", "confidence": 1.0}
    assert d["attributes"]["http.request.header.x-request-id"] == "req-42"
    d2 = spans[1].to_dict()
    assert d2["parent_span_id"] is None and d2["correlation"]["source"] == "none"
    assert d2["trace_id"] != "0" * 32
    assert spans[0].request_headers["x-request-id"] == "req-42"


def test_lost_chunked_response_ended_by_next_request():
    # the terminator lands in a gap: the next request ends the response
    t, spans, stats = table(capture=256)
    c = Conversation(capture_bytes=256)
    c.open()
    c.request(http_request("GET", "/a"))
    r = c.response(http_response(200, body=b"z" * 3000, chunked=True, chunk_size=100))
    c.request(http_request("GET", "/b"))
    r2 = c.response(http_response(200, body=b"ok"))
    feed(t, c.events)
    assert [s.path for s in spans] == ["/a", "/b"]
    assert spans[0].end_ktime == r[-1].ts_exit and spans[1].end_ktime == r2[-1].ts_exit
    assert stats.framing_lost == 1 and stats.incomplete_requests == 0


def test_response_without_request_is_unpaired():
    t, spans, stats = table()
    c = Conversation(role=ROLE_SERVER)
    c.open()
    c.request(http_request("GET", "/x"))
    c.response(http_response(200) + http_response(200))
    feed(t, c.events)
    assert len(spans) == 1 and stats.unpaired_responses == 1


def test_server_speaks_first_is_given_up():
    t, spans, stats = table()
    c = Conversation(role=ROLE_CLIENT)
    c.open()
    for _ in range(20):
        c.send(INGRESS, b"\x0a5.7.33\x00garbage greeting")
    feed(t, c.events)
    assert spans == [] and stats.unparsed_connections == 1
    assert stats.unparsed_bytes == 20 * 24
