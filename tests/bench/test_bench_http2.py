"""HTTP/2 hot path: frames/s through the frame reader + HPACK + stream pairing,
and HPACK header blocks/s.

Run: .venv/bin/python -m pytest tests/bench/test_bench_http2.py --benchmark-enable
The rates land in the benchmark JSON as extra_info (frames_per_s, spans_per_s,
blocks_per_s).
"""

from __future__ import annotations

import hpack
import pytest

from tests.unit.h2synth import H2Pair, grpc_frame
from tests.unit.synth import ROLE_SERVER
from tracer.conn import ConnectionTable
from tracer.protocols.hpack_partial import HpackTable
from tracer.protocols.http2 import PREFACE, SELECT
from tracer.stats import Stats

CALLS = 400
CONCURRENCY = 8


def _grpc_session():
    """CALLS unary gRPC calls on one connection, CONCURRENCY in flight per write."""
    p = H2Pair()
    for start in range(0, CALLS, CONCURRENCY):
        sids = [p.request("POST", "/bench.Catalog/GetItem", {"x-request-id": f"r-{start + i}"},
                          body=grpc_frame(b"\x08" + bytes([i])), grpc=True, flush=False)
                for i in range(CONCURRENCY)]
        p.flush_client()
        for sid in sids:
            p.respond(sid, 200, {"content-type": "application/grpc"},
                      body=grpc_frame(b"item-name-and-price" * 2), trailers={"grpc-status": "0"},
                      flush=False)
        p.flush_server()
    return p


def _count_frames(chunks) -> int:
    n = 0
    for _, data in chunks:
        pos = len(PREFACE) if data.startswith(PREFACE) else 0
        while pos + 9 <= len(data):
            pos += 9 + int.from_bytes(data[pos:pos + 3], "big")
            n += 1
    return n


@pytest.mark.bench
def test_h2_frames_to_spans(benchmark):
    p = _grpc_session()
    events = p.conversation(ROLE_SERVER).events
    frames = _count_frames(p.chunks)

    def run():
        spans = []
        table = ConnectionTable(spans.append, Stats())
        handle = table.handle
        for ev in events:
            handle(ev)
        return len(spans)

    assert benchmark(run) == CALLS
    if benchmark.stats:
        mean = benchmark.stats.stats.mean
        benchmark.extra_info["frames_per_s"] = round(frames / mean)
        benchmark.extra_info["spans_per_s"] = round(CALLS / mean)
        benchmark.extra_info["events_per_s"] = round(len(events) / mean)


@pytest.mark.bench
def test_hpack_blocks(benchmark):
    enc = hpack.Encoder()
    blocks = [enc.encode([(":method", "POST"), (":scheme", "http"),
                          (":path", "/bench.Catalog/GetItem"), (":authority", "svc:50051"),
                          ("content-type", "application/grpc"), ("te", "trailers"),
                          ("user-agent", "grpc-python/1.85.3 grpc-c/50.0.0 (linux; chttp2)"),
                          ("x-request-id", f"r-{i}"), ("grpc-accept-encoding", "identity,gzip")])
              for i in range(1000)]

    def run():
        t = HpackTable()
        out = None
        for b in blocks:
            out = {}
            t.decode(b, SELECT, out)
        return out

    assert benchmark(run)[":path"] == "/bench.Catalog/GetItem"
    if benchmark.stats:
        benchmark.extra_info["blocks_per_s"] = round(len(blocks) / benchmark.stats.stats.mean)
