"""Property tests: garbage never raises and is counted; syscall boundaries and
capture gaps never change the spans of a well-formed conversation."""

from __future__ import annotations

from bisect import bisect_right

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.synth import (
    EGRESS,
    INGRESS,
    ROLE_CLIENT,
    ROLE_SERVER,
    ROLE_UNKNOWN,
    Clock,
    Conversation,
    http_request,
    http_response,
)
from tracer.conn import ConnectionTable
from tracer.protocols.http1 import Http1Parser, Listener
from tracer.spans import Span
from tracer.stats import COUNTERS, Stats

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# Fragments that steer random streams into the parser's deeper states.
TOKENS = [
    b"GET / HTTP/1.1\r\n", b"POST /x?y HTTP/1.0\r\n", b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 101 Switching\r\n\r\n", b"HEAD / HTTP/1.1\r\n",
    b"Content-Length: 5\r\n", b"Content-Length: 99999999\r\n", b"Content-Length: -1\r\n",
    b"Transfer-Encoding: chunked\r\n", b"Connection: close\r\n", b"\r\n", b"\r\n\r\n",
    b"5\r\nhello\r\n", b"0\r\n\r\n", b"fffffffffffffff\r\n", b"zz\r\n", b"PRI * HTTP/2.0\r\n",
    b"traceparent: 00-zz-yy-01\r\n", b"Host: [::1:80\r\n", b"\x00\xff\x16\x03",
]

chunk = st.one_of(st.binary(max_size=64), st.sampled_from(TOKENS))
payloads = st.lists(chunk, min_size=1, max_size=6).map(b"".join)


@st.composite
def raw_events(draw):
    """(conn_id, direction, payload, extra uncaptured bytes) tuples."""
    return draw(st.lists(
        st.tuples(st.integers(1, 3), st.sampled_from([INGRESS, EGRESS]), payloads,
                  st.sampled_from([0, 0, 0, 1, 7, 100_000])),
        min_size=1, max_size=25))


def check_span(s: Span) -> None:
    d = s.to_dict()
    assert d["duration_ns"] >= 0 and 100 <= d["status"] <= 999
    assert len(d["trace_id"]) == 32 and len(d["span_id"]) == 16


@SETTINGS
@given(events=raw_events(), roles=st.lists(st.sampled_from(
    [ROLE_UNKNOWN, ROLE_SERVER, ROLE_CLIENT]), min_size=3, max_size=3),
    opened=st.booleans())
def test_arbitrary_bytes_never_raise(events, roles, opened):
    spans: list[Span] = []
    stats = Stats()
    table = ConnectionTable(spans.append, stats)
    clock = Clock()
    convs = {i: Conversation(clock, conn_id=i, role=roles[i - 1], capture_bytes=64)
             for i in (1, 2, 3)}
    if opened:
        for c in convs.values():
            table.handle(c.open())
    for cid, direction, data, extra in events:
        table.handle(convs[cid].syscall(direction, data, size=min(len(data), 64) + extra
                                        if len(data) > 64 or extra else None))
    table.handle(convs[1].close())
    table.close_all()
    assert stats.spans_emitted == len(spans)
    assert stats.connections_open == 0 and len(table) == 0
    assert all(getattr(stats, k) >= 0 for k in COUNTERS)
    for s in spans:
        check_span(s)


@SETTINGS
@given(first=st.binary(min_size=1, max_size=1).filter(lambda b: not (b.isupper() or b == b"\r")),
       rest=st.binary(max_size=300), splits=st.lists(st.integers(1, 300), max_size=5))
def test_non_http_connection_is_counted_once(first, rest, splits):
    # A server connection whose client speaks something that cannot start a
    # request line: one malformed message, one unparsed connection, every byte counted.
    spans: list[Span] = []
    stats = Stats()
    table = ConnectionTable(spans.append, stats)
    c = Conversation(role=ROLE_SERVER, capture_bytes=4096)
    table.handle(c.open())
    data = first + rest
    for ev in c.send(INGRESS, data, splits):
        table.handle(ev)
    table.handle(c.close())
    assert spans == []
    assert stats.malformed_messages == 1 and stats.unparsed_connections == 1
    assert stats.unparsed_bytes == len(data)


@SETTINGS
@given(is_request=st.booleans(), data=st.lists(payloads, min_size=1, max_size=10),
       method=st.sampled_from([None, "GET", "HEAD", "CONNECT"]))
def test_parser_alone_never_raises(is_request, data, method):
    class Sink(Listener):
        def on_head(self, p, m):
            pass

        def on_end(self, p, m):
            pass

        def on_malformed(self, p, n):
            pass

        def request_method(self):
            return method

    p = Http1Parser(is_request, Sink(), Stats())
    c = Conversation(capture_bytes=32)
    for d in data:
        p.feed(c.syscall(INGRESS, d, size=len(d) + (len(d) % 3) * 50))


# ---- split invariance ----

BODY_STATUSES = [200, 201, 404, 500]
_FILL = bytes(range(256)) * 64
# sizes around the capture sizes matter more than random bytes: use a fill pattern
bodies = st.one_of(st.integers(0, 16), st.integers(0, 6000),
                   st.sampled_from([511, 512, 513, 4095, 4096, 4097])).map(lambda n: _FILL[:n])


@st.composite
def exchanges(draw):
    """A list of (request bytes, response bytes, path, status)."""
    out = []
    for i in range(draw(st.integers(1, 7))):
        method = draw(st.sampled_from(["GET", "POST", "HEAD", "DELETE"]))
        path = f"/e{i}/" + draw(st.text("abcxyz0-", max_size=8))
        query = draw(st.sampled_from(["", "?q=1", "?a=b&c=d"]))
        req_body = draw(bodies) if method == "POST" else b""
        hdrs = draw(st.sampled_from([{}, {"User-Agent": "hyp/1"}, {"X-Request-ID": f"r{i}"}]))
        req = http_request(method, path + query, hdrs, req_body,
                           chunked=bool(req_body) and draw(st.booleans()),
                           chunk_size=draw(st.integers(1, 2000)))
        status = draw(st.sampled_from(BODY_STATUSES + [204, 304]))
        if method == "HEAD":
            resp = http_response(status, {"Content-Length": "1234"}, length=False)
        elif status in (204, 304):
            resp = http_response(status, length=False)
        else:
            body = draw(bodies)
            resp = http_response(status, body=body, chunked=draw(st.booleans()),
                                 chunk_size=draw(st.integers(1, 3000)))
        out.append((req, resp, method, path, query[1:], status))
    return out


def cut_list(draw, data: bytes) -> list[int]:
    if not data:
        return []
    cuts = draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=6))
    return sorted({c for c in cuts if 0 < c < len(data)})


def event_at(evs, cuts, offset):
    return evs[bisect_right(cuts, offset)]


def strip(d: dict) -> dict:
    d = dict(d)
    for k in ("trace_id", "span_id"):
        del d[k]
    return d


@SETTINGS
@given(data=st.data(), convo=exchanges(), role=st.sampled_from([ROLE_SERVER, ROLE_CLIENT]),
       capture=st.sampled_from([512, 4096, 1 << 20]))
def test_splits_do_not_change_spans(data, convo, role, capture):
    """Any split of each message into syscalls (with any capture gaps) gives the
    same spans as one syscall per message, with the contract's timestamps."""

    def run(split: bool):
        c = Conversation(Clock(), role=role, capture_bytes=capture, max_syscall=1 << 30)
        c.open()
        bounds = []
        for req, resp, *_ in convo:
            rc = cut_list(data.draw, req) if split else []
            revs = c.request(req, rc)
            sc = cut_list(data.draw, resp) if split else []
            sevs = c.response(resp, sc)
            first = event_at(revs, rc, 0)
            start = first.ts_exit if role == ROLE_SERVER else first.ts_enter
            bounds.append((start, event_at(sevs, sc, len(resp) - 1).ts_exit, first.tid))
        c.close()
        spans: list[Span] = []
        stats = Stats()
        table = ConnectionTable(spans.append, stats, 5, capture)
        for ev in c.events:
            table.handle(ev)
        return spans, stats, bounds

    ref, ref_stats, _ = run(False)
    got, stats, bounds = run(True)
    assert len(got) == len(ref) == len(convo)
    assert stats.incomplete_requests == 0 and stats.malformed_messages == 0
    assert stats.unparsed_bytes == 0 and stats.truncated_messages == 0
    for s, r, (_req, _resp, method, path, query, status), (start, end, _tid) in zip(
            got, ref, convo, bounds, strict=True):
        assert (s.method, s.path, s.query, s.status) == (method, path, query, status)
        assert (s.start_ktime, s.end_ktime) == (start, end)
        ds, dr = strip(s.to_dict()), strip(r.to_dict())
        for k in ("start_time_unix_nano", "duration_ns"):
            ds.pop(k), dr.pop(k)
        assert ds == dr


@SETTINGS
@given(data=st.data(), convo=exchanges(), role=st.sampled_from([ROLE_SERVER, ROLE_CLIENT]),
       depth=st.integers(1, 4))
def test_pipelined_splits_pair_in_order(data, convo, role, depth):
    """Pipelined groups (depth requests, then their responses), split anywhere,
    fully captured: pairing and timestamps follow the bytes exactly."""
    c = Conversation(Clock(), role=role, capture_bytes=1 << 20, max_syscall=1 << 30)
    c.open()
    expected = []
    for g in range(0, len(convo), depth):
        group = convo[g:g + depth]
        reqs = b"".join(x[0] for x in group)
        resps = b"".join(x[1] for x in group)
        rc, sc = cut_list(data.draw, reqs), cut_list(data.draw, resps)
        revs = c.request(reqs, rc)
        sevs = c.response(resps, sc)
        ro = so = 0
        for req, resp, method, path, _q, status in group:
            first = event_at(revs, rc, ro)
            start = first.ts_exit if role == ROLE_SERVER else first.ts_enter
            end = event_at(sevs, sc, so + len(resp) - 1).ts_exit
            expected.append((method, path, status, start, end))
            ro += len(req)
            so += len(resp)
    spans: list[Span] = []
    stats = Stats()
    table = ConnectionTable(spans.append, stats)
    for ev in c.events:
        table.handle(ev)
    assert [(s.method, s.path, s.status, s.start_ktime, s.end_ktime) for s in spans] == expected
    assert stats.unparsed_bytes == 0 and stats.malformed_messages == 0
