"""Span.write_json, the compiled span's own JSON line, is byte for byte what
orjson writes for Span.to_dict(); where it does not write a value it says so
(-2) and the writer falls back to orjson, and where the buffer is too small it
says so (-1) and writes nothing the caller keeps."""

from __future__ import annotations

import random

import cython
import orjson
import pytest

import tracer.spans as spans_mod
from tests.unit.export_spans import make_span
from tracer.export.jsonl import JsonlWriter

COMPILED = bool(getattr(spans_mod, "__file__", "").endswith(".so"))
LATIN1 = "".join(chr(i) for i in range(256))
assert cython  # the pure-mode shim is what spans.py runs on without Cython


def _want(span) -> bytes:
    return orjson.dumps(span.to_dict(), option=orjson.OPT_APPEND_NEWLINE)


def _written(span, size: int = 1 << 16, pos: int = 0) -> tuple[int, bytes]:
    buf = bytearray(b"#" * size)
    end = span.write_json(buf, pos)
    assert bytes(buf[:pos]) == b"#" * pos  # nothing before pos is touched
    return end, bytes(buf[pos:end]) if end >= 0 else b""


def _strings(rnd: random.Random) -> str:
    pick = rnd.random()
    if pick < 0.3:
        return "".join(rnd.choice(LATIN1) for _ in range(rnd.randint(0, 40)))
    if pick < 0.5:
        return "".join(chr(rnd.choice([rnd.randint(0, 0x7FF), rnd.randint(0x800, 0xD7FF),
                                       rnd.randint(0xE000, 0x10FFFF)]))
                       for _ in range(rnd.randint(0, 20)))
    return rnd.choice(["", "/", "/a?b=c", '"quoted"', "back\\slash", "tab\there", "nul\x00",
                       "\x7f", "line\r\n", "\u2028\u2029", "é", "日本", "😀"])


def _spans(n: int):
    rnd = random.Random(17)
    ints = [0, 1, -1, 200, 65535, (1 << 63) - 1, -(1 << 63), (1 << 64) - 1]
    # every decimal length and its edges (digits are written two at a time)
    ints += [v for k in range(1, 20) for v in (10 ** k - 1, 10 ** k, 10 ** k + 1)]
    ints += [-10 ** k for k in range(1, 19)]
    for i in range(n):
        s = make_span(
            trace_id=_strings(rnd), span_id=f"{i:016x}",
            parent_span_id=rnd.choice([None, f"{i + 1:016x}", _strings(rnd)]),
            kind=rnd.choice(["server", "client"]), protocol=rnd.choice(["http1", "http2", "grpc"]),
            method=_strings(rnd), path=_strings(rnd), query=rnd.choice(["", _strings(rnd)]),
            status=rnd.choice(ints), start_ktime=rnd.randint(0, 1 << 62),
            end_ktime=rnd.randint(0, 1 << 62), pid=rnd.choice(ints[:5]), tid=rnd.randint(1, 1 << 22),
            comm=_strings(rnd), netns=rnd.choice(ints[:5]), cgroup_id=rnd.choice(ints[:5]),
            local_addr=rnd.choice(["127.0.0.1", "::1", ""]), local_port=rnd.randint(0, 65535),
            peer_addr=rnd.choice(["10.0.0.2", "", "fe80::1"]), peer_port=rnd.randint(0, 65535),
            tls=rnd.choice([True, False]),
            correlation_source=rnd.choice(["none", "header", "causal"]),
            correlation_confidence=rnd.choice([0.0, 1.0, 0.6, 0.95, 0.5, 0.123456789, -0.0]),
            request_headers=rnd.choice([{}, {"host": _strings(rnd)},
                                        {"host": "svc:8080", "user-agent": _strings(rnd),
                                         "x-request-id": _strings(rnd)}]),
            version=rnd.choice(["1.1", "1.0", "2", ""]),
        )
        if rnd.random() < 0.3:
            s.attributes_extra = {"rpc.system": "grpc", "rpc.grpc.status_code": rnd.choice(ints),
                                  _strings(rnd): _strings(rnd), "nested": {"l": [1, "a", None, True]}}
        if rnd.random() < 0.2:
            s.stack = [_strings(rnd) for _ in range(rnd.randint(1, 5))]
        yield s


def test_write_json_is_orjson_of_to_dict():
    written = 0
    for s in _spans(3000):
        end, line = _written(s, pos=7)
        if end == -2:
            assert not COMPILED, "the compiled span wrote none of its line"
            continue
        assert line == _want(s)
        written += 1
    assert written == (3000 if COMPILED else 0)


@pytest.mark.parametrize("value", [1e-7, 1e16, float("inf"), float("nan"), 1 << 64, -(1 << 63) - 1,
                                   True.__class__, b"bytes", object()])
def test_values_it_does_not_write_go_to_orjson(value, tmp_path):
    s = make_span(attributes_extra={"v": value})
    assert s.write_json(bytearray(4096), 0) == -2
    out = tmp_path / "s.jsonl"
    w = JsonlWriter(str(out))
    try:
        want = _want(s)
    except TypeError:  # orjson refuses it: so does the writer, as it did before
        with pytest.raises(TypeError):
            w(s)
        w.close()
        assert out.read_bytes() == b""
        return
    w(s)
    w.close()
    assert out.read_bytes() == want


def test_deep_nesting_goes_to_orjson():
    v: object = "leaf"
    for _ in range(70):
        v = [v]
    s = make_span(attributes_extra={"deep": v})
    assert s.write_json(bytearray(4096), 0) == -2


@pytest.mark.skipif(not COMPILED, reason="the pure span writes no line itself")
def test_no_room_is_minus_one_at_every_size():
    s = make_span(path="/" + "\x01" * 40, attributes_extra={"k": "v"})
    want = _want(s)
    for size in range(len(want) + 400):
        end, line = _written(s, size=size)
        if end >= 0:
            assert line == want
            assert end == len(want) <= size
        else:
            assert end == -1


def test_writer_batches_drain_and_retry(tmp_path):
    spans = list(_spans(400))
    for batch in (1, 700, 5000, 1 << 18):
        out = tmp_path / f"s{batch}.jsonl"
        w = JsonlWriter(str(out), batch_bytes=batch)
        for s in spans:
            w(s)
        w.close()
        assert out.read_bytes() == b"".join(_want(s) for s in spans)
        assert w.written == 400


@pytest.mark.parametrize("extra", [
    {"url.path": "/replaced", "rpc.system": "grpc"},  # replaces in place, as dict.update
    {"server.port": 9, "network.protocol.version": "2"},
    {"rpc.service": "pkg.S", "rpc.method": "M", "rpc.grpc.status_code": 0},
])
def test_extra_attributes_keep_dict_update_order(extra):
    s = make_span(attributes_extra=extra, query="a=1")
    end, line = _written(s)
    assert end == (len(line) if COMPILED else -2)
    if COMPILED:
        assert line == _want(s)


def test_a_non_string_extra_key_goes_to_orjson():
    s = make_span(attributes_extra={1: "x"})
    assert s.write_json(bytearray(4096), 0) == -2
