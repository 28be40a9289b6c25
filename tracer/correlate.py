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


_LOOPBACK_PREFIXES = ("127.", "::1")


def conn_key(conn, server: bool, seq: int) -> tuple | None:
    """The same key from both ends of one TCP connection, or None when the
    connection was not seen from its start (request order unknown) or its
    addresses are unknown. Loopback addresses are only unique inside one
    network namespace, so the netns joins the key there; other addresses are
    the same from both ends when there is no NAT."""
    if not conn.fresh or not conn.laddr or not conn.raddr:
        return None
    if server:
        key = (conn.raddr, conn.rport, conn.laddr, conn.lport, seq)
    else:
        key = (conn.laddr, conn.lport, conn.raddr, conn.rport, seq)
    if conn.laddr.startswith(_LOOPBACK_PREFIXES):
        key += (conn.netns,)
    return key


class Context:
    """The ids of one span, fixed at request start; the parent may be resolved
    a little later (pending) when the server side is seen before the client."""

    __slots__ = ("trace_id", "span_id", "parent_span_id", "source", "confidence",
                 "pending", "parent", "children", "span", "server", "pid", "tid",
                 "key", "start_ts", "done_ts", "header")

    def __init__(self, span_id: str, server: bool, pid: int, tid: int, start_ts: int) -> None:
        self.trace_id = ""
        self.span_id = span_id
        self.parent_span_id: str | None = None
        self.source = "none"
        self.confidence = 0.0
        self.pending = False  # server side waiting for its client side
        self.parent: Context | None = None  # a local parent context, if any
        self.children: list[Context] | None = None  # took their trace id from us
        self.span: Span | None = None  # set when finished
        self.server = server
        self.pid = pid
        self.tid = tid
        self.key: tuple | None = None
        self.start_ts = start_ts
        self.done_ts = 0
        self.header: tuple[str, str] | None = None  # (trace id, parent) from the request

    def adopt(self, parent: Context, source: str, confidence: float) -> None:
        self.parent = parent
        self.trace_id = parent.trace_id
        self.parent_span_id = parent.span_id
        self.source = source
        self.confidence = confidence
        if parent.children is None:
            parent.children = [self]
        else:
            parent.children.append(self)

    def set_trace(self, trace_id: str) -> None:
        """A parent resolved late: its trace id flows down to what took ours."""
        if self.trace_id == trace_id:
            return
        self.trace_id = trace_id
        for c in self.children or ():
            c.set_trace(trace_id)

    def blocked(self) -> bool:
        c = self
        while c is not None:
            if c.pending:
                return True
            c = c.parent
        return False


class Correlator:
    """Chooses span ids at request start and links spans (see module doc).
    Single-threaded, like the rest of the pipeline."""

    def __init__(self, sink: Callable[[Span], None], stats) -> None:
        self.sink = sink
        self.stats = stats
        # client contexts by connection key, until their server side claims them
        self.clients: dict[tuple, Context] = {}
        # server contexts that started before their client side was seen
        self.pending: dict[tuple, Context] = {}
        # server requests in progress per (pid, tid): in-process parent candidates
        self.active: dict[tuple[int, int], list[Context]] = {}
        self.held: list[Context] = []  # finished but blocked by a pending context
        # local addresses of traced client sockets: a server request from one of
        # them may have a client span coming, so it is worth waiting for
        self.client_addrs: set[tuple[str, int]] = set()

    def note_client(self, addr: str, netns: int) -> None:
        """A traced process connected from addr (called at connect, which is
        always seen before the server can read the request)."""
        self.client_addrs.add((addr, netns if addr.startswith(_LOOPBACK_PREFIXES) else 0))

    def _client_traced(self, conn) -> bool:
        addr = conn.raddr
        return (addr, conn.netns if addr.startswith(_LOOPBACK_PREFIXES) else 0) \
            in self.client_addrs

    # ---- hooks -------------------------------------------------------------------
    def start(self, conn, server: bool, pid: int, tid: int, headers: Mapping[str, str],
              seq: int, ts: int = 0) -> Context:
        ctx = Context(f"{_getrandbits(64) or 1:016x}", server, pid, tid, ts)
        tp = headers.get("traceparent")
        ids = parse_traceparent(tp) if tp is not None else None
        if ids is None and ("b3" in headers or "x-b3-traceid" in headers):
            ids = _b3(headers)
        ctx.header = ids
        if ids is not None:
            ctx.trace_id, ctx.parent_span_id = ids
            ctx.source = "header"
            ctx.confidence = 1.0
        key = conn_key(conn, server, seq)
        ctx.key = key
        if server:
            client = self.clients.pop(key, None) if key is not None else None
            if client is not None:
                self._link_server(ctx, client)
            elif key is not None and self._client_traced(conn):
                ctx.pending = True
                self.pending[key] = ctx
            if ids is None and client is None:
                ctx.trace_id = f"{_getrandbits(128) or 1:032x}"
            act = self.active.get((pid, tid))
            if act is None:
                self.active[(pid, tid)] = [ctx]
            else:
                act.append(ctx)
        else:
            self._link_client(ctx, pid, tid)
            if key is not None:
                waiting = self.pending.pop(key, None)
                if waiting is not None:
                    self._link_server(waiting, ctx)
                    self._resolved(waiting)
                else:
                    self.clients[key] = ctx
        return ctx

    def _link_client(self, ctx: Context, pid: int, tid: int) -> None:
        """In-process parent of an outgoing request: the one server request
        this thread is handling. None or several: no link (a wrong parent is
        worse than none)."""
        act = self.active.get((pid, tid))
        header = ctx.header
        if act and len(act) == 1:
            parent = act[0]
            if header is None or header[0] == parent.trace_id:
                ctx.adopt(parent, "thread", 0.9)
                if header is not None:
                    ctx.source, ctx.confidence = "header", 1.0
                return
        elif act:
            self.stats.correlation_ambiguous += 1
        if header is None:
            ctx.trace_id = f"{_getrandbits(128) or 1:032x}"

    def _link_server(self, ctx: Context, client: Context) -> None:
        """The client span at the other end of the connection is the parent,
        unless the request's own header names another trace."""
        header = ctx.header
        if header is not None and header[0] != client.trace_id:
            return  # the application's explicit context wins
        ctx.adopt(client, "connection", 1.0)
        for c in ctx.children or ():
            c.set_trace(ctx.trace_id)

    def _resolved(self, ctx: Context) -> None:
        ctx.pending = False
        for c in ctx.children or ():
            c.set_trace(ctx.trace_id)
        if self.held:
            self._release()

    def finish(self, ctx: Context, span: Span) -> None:
        ctx.span = span
        ctx.done_ts = span.end_ktime
        if ctx.server:
            act = self.active.get((ctx.pid, ctx.tid))
            if act is not None:
                try:
                    act.remove(ctx)
                except ValueError:
                    pass
                if not act:
                    del self.active[(ctx.pid, ctx.tid)]
        if ctx.blocked():
            self.held.append(ctx)
            return
        self._emit(ctx)

    def abandon(self, ctx: Context) -> None:
        """A request that will never finish (connection lost): forget it."""
        if ctx.server:
            act = self.active.get((ctx.pid, ctx.tid))
            if act is not None and ctx in act:
                act.remove(ctx)
                if not act:
                    del self.active[(ctx.pid, ctx.tid)]
            if ctx.pending and ctx.key is not None:
                self.pending.pop(ctx.key, None)
                self._resolved(ctx)

    def _emit(self, ctx: Context) -> None:
        span = ctx.span
        span.trace_id = ctx.trace_id
        span.span_id = ctx.span_id
        span.parent_span_id = ctx.parent_span_id
        span.correlation_source = ctx.source
        span.correlation_confidence = ctx.confidence
        ctx.parent = None  # let the chain be collected
        self.stats.spans_emitted += 1
        self.sink(span)

    def _release(self) -> None:
        held, self.held = self.held, []
        for ctx in held:
            if ctx.blocked():
                self.held.append(ctx)
            else:
                self._emit(ctx)

    # ---- housekeeping ------------------------------------------------------------
    def flush(self, now_ktime: int, max_age_ns: int = 10_000_000_000) -> None:
        """Give up waiting: held spans past HOLD_NS, and match tables' entries
        older than max_age_ns (the other end is not traced)."""
        if self.held:
            for ctx in self.held:
                c = ctx
                while c is not None:
                    if c.pending and now_ktime - ctx.done_ts >= HOLD_NS:
                        self.pending.pop(c.key, None)
                        c.pending = False
                        self.stats.correlation_unresolved += 1
                    c = c.parent
            self._release()
        limit = now_ktime - max_age_ns
        for table in (self.clients, self.pending):
            old = []
            for key, ctx in table.items():  # insertion order: oldest first
                if ctx.start_ts > limit:
                    break
                old.append(key)
            for key in old:
                ctx = table.pop(key)
                if ctx.pending:
                    self._resolved(ctx)

    def close(self) -> None:
        """Shutdown: nothing more will resolve; emit what is held."""
        for ctx in self.pending.values():
            ctx.pending = False
        self.pending.clear()
        self.clients.clear()
        self._release()
