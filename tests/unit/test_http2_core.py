"""HTTP/2, HPACK and gRPC edges where the compiled core's C types could differ
from Python ints (run both ways: TRACER_PURE=1 and compiled)."""

from __future__ import annotations

import hpack
from hpack.exceptions import HPACKDecodingError
from hpack.hpack import decode_integer
from hyperframe.frame import DataFrame, HeadersFrame, SettingsFrame

from tests.unit.h2synth import grpc_frame
from tests.unit.synth import ROLE_SERVER, Clock, Conversation, feed
from tracer.conn import ConnectionTable
from tracer.protocols import grpc
from tracer.protocols.hpack_partial import HpackTable
from tracer.protocols.http2 import PREFACE, SELECT, frame_ok, looks_like_frames
from tracer.stats import Stats


def _exchange(req_hdrs, resp_frames: bytes):
    enc = hpack.Encoder()
    req = HeadersFrame(1, enc.encode(req_hdrs), flags=["END_HEADERS"]).serialize() + \
        DataFrame(1, grpc_frame(b"q"), flags=["END_STREAM"]).serialize()
    c = Conversation(Clock(), role=ROLE_SERVER)
    c.open()
    c.request(PREFACE + req)
    c.response(resp_frames)
    c.close()
    spans = []
    stats = Stats()
    feed(ConnectionTable(spans.append, stats), c.events)
    return spans, stats


GRPC_REQ = [(":method", "POST"), (":scheme", "http"), (":path", "/pkg.S/M"),
            (":authority", "a"), ("content-type", "application/grpc")]


def test_non_ascii_digits_in_status_fields_are_not_numbers():
    # str.isdigit() admits "²", which int() refuses
    enc = hpack.Encoder()
    resp = HeadersFrame(1, enc.encode([(":status", "2\xb2")]), flags=["END_HEADERS"]).serialize() \
        + DataFrame(1, grpc_frame(b"r")).serialize() \
        + HeadersFrame(1, enc.encode([("grpc-status", "\xb2")]),
                       flags=["END_HEADERS", "END_STREAM"]).serialize()
    spans, stats = _exchange(GRPC_REQ, resp)
    assert stats.spans_emitted == 1
    assert spans[0].status == 0
    assert "rpc.grpc.status_code" not in spans[0].attributes()


def test_reserved_bit_and_high_stream_ids():
    # the reserved bit makes a frame header ill-shaped for the sniffer, and is
    # ignored by the reader (RFC 9113 4.1); stream ids use all 31 bits
    s = SettingsFrame(0).serialize()
    h = bytearray(HeadersFrame(0x7FFFFFFF, b"\x82", flags=["END_HEADERS"]).serialize())
    assert looks_like_frames(s + bytes(h), len(s) + len(h))
    h[5] |= 0x80
    assert not looks_like_frames(bytes(h) + s, len(s) + len(h))
    assert not frame_ok(1, 4, 0x80000001, 1)
    assert frame_ok(1, 4, 0x7FFFFFFF, 1)
    enc = hpack.Encoder()
    req = bytearray(HeadersFrame(1, enc.encode(GRPC_REQ), flags=["END_HEADERS"]).serialize())
    req[5] |= 0x80
    resp = HeadersFrame(1, hpack.Encoder().encode([(":status", "200"), ("grpc-status", "0")]),
                        flags=["END_HEADERS", "END_STREAM"]).serialize()
    c = Conversation(Clock(), role=ROLE_SERVER)
    c.open()
    c.request(PREFACE + bytes(req) + DataFrame(1, grpc_frame(b""), flags=["END_STREAM"]).serialize())
    c.response(resp)
    c.close()
    spans = []
    feed(ConnectionTable(spans.append, Stats()), c.events)
    assert [s.path for s in spans] == ["/pkg.S/M"]


def test_grpc_lengths_past_31_bits():
    m = grpc.MessageCounter()
    wire = b"\x00\xff\xff\xff\xfe" + b"x" * 10
    m.feed(wire, 0, len(wire), len(wire))
    assert (m.count, m.total, m.need, m.lost) == (1, 0xFFFFFFFE, 0xFFFFFFFE - 10, False)


def _int_repr(prefix: int, bits: int, extra: bytes) -> bytes:
    return bytes([prefix | (1 << bits) - 1]) + extra


def test_hpack_multi_octet_integers_match_hpack():
    # indexed fields whose index needs continuation octets, well and ill formed
    for extra in (b"\x00", b"\x05", b"\x80\x01", b"\xff\x7f", b"\x80\x80\x80\x80\x01",
                  b"\x80\x80\x80\x80\x80\x01", b"\x80", b"\xff\xff"):
        block = _int_repr(0x80, 7, extra)
        try:
            value, used = decode_integer(block, 7)
            ok = used == len(block)
        except HPACKDecodingError:
            value, ok = None, False
        t = HpackTable()
        out: dict = {}
        lost = t.decode(block, SELECT, out)
        if ok and value <= 61:
            assert not lost, extra  # a static entry
        else:
            assert lost, extra  # unknown dynamic entry, or not an integer at all


def test_hpack_large_dynamic_indexes_and_long_strings():
    enc = hpack.Encoder()
    enc.header_table_size = 65536
    dec = hpack.Decoder()
    dec.max_allowed_table_size = 65536
    t = HpackTable()
    keys = {k.decode() for k in SELECT}
    for i in range(300):
        hdrs = [(":path", f"/p/{i}"), ("x-request-id", "r" * (i % 200) + str(i)),
                ("user-agent", "u" * 150)]
        if i > 200:  # indexes past 127 need continuation octets
            hdrs.append(("x-request-id", "r" * ((i - 150) % 200) + str(i - 150)))
        block = enc.encode(hdrs)
        out: dict = {}
        assert not t.decode(block, SELECT, out)
        assert out == {k: v for k, v in dec.decode(block) if k in keys}
