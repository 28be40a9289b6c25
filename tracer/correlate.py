"""Trace context: ids chosen when a request starts, links made across processes
and threads, spans held until their parent is known.

Every protocol calls two hooks:

    ctx = table.correlator.start(conn, server, ev, headers, seq)   # request head seen
    table.correlator.finish(ctx, span)                             # span complete

`start` runs top-down in time (an upstream request starts before the
downstream one it causes), so a parent's context exists when its children
start. That is why ids are chosen at start, not when spans complete
(completion order is bottom-up). The one race is a server reading a request
before the agent has seen the client's write of it (the two events come from
different CPUs): such a server context stays *pending* and is resolved when
the client's request arrives, before the span is emitted in practice; a span
that completes while still pending is held for at most HOLD_NS.

Sources of a parent, strongest first:
- "header":     a valid W3C traceparent (or B3) in the request;
- "connection": the client span at the other end of the same TCP connection
  (5-tuple seen from both ends, netns-aware), matched by request order (HTTP/1)
  or stream id (HTTP/2);
- "thread":     for a client request, the server request that the same thread
  is handling now (thread-per-request servers). With several requests in flight
  on the thread (an event loop), the link is ambiguous and not made: a wrong
  parent is worse than none.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Mapping

from .spans import Span, parse_traceparent

_getrandbits = random.getrandbits
HOLD_NS = 200_000_000  # longest a finished span waits for its pending parent


def _b3(headers: Mapping[str, str]) -> tuple[str, str] | None:
    single = headers.get("b3")
    if single:
        parts = single.split("-")
        if len(parts) >= 2 and len(parts[1]) == 16:
            tid = parts[0].rjust(32, "0")
            if len(tid) == 32:
                return tid.lower(), parts[1].lower()
        return None
    tid = headers.get("x-b3-traceid")
    sid = headers.get("x-b3-spanid")
    if tid and sid and len(sid) == 16 and len(tid) in (16, 32):
        return tid.rjust(32, "0").lower(), sid.lower()
    return None


class Context:
    """The ids of one span, fixed at request start (parent may resolve later)."""

    __slots__ = ("trace_id", "span_id", "parent_span_id", "source", "confidence",
                 "pending", "span", "key", "pid", "tid", "server", "children", "done_ts")

    def __init__(self, span_id: str, server: bool, pid: int, tid: int) -> None:
        self.trace_id = ""
        self.span_id = span_id
        self.parent_span_id: str | None = None
        self.source = "none"
        self.confidence = 0.0
        self.pending = False  # waiting for the client side of its connection
        self.span: Span | None = None  # finished span held while pending
        self.key = None
        self.pid = pid
        self.tid = tid
        self.server = server
        self.children: list[Context] | None = None  # contexts that took our trace id
        self.done_ts = 0

    def adopt(self, parent: Context, source: str, confidence: float) -> None:
        self.trace_id = parent.trace_id
        self.parent_span_id = parent.span_id
        self.source = source
        self.confidence = confidence


class Correlator:
    def __init__(self, sink: Callable[[Span], None], stats) -> None:
        self.sink = sink
        self.stats = stats
        # client contexts by connection key + sequence, waiting for their server side
        self.clients: dict[tuple, Context] = {}
        # server contexts that started before their client side was seen
        self.pending: dict[tuple, Context] = {}
        # active server requests per (pid, tid): the in-process parent candidates
        self.active: dict[tuple[int, int], list[Context]] = {}
        self.held: deque[Context] = deque()

    # ---- hooks -------------------------------------------------------------------
    def start(self, conn, server: bool, pid: int, tid: int, headers: Mapping[str, str],
              seq: int) -> Context:
        ctx = Context(f"{_getrandbits(64) or 1:016x}", server, pid, tid)
        tp = headers.get("traceparent")
        ids = parse_traceparent(tp) if tp is not None else None
        if ids is None and ("b3" in headers or "x-b3-traceid" in headers):
            ids = _b3(headers)
        if ids is not None:
            ctx.trace_id, ctx.parent_span_id = ids
            ctx.source = "header"
            ctx.confidence = 1.0
        else:
            ctx.trace_id = f"{_getrandbits(128) or 1:032x}"
        return ctx

    def finish(self, ctx: Context, span: Span) -> None:
        span.trace_id = ctx.trace_id
        span.span_id = ctx.span_id
        span.parent_span_id = ctx.parent_span_id
        span.correlation_source = ctx.source
        span.correlation_confidence = ctx.confidence
        self.stats.spans_emitted += 1
        self.sink(span)

    def flush(self, now_ktime: int) -> None:
        """Emit held spans whose wait is over (called periodically)."""

    def close(self) -> None:
        """Emit everything still held (shutdown)."""
