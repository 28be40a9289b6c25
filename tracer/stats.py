"""Plain counters shared by every user-space stage.

One object per tracer run, passed to each layer. Attribute increments are the
cheapest thing Python offers, so the hot path just does `stats.x += 1`; nothing
here locks, because the whole pipeline runs on one thread.
"""

from __future__ import annotations

# Adding a counter: append its name here and in stats.pxd (the compiled
# class); as_dict() and the summary follow.
COUNTERS = (
    # loader / decode
    "events_seen",  # events the kernel side tried to submit (CTR_EVENTS)
    "events_delivered",  # records read out of the ring buffer
    "events_dropped",  # kernel bpf_ringbuf reserve/output failures (CTR_DROPPED)
    "decode_errors",  # records that matched no event layout
    # connection table
    "events_handled",  # events given to ConnectionTable.handle
    "connections_open",  # gauge: connections in the table now
    "connections_total",  # connections ever entered into the table
    "connections_expired",  # dropped by expire() while idle
    "h2_connections",  # connections handed to the HTTP/2 parser (preface, SETTINGS-first, mid-stream)
    "h2_midstream",  # of those, joined mid-stream (recognised by frame shape, HPACK state unknown)
    "upgraded_connections",  # 101 Switching Protocols / CONNECT tunnel: no longer parsed
    # protocol parsing
    "unparsed_bytes",  # bytes no message could be made of (garbage, resync skips)
    "unparsed_connections",  # connections given up as not-HTTP, counted once each
    "malformed_messages",  # a message boundary held something that is not HTTP/1.x
    "truncated_messages",  # a header block cut by the capture (or lost in a gap)
    "framing_lost",  # a capture gap hit chunk framing: fell back to heuristics
    "incomplete_requests",  # requests that never got their response (close, stop, expiry)
    "unpaired_responses",  # responses with no request to pair with
    "h2_headers_lost",  # spans (or HEADERS) with fields not decodable: gap, or unknown HPACK table
    "h2_framing_lost",  # an HTTP/2 frame header lost in a gap (or malformed): resynced or given up
    "h2_streams_reset",  # RST_STREAM ended a stream before its response completed
    "grpc_framing_lost",  # spans whose gRPC message counts were left out (a prefix in a gap)
    "requests_overflow",  # requests past a per-connection bound (MAX_PIPELINED HTTP/1
    #   requests awaiting responses, MAX_STREAMS open h2 streams): not traced
    # correlation
    "correlation_ambiguous",  # outgoing request on a thread with several requests in flight
    "correlation_unresolved",  # a server span waited HOLD_NS for its client side in vain
    "spans_injected",  # --inject: client spans given the ids the kernel wrote
    "injected_conflicts",  # --inject: the thread's server span was already in another trace
    # filters and head sampling (tracer/sampling.py): each finished span is
    # emitted, filtered (one reason) or sampled out
    "spans_filtered",  # all filters together
    "spans_filtered_path",  # include/exclude path globs
    "spans_filtered_method",
    "spans_filtered_process",  # comm globs
    "spans_filtered_exe",
    "spans_filtered_cgroup",
    "spans_sampled_out",  # head sampling: the parent's flag, or the trace id ratio
    "spans_sampled_out_by_parent",  # of those, the request's own header said 00
    "config_reloads",  # SIGHUP: configurations applied
    "config_reload_errors",  # SIGHUP: bad files, the old configuration kept
    # output
    "spans_emitted",
)


class Stats:
    """Monotonic counters (plus the connections_open gauge)."""

    __slots__ = COUNTERS

    def __init__(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTERS}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v}" for k, v in self.as_dict().items() if v)
        return f"Stats({inner})"
