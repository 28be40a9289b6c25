"""Property tests of the HTTP/2 frame/HPACK layer: split invariance, HPACK
agreement with the hpack library, and no exceptions on garbage."""

from __future__ import annotations

import functools

import hpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.h2synth import H2Pair, grpc_frame
from tests.unit.synth import ROLE_CLIENT, ROLE_SERVER, ROLE_UNKNOWN, Clock, Conversation, feed
from tracer.conn import ConnectionTable
from tracer.protocols.hpack_partial import HpackTable
from tracer.protocols.http2 import SELECT
from tracer.stats import Stats

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@functools.cache
def recording() -> tuple[tuple[str, bytes], ...]:
    """A session with concurrent streams, gRPC, trailers, a reset and big headers."""
    p = H2Pair(max_frame=16384)
    sids = [p.request("POST" if i % 2 else "GET", f"/r/{i}", {"x-request-id": f"id-{i % 3}"},
                      body=b"b" * (i * 40), flush=False) for i in range(5)]
    p.flush_client()
    for i, sid in enumerate(reversed(sids)):
        p.respond(sid, (200, 404, 500, 201, 503)[i], {"x-resp": "v" * i}, body=b"r" * (i * 90))
    g = p.request("POST", "/pkg.Svc/Stream", body=grpc_frame(b"q" * 30), grpc=True)
    p.respond(g, 200, {"content-type": "application/grpc"},
              body=[grpc_frame(b"m" * i) for i in range(6)], trailers={"grpc-status": "3"})
    r = p.request("GET", "/reset")
    p.client.reset_stream(r)
    p.flush_client()
    big = p.request("GET", "/big-headers", {"x-big": "h" * 20000})  # CONTINUATION frames
    p.respond(big, 200)
    return tuple(p.chunks)


def key(span) -> tuple:
    a = span.attributes()
    return (span.kind, span.protocol, span.method, span.path, span.status,
            tuple(sorted((k, v) for k, v in a.items())))


def spans_of(chunks, role: int, cuts: list[list[int]] | None = None,
             capture: int = 1 << 16) -> tuple[list, Stats]:
    c = Conversation(Clock(), role=role, capture_bytes=capture)
    if role != ROLE_UNKNOWN:
        c.open()
    # runs of same-direction bytes, re-cut into syscalls at arbitrary points
    runs: list[tuple[str, bytes]] = []
    for d, data in chunks:
        if runs and runs[-1][0] == d:
            runs[-1] = (d, runs[-1][1] + data)
        else:
            runs.append((d, data))
    for i, (d, data) in enumerate(runs):
        direction = c.request_dir if d == "c2s" else c.response_dir
        c.send(direction, data, cuts[i] if cuts else None)
    c.close()
    spans: list = []
    stats = Stats()
    feed(ConnectionTable(spans.append, stats), c.events)
    return spans, stats


def _runs() -> int:
    n = 0
    last = None
    for d, _ in recording():
        n += d != last
        last = d
    return n


@SETTINGS
@given(st.data(), st.sampled_from([ROLE_SERVER, ROLE_CLIENT]))
def test_arbitrary_splits_give_the_same_spans(data, role):
    chunks = recording()
    want, wstats = spans_of(chunks, role)
    assert len(want) == 7 and wstats.h2_streams_reset == 1
    cuts = [data.draw(st.lists(st.integers(1, 30000), max_size=12)) for _ in range(_runs())]
    got, stats = spans_of(chunks, role, cuts)
    assert sorted(map(key, got)) == sorted(map(key, want))
    assert stats.h2_framing_lost == 0 and stats.h2_headers_lost == 0
    assert stats.unparsed_bytes == 0


@SETTINGS
@given(st.data())
def test_splits_with_a_small_capture_keep_framing(data):
    """A 64-byte capture: frame headers at syscall starts survive, cuts inside
    bodies must not break framing when no frame header falls in a gap."""
    chunks = recording()
    want, _ = spans_of(chunks, ROLE_SERVER)
    cuts = [data.draw(st.lists(st.integers(1, 30000), max_size=6)) for _ in range(_runs())]
    got, stats = spans_of(chunks, ROLE_SERVER, cuts, capture=64)
    # never a wrong value: every span matches the full-capture one on what it has
    full = {s.path: s for s in want}
    for s in got:
        if s.path:
            ref = full[s.path]
            assert s.method in ("", ref.method)
            assert s.status in (0, ref.status)
    assert stats.spans_emitted == len(got)


HEADER = st.tuples(st.sampled_from([":method", ":path", ":status", "user-agent", "x-request-id",
                                    "traceparent", "content-type", "other", "x-custom"]),
                   st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126),
                           max_size=80))


@SETTINGS
@given(st.lists(st.lists(HEADER, min_size=1, max_size=8), min_size=1, max_size=30),
       st.lists(st.sampled_from([0, 64, 256, 4096]), max_size=3))
def test_hpack_partial_agrees_with_hpack(blocks, sizes):
    enc = hpack.Encoder()
    dec = hpack.Decoder()
    t = HpackTable()
    keys = {k.decode() for k in SELECT}
    for i, hdrs in enumerate(blocks):
        if i < len(sizes):
            enc.header_table_size = sizes[i]
        block = enc.encode(hdrs)
        out: dict = {}
        assert not t.decode(block, SELECT, out)
        ref: dict = {}
        for k, v in dec.decode(block):
            if k in keys:
                ref[k] = v
        assert out == ref


@SETTINGS
@given(st.lists(st.lists(HEADER, min_size=1, max_size=8), min_size=2, max_size=20),
       st.integers(0, 19))
def test_hpack_joined_late_never_guesses(blocks, join):
    """Start decoding at block `join`: every value we do produce is right."""
    enc = hpack.Encoder()
    dec = hpack.Decoder()
    t = HpackTable(known=False)
    keys = {k.decode() for k in SELECT}
    for i, hdrs in enumerate(blocks):
        block = enc.encode(hdrs)
        ref: dict = {}
        seen: dict = {}
        for k, v in dec.decode(block):
            if k in keys:
                ref[k] = v
                seen.setdefault(k, set()).add(v)
        if i < join:
            continue
        out: dict = {}
        lost = t.decode(block, SELECT, out)
        for k, v in out.items():
            assert v in seen[k]  # a repeated name may keep an earlier, known value
        if not lost:
            assert out == ref


@SETTINGS
@given(st.lists(st.binary(max_size=300), max_size=12),
       st.sampled_from([ROLE_SERVER, ROLE_UNKNOWN]))
def test_garbage_after_preface_never_raises(payloads, role):
    c = Conversation(Clock(), role=role, capture_bytes=128)
    c.request(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    for i, p in enumerate(payloads):
        (c.request if i % 2 else c.response)(p)
    c.close()
    stats = Stats()
    feed(ConnectionTable(lambda s: None, stats), c.events)
    assert stats.h2_connections == 1
