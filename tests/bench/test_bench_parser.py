"""Hot-path throughput: HTTP/1 parser (messages/s) and events -> spans (events/s).

Run: .venv/bin/python -m pytest tests/bench --benchmark-enable
The rates land in the benchmark JSON as extra_info (messages_per_s, events_per_s).
"""

from __future__ import annotations

import pytest

from tests.unit.synth import (
    ROLE_CLIENT,
    ROLE_SERVER,
    Clock,
    Conversation,
    http_request,
    http_response,
)
from tracer.conn import ConnectionTable
from tracer.events import decode, encode
from tracer.protocols.http1 import Http1Parser, Listener
from tracer.stats import Stats

MESSAGES = 2000

# A typical small request as a browser-less client (requests, Go, curl) sends it.
TYPICAL_REQUEST = http_request("GET", "/api/v1/users/12345?include=profile&lang=en", {
    "User-Agent": "python-requests/2.32.3",
    "Accept-Encoding": "gzip, deflate",
    "Accept": "*/*",
    "Connection": "keep-alive",
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "X-Request-ID": "5f1c0e2a-8a34-4a0b-9a1e-1d2f3c4b5a69",
})
TYPICAL_RESPONSE = http_response(200, {
    "Server": "gunicorn",
    "Date": "Wed, 25 Nov 2026 12:00:00 GMT",
    "Content-Type": "application/json",
    "Connection": "keep-alive",
}, body=b'{"id": 12345, "name": "Ada", "profile": {"lang": "en"}}')


class _Null(Listener):
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def on_head(self, parser, msg):
        pass

    def on_end(self, parser, msg):
        self.n += 1

    def on_malformed(self, parser, nbytes):
        raise AssertionError("malformed")

    def request_method(self):
        return "GET"


def _events(raw: bytes, n: int):
    c = Conversation(Clock(), capture_bytes=512)
    return [c.syscall(1, raw) for _ in range(n)]


@pytest.mark.bench
@pytest.mark.parametrize("kind", ["request", "response"])
def test_parser_throughput(benchmark, kind):
    raw = TYPICAL_REQUEST if kind == "request" else TYPICAL_RESPONSE
    events = _events(raw, MESSAGES)

    def run():
        sink = _Null()
        feed = Http1Parser(kind == "request", sink, Stats()).feed
        for ev in events:
            feed(ev)
        return sink.n

    assert benchmark(run) == MESSAGES
    if benchmark.stats:
        benchmark.extra_info["messages_per_s"] = round(MESSAGES / benchmark.stats.stats.mean)


def _conversations(conns: int, exchanges: int) -> list:
    clock = Clock()
    convs = []
    for i in range(conns):
        c = Conversation(clock, conn_id=i + 1, role=ROLE_SERVER if i % 2 else ROLE_CLIENT,
                         rport=30000 + i)
        convs.append(c)
        c.open()
    for _ in range(exchanges):
        for c in convs:  # interleaved, like many concurrent keep-alive connections
            c.exchange(TYPICAL_REQUEST, TYPICAL_RESPONSE)
    for c in convs:
        c.close()
    return [ev for c in convs for ev in c.events]  # per-connection order is what matters


@pytest.mark.bench
def test_pipeline_events_to_spans(benchmark):
    conns, exchanges = 50, 40
    events = _conversations(conns, exchanges)

    def run():
        spans = []
        table = ConnectionTable(spans.append, Stats())
        handle = table.handle
        for ev in events:
            handle(ev)
        return len(spans)

    assert benchmark(run) == conns * exchanges
    if benchmark.stats:
        benchmark.extra_info["events_per_s"] = round(len(events) / benchmark.stats.stats.mean)
        benchmark.extra_info["spans_per_s"] = round(conns * exchanges
                                                   / benchmark.stats.stats.mean)


@pytest.mark.bench
def test_pipeline_decode_to_spans_to_dict(benchmark):
    """Ring-buffer bytes -> decode -> table -> span dicts: the agent's whole
    per-event Python work short of writing the output."""
    conns, exchanges = 50, 20
    records = [encode(ev) for ev in _conversations(conns, exchanges)]

    def run():
        out = []
        table = ConnectionTable(lambda s: out.append(s.to_dict()), Stats())
        handle = table.handle
        for rec in records:
            handle(decode(rec))
        return len(out)

    assert benchmark(run) == conns * exchanges
    if benchmark.stats:
        benchmark.extra_info["events_per_s"] = round(len(records) / benchmark.stats.stats.mean)
