"""Agent CPU per span, the per-event core alone: ring records -> decode ->
connection table -> parse -> correlate -> span -> JSON line (to /dev/null).

The budgets (docs/budgets.md): <= 4 us per HTTP/1 span, <= 10 us per
gRPC unary span. Only the server end is traced, as in the nginx scenario:
one request read and one response write per span (HTTP/1), or the server's
reads and writes of a gRPC connection carrying CALLS unary calls.

Run: make bench-micro (or .venv/bin/python -m pytest tests/bench/test_bench_core.py
--benchmark-enable). extra_info carries us_per_span and which core ran.
"""

from __future__ import annotations

import os

import pytest

from tests.bench.test_bench_http2 import _grpc_session
from tests.bench.test_bench_parser import TYPICAL_REQUEST, TYPICAL_RESPONSE
from tests.unit.ringsynth import SynthRing, ring_of
from tests.unit.synth import ROLE_SERVER, Clock, Conversation
from tracer import core
from tracer.agent import CONSUME_BATCH
from tracer.conn import ConnectionTable
from tracer.events import encode
from tracer.export.jsonl import JsonlWriter
from tracer.ring import RingBuffer
from tracer.stats import Stats

CONNS = 16
EXCHANGES = 125  # per connection: 2000 spans a round


def _http1_records() -> list[bytes]:
    clock = Clock()
    convs = [Conversation(clock, conn_id=i + 1, role=ROLE_SERVER, rport=30000 + i,
                          raddr="10.0.0.2") for i in range(CONNS)]
    for c in convs:
        c.open()
    for _ in range(EXCHANGES):
        for c in convs:  # interleaved, like concurrent keep-alive connections
            c.exchange(TYPICAL_REQUEST, TYPICAL_RESPONSE)
    for c in convs:
        c.close()
    events = sorted((ev for c in convs for ev in c.events),
                    key=lambda ev: getattr(ev, "ts_exit", None) or ev.ts)
    return [encode(ev) for ev in events]


def _grpc_records() -> list[bytes]:
    conv = _grpc_session().conversation(ROLE_SERVER)
    conv.events.insert(0, conv.open())
    conv.events.pop()
    conv.close()
    return [encode(ev) for ev in conv.events]


# the records laid out in a ring once per list: _run times the consumer only
_RINGS: dict[int, tuple[list[bytes], SynthRing]] = {}


def _reader(records: list[bytes]) -> RingBuffer:
    hit = _RINGS.get(id(records))
    if hit is None or hit[0] is not records:
        hit = _RINGS[id(records)] = (records, ring_of(records))
    ring = hit[1]
    # a fresh consumer position over the same producer side: the ring is full again
    return RingBuffer.over(bytearray(ring.consumer), ring.producer, ring.size)


def _run(records: list[bytes]) -> int:
    """The agent's ingest (Tracer.poll_once): the ring drained in batches,
    each record decoded in place and handed to the table."""
    rb = _reader(records)
    writer = JsonlWriter(os.devnull)
    stats = Stats()
    table = ConnectionTable(writer, stats, 1_700_000_000_000_000_000)
    handle = table.handle
    while n := rb.consume_events(handle, stats, CONSUME_BATCH):
        stats.events_delivered += n
    table.correlator.close()
    writer.close()
    assert stats.events_handled == len(records)
    return stats.spans_emitted


@pytest.mark.bench
@pytest.mark.parametrize("protocol", ["http1", "grpc"])
def test_agent_cpu_per_span(benchmark, protocol):
    records = _http1_records() if protocol == "http1" else _grpc_records()
    expected = CONNS * EXCHANGES if protocol == "http1" else 400
    assert benchmark(_run, records) == expected
    if benchmark.stats:
        us = benchmark.stats.stats.min / expected * 1e6
        benchmark.extra_info.update(us_per_span=round(us, 2), spans=expected,
                                    events=len(records), core=core.info()["core"])
