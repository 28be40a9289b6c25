"""Synthetic spans for the exporter unit tests."""

from __future__ import annotations

import itertools

from tracer.spans import Span

_ids = itertools.count(1)


def make_span(**over) -> Span:
    n = next(_ids)
    fields = dict(
        trace_id=f"{n:032x}", span_id=f"{n:016x}", parent_span_id=None, kind="server",
        protocol="http1", method="GET", path=f"/item/{n}", query="", status=200,
        start_ktime=1_000_000_000, end_ktime=1_025_000_000, clock_offset_ns=1_700_000_000_000_000_000,
        pid=4242, tid=4243, comm="python3", netns=4026531840, cgroup_id=1,
        local_addr="127.0.0.1", local_port=8080, peer_addr="127.0.0.1", peer_port=50000,
        request_headers={"host": "127.0.0.1:8080", "user-agent": "curl/8"},
    )
    fields.update(over)
    return Span(**fields)
