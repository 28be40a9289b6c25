"""Per-connection bounds: a peer that never answers cannot grow the parser's
state without limit; what goes past a bound is counted, never silently lost."""

from __future__ import annotations

import hpack
from hyperframe.frame import HeadersFrame, SettingsFrame

from tests.unit.synth import ROLE_SERVER, Clock, Conversation, feed, http_request, http_response
from tracer.conn import ConnectionTable
from tracer.protocols.http1 import MAX_PIPELINED
from tracer.protocols.http2 import MAX_STREAMS, PREFACE
from tracer.stats import Stats

OFFSET = 1_700_000_000_000_000_000


def _run(conv):
    spans, stats = [], Stats()
    table = ConnectionTable(spans.append, stats, OFFSET)
    feed(table, conv.events)
    return spans, stats, table


def test_http1_pipelined_requests_without_responses_are_bounded():
    extra = 7
    c = Conversation(Clock(), role=ROLE_SERVER)
    c.open()
    for i in range(MAX_PIPELINED + extra):
        c.request(http_request("GET", f"/p{i}"))
    c.response(http_response(200))  # arrives after the connection was given up
    c.close()
    spans, stats, _ = _run(c)
    assert spans == []
    assert stats.requests_overflow == 1  # the request that hit the bound
    assert stats.incomplete_requests == MAX_PIPELINED  # those queued, never answered
    assert stats.unparsed_connections == 1  # the rest of the connection: counted, not parsed
    assert stats.unparsed_bytes > 0


def test_http1_pipelining_within_the_bound_pairs_exactly():
    n = MAX_PIPELINED
    c = Conversation(Clock(), role=ROLE_SERVER)
    c.open()
    for i in range(n):
        c.request(http_request("GET", f"/p{i}"))
    for _ in range(n):
        c.response(http_response(200))
    c.close()
    spans, stats, _ = _run(c)
    assert [s.path for s in spans] == [f"/p{i}" for i in range(n)]
    assert stats.requests_overflow == 0 and stats.incomplete_requests == 0


def test_http2_open_streams_are_bounded():
    extra = 11
    enc = hpack.Encoder()
    c = Conversation(Clock(), role=ROLE_SERVER, capture_bytes=4096)
    c.open()
    c.request(PREFACE + SettingsFrame(0).serialize())
    c.response(SettingsFrame(0).serialize())
    for i in range(MAX_STREAMS + extra):
        block = enc.encode([(":method", "GET"), (":scheme", "http"), (":path", f"/s{i}"),
                            (":authority", "svc.test")])
        c.request(HeadersFrame(2 * i + 1, block, flags=["END_HEADERS", "END_STREAM"])
                  .serialize())
    c.close()
    spans, stats, _ = _run(c)
    assert spans == []
    assert stats.requests_overflow == extra  # past the bound: counted, not tracked
    assert stats.incomplete_requests == MAX_STREAMS  # tracked, never answered
    assert stats.h2_headers_lost == 0  # HPACK state kept for the streams not tracked
