"""Span model: trace context, ids, the contract's JSON shape."""

from __future__ import annotations

import json
import random

import pytest

from tracer.spans import Span, _split_host
from tracer.tracecontext import new_span_id, new_trace_id, parse_traceparent

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
PID = "00f067aa0ba902b7"


@pytest.mark.parametrize("value,expected", [
    (f"00-{TID}-{PID}-01", (TID, PID)),
    (f"  00-{TID}-{PID}-00 ", (TID, PID)),
    (f"01-{TID}-{PID}-01-future-stuff", (TID, PID)),  # higher versions may extend
    (f"00-{TID}-{PID}-01-extra", None),  # version 00 is exactly 55 chars
    (f"ff-{TID}-{PID}-01", None),
    (f"00-{'0' * 32}-{PID}-01", None),
    (f"00-{TID}-{'0' * 16}-01", None),
    (f"00-{TID.upper()}-{PID}-01", None),
    (f"00-{TID[:-1]}g-{PID}-01", None),
    (f"00-{TID[:10]}-{TID[11:]}0-{PID}-01", None),  # a dash inside the trace id
    (f"00_{TID}-{PID}-01", None),
    ("", None),
    ("00-abc-def-01", None),
])
def test_parse_traceparent(value, expected):
    assert parse_traceparent(value) == expected


def test_ids_are_valid_hex_and_nonzero():
    random.seed(0)
    for _ in range(1000):
        t, s = new_trace_id(), new_span_id()
        assert len(t) == 32 and len(s) == 16
        assert int(t, 16) and int(s, 16) and t == t.lower()


@pytest.mark.parametrize("host,expected", [
    ("example.com", ("example.com", 0)),
    ("example.com:8080", ("example.com", 8080)),
    ("[::1]:443", ("::1", 443)),
    ("[::1]", ("::1", 0)),
    ("h:notaport", ("h", 0)),
    ("", ("", 0)),
])
def test_split_host(host, expected):
    assert _split_host(host) == expected


def test_to_dict_client_span_attributes_and_json():
    s = Span(kind="client", method="GET", path="/p", status=503, version="1.0",
             start_ktime=1_000, end_ktime=4_500, clock_offset_ns=10**18, pid=1, tid=2,
             comm="c", local_addr="10.1.1.1", local_port=5555, peer_addr="10.2.2.2",
             peer_port=80, trace_id=TID, span_id=PID,
             request_headers={"host": "api.internal", "user-agent": "ua"})
    d = s.to_dict()
    assert d["start_time_unix_nano"] == 10**18 + 1_000 and d["duration_ns"] == 3_500
    assert d["attributes"] == {
        "http.request.method": "GET", "url.path": "/p", "http.response.status_code": 503,
        "server.address": "api.internal", "server.port": 80, "client.address": "10.1.1.1",
        "user_agent.original": "ua", "network.protocol.version": "1.0"}
    assert json.loads(json.dumps(d)) == d


def test_duration_never_negative():
    assert Span(start_ktime=10, end_ktime=5).duration_ns == 0
