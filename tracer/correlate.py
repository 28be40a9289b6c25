# cython: annotation_typing=False, nonecheck=True
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
- "header":     a valid W3C traceparent (or B3) in the request; with --inject,
  also the traceparent the kernel wrote into a client request (`injected`):
  the client span takes those ids, its thread's server span the kernel's;
- "connection": the client span at the other end of the same TCP connection
  (5-tuple seen from both ends, netns-aware), matched by request order (HTTP/1)
  or stream id (HTTP/2);
- "thread":     for a client request, the server request that the same thread
  is handling now (thread-per-request servers). With several requests in flight
  on the thread (an event loop), the link is ambiguous and not made: a wrong
  parent is worse than none. A call written by a thread that handles no
  request (grpcio writes from its event-engine thread when the call's own
  thread finds the channel busy or not yet connected) takes the one request of
  the process that is waiting for its first call (confidence 0.6).
  In a Go process the thread is the goroutine (`runtime_parents`, tracer/golang.py;
  an asyncio task in tracer/pyasync.py):
  the server request whose goroutine (or an ancestor) made the call is the
  parent, exactly (confidence 1.0; the contract's source is still "thread").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import cython

from .connstate import Conn
from .tracecontext import header_sampled, new_span_id, new_trace_id, parse_b3, traceparent_ids

if TYPE_CHECKING:
    from .spans import Span

HOLD_NS = 200_000_000  # longest a finished span waits for its pending parent


MAX_QUEUE = 64  # unmatched requests remembered per connection and side
MAX_DEPTH = 64  # ancestors looked at for a pending one (real call chains are short)
MAX_FANOUT_PIDS = 65536  # processes remembered as making several calls per request


def conn_key(conn: Conn, server: bool) -> tuple | None:
    """The same key from both ends of one TCP connection (client address
    first), or None when the addresses are unknown. Loopback addresses are
    only unique inside one network namespace, so the netns joins the key
    there; other addresses are the same from both ends when there is no NAT."""
    if not conn.laddr or not conn.raddr:
        return None
    if server:
        key = (conn.raddr, conn.rport, conn.laddr, conn.lport)
    else:
        key = (conn.laddr, conn.lport, conn.raddr, conn.rport)
    if _loopback(conn.laddr):
        key += (conn.netns,)
    return key


def _loopback(addr: str) -> bool:
    # one prefix at a time: with a str argument these compile to C calls
    return addr.startswith("127.") or addr.startswith("::1")


@cython.freelist(64)  # one per request
@cython.cclass
class Context:
    """The ids of one span, fixed at request start; the parent may be resolved
    a little later (pending) when the server side is seen before the client."""

    __slots__ = ("trace_id", "span_id", "parent_span_id", "source", "confidence",
                 "pending", "parent", "children", "span", "server", "pid", "tid",
                 "key", "start_ts", "done_ts", "header", "flag", "sampled", "act", "inflight")

    def __init__(self, span_id: str, server: bool, pid: int, tid: int, start_ts: int) -> None:
        self._init(span_id, server, pid, tid, start_ts)

    def _init(self, span_id: str, server: bool, pid: int, tid: int, start_ts: int) -> None:
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
        self.flag: bool | None = None  # the request header's sampled flag, if any
        self.sampled: bool | None = None  # head sampling decision (tracer/sampling.py)
        # while a server request is active: its thread's list and its process's
        # set in Correlator.active(_pid), so that ending it needs no lookup
        self.act: list[Context] | None = None
        self.inflight: set[Context] | None = None

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
        for _i in range(MAX_DEPTH):  # bounded: a chain never costs more than this
            if c is None:
                return False
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
        # Unmatched requests per connection key (HTTP/1: FIFO, request order) or
        # per (key, stream id) (HTTP/2): client ones wait for their server side,
        # server ones (pending) for their client side.
        self.clients: dict[tuple, deque[Context]] = {}
        self.pending: dict[tuple, deque[Context]] = {}
        # server requests in progress per thread: in-process parent candidates.
        # Keyed by the tid alone: the kernel's (host namespace) tids are unique
        # across processes, and an int hashes cheaper than a (pid, tid) tuple
        self.active: dict[int, list[Context]] = {}
        # the same per process, for calls written by an I/O thread (a set:
        # an event loop may hold thousands)
        self.active_pid: dict[int, set[Context]] = {}
        # processes seen making several calls for one request: there, a request
        # that already made a call may be making the next one, so the I/O-thread
        # link ("the one request without a call yet") is not made
        self.fanout: set[int] = set()
        self.held: list[Context] = []  # finished but blocked by a pending context
        # local addresses of traced client sockets: a server request from one of
        # them may have a client span coming, so it is worth waiting for
        self.client_addrs: set[tuple[str, int]] = set()
        # --inject: (pid, tid, lport, rport, start_ts) -> the ids the kernel wrote
        # into this client request's traceparent (tracer.inject.Injected) or None
        self.injected: Callable | None = None
        # runtime add-ons (tracer/golang.py, tracer/pyasync.py), each
        # (conn, pid, start_ts) -> the server request whose goroutine or task
        # made this client request, or None (not one of its processes)
        self.runtime_parents: list[Callable] = []
        # the processes each runtime add-on follows (one set per add-on): their
        # calls are linked by its hook or not at all. A thread tells nothing
        # there (Go runs goroutines on any thread), so no thread link is tried
        self.runtime_pids: list[set[int]] = []
        # filters and head sampling (tracer.sampling.SpanPolicy): (ctx, span)
        # -> keep?; None keeps every span. Swapped on SIGHUP.
        self.policy: Callable | None = None

    def note_client(self, addr: str, netns: int) -> None:
        """A traced process connects from addr (seen at connect, before the
        server can read anything, and again at each client request)."""
        self.client_addrs.add((addr, netns if _loopback(addr) else 0))

    def _client_traced(self, conn: Conn) -> bool:
        addr = conn.raddr
        return (addr, conn.netns if _loopback(addr) else 0) in self.client_addrs

    # ---- hooks -------------------------------------------------------------------
    def start(self, conn: Conn, server: bool, pid: int, tid: int, headers: Mapping[str, str],
              seq: int | None = None, ts: int = 0) -> Context:
        """A request head was seen. seq: the HTTP/2 stream id (the same at both
        ends); None for HTTP/1, matched in order with a time check. ts: ktime of
        the request's start (client: write entry; server: read exit)."""
        ctx = Context.__new__(Context)  # without the generic call of Context(...)
        ctx._init(new_span_id(), server, pid, tid, ts)
        # a dict (every protocol's): its get without a method lookup
        tp = cython.cast(dict, headers).get("traceparent") if type(headers) is dict \
            else headers.get("traceparent")
        ids = None
        if tp is not None:
            tids = traceparent_ids(tp)  # parsed once: the flag comes with the ids
            if tids is not None:
                ids = (tids[0], tids[1])
                ctx.flag = tids[2]
        if ids is None and ("b3" in headers or "x-b3-traceid" in headers):
            ids = parse_b3(headers)
            if ids is not None:
                ctx.flag = header_sampled(headers)
        ctx.header = ids
        if ids is not None:
            ctx.trace_id, ctx.parent_span_id = ids
            ctx.source = "header"
            ctx.confidence = 1.0
        key = conn_key(conn, server)
        if key is not None and seq is not None:
            key = (key, seq)
        ctx.key = key
        if server:
            client = self._take(self.clients, key, ctx) if key is not None else None
            if client is not None:
                self._link_server(ctx, client)
            elif key is not None and self._client_traced(conn):
                ctx.pending = True
                _push(self.pending, key, ctx)
            if ids is None and client is None:
                ctx.trace_id = new_trace_id()
            self._activate(ctx)
        else:
            inj = (self.injected(pid, tid, conn.lport, conn.rport, ts)
                   if self.injected is not None and ids is None else None)
            parent = None
            if self.runtime_parents and ids is None and inj is None:
                for hook in self.runtime_parents:
                    parent = hook(conn, pid, ts)
                    if parent is not None:
                        break
            if inj is not None:
                self._link_injected(ctx, inj)
            elif parent is not None:
                ctx.adopt(parent, "thread", 1.0)
            else:
                self._link_client(ctx, pid, tid)
            if key is not None:
                self.note_client(conn.laddr, conn.netns)
                waiting = self._take(self.pending, key, ctx)
                if waiting is not None:
                    self._link_server(waiting, ctx)
                    self._resolved(waiting)
                else:
                    _push(self.clients, key, ctx)
        return ctx

    def _take(self, table: dict[tuple, deque[Context]], key: tuple,
              ctx: Context) -> Context | None:
        """The oldest waiting context of the other side that can pair with ctx.

        Time check (same kernel clock on both ends): a client request pairs
        with a server request that started (read returned) after the client
        began writing and before the client had its whole response. A client
        request whose server side was never seen (read already blocked when the
        tracer attached) is dropped here instead of shifting every later pair.
        """
        q = table.get(key)
        if not q:
            return None
        ts = ctx.start_ts
        while q:
            other = q[0]
            if ts and other.start_ts:
                if ctx.server:
                    if other.start_ts > ts:
                        return None  # our client's write has not been seen yet
                    if other.done_ts and other.done_ts < ts:
                        q.popleft()  # it finished before we started: never ours
                        continue
                elif other.start_ts < ts:
                    # a server request older than our write: its client was
                    # never seen, and it cannot be ours; stop it waiting
                    q.popleft()
                    other.pending = False
                    self.stats.correlation_unresolved += 1
                    self._resolved(other)
                    continue
            q.popleft()
            if not q:
                del table[key]
            return other
        del table[key]
        return None

    # A thread's list and a process's set stay when they empty (a server
    # thread handles request after request): flush() drops the empty ones.
    def _activate(self, ctx: Context) -> None:
        act = self.active.get(ctx.tid)
        if act is None:
            act = self.active[ctx.tid] = [ctx]
        else:
            act.append(ctx)
        ctx.act = act
        inflight = self.active_pid.get(ctx.pid)
        if inflight is None:
            inflight = self.active_pid[ctx.pid] = {ctx}
        else:
            inflight.add(ctx)
        ctx.inflight = inflight

    def _deactivate(self, ctx: Context) -> None:
        act = ctx.act
        if act:
            if act[-1] is ctx:
                act.pop()
            elif ctx in act:
                act.remove(ctx)
        inflight = ctx.inflight
        if inflight:
            inflight.discard(ctx)
        ctx.act = ctx.inflight = None

    def _link_client(self, ctx: Context, pid: int, tid: int) -> None:
        """In-process parent of an outgoing request: the one server request
        this thread is handling (0.9). Several: no link (a wrong parent is
        worse than none), counted as ambiguous. None (an I/O thread writes the
        call, e.g. grpcio's event engine): the one request of the process
        waiting for its first call (0.6, see _io_parent)."""
        for pids in self.runtime_pids:
            if pid in pids:
                self.stats.correlation_ambiguous += 1
                return
        act = self.active.get(tid)
        header = ctx.header
        parent = None
        confidence = 0.9
        if act:
            if len(act) == 1:
                parent = act[0]
            else:
                self.stats.correlation_ambiguous += 1
        else:
            parent = self._io_parent(ctx, pid)
            confidence = 0.6
        if parent is not None and (header is None or header[0] == parent.trace_id):
            if parent.children is not None and pid not in self.fanout:
                if len(self.fanout) >= MAX_FANOUT_PIDS:
                    self.fanout.clear()
                self.fanout.add(pid)  # a second call for one request
            ctx.adopt(parent, "thread", confidence)
            if header is not None:
                ctx.source, ctx.confidence = "header", 1.0
            return
        if header is None:
            ctx.trace_id = new_trace_id()

    def _io_parent(self, ctx: Context, pid: int) -> Context | None:
        """The parent of a call written by a thread that handles no request.

        The thread that made the call is blocked in it and writes nothing, so
        the call is matched by state: the request of the same process that
        started before the call was written and has made no call yet. Several
        such requests: ambiguous (counted), no link. "The process's only
        request in flight" is not enough: a request whose response write is
        not seen yet (another thread's event, a little late) would be taken;
        a request that made its call is not waiting for one, unless requests
        of this process make several calls (`fanout`: then no guess at all).
        A request this same process sent (a call to itself) is never taken:
        that would chain the process's own calls.
        """
        if pid in self.fanout:
            return None
        inflight = self.active_pid.get(pid)
        if not inflight:
            return None
        ts = ctx.start_ts
        found = None
        for cand in inflight:
            if cand.children is not None or (ts and cand.start_ts > ts):
                continue
            up = cand.parent
            if up is not None and up.pid == pid:
                continue
            if found is not None:
                self.stats.correlation_ambiguous += 1
                return None
            found = cand
        return found

    def _link_injected(self, ctx: Context, inj) -> None:
        """The kernel wrote traceparent into this request: the span takes
        exactly those ids, so the downstream server span is its child. Its
        parent is the server span the kernel's thread context stood for: the
        request this thread handles, which takes the kernel's span id (and
        trace id, unless an upstream link already fixed another one)."""
        ctx.trace_id, ctx.span_id = inj.trace_id, inj.span_id
        ctx.parent_span_id = inj.parent_id
        ctx.source, ctx.confidence = "header", 1.0
        self.stats.spans_injected += 1
        if inj.parent_id is None:
            return
        act = self.active.get(ctx.tid)
        if not act or len(act) != 1:
            return
        parent = act[0]
        if parent.trace_id != inj.trace_id:
            if parent.header is not None or parent.parent is not None or parent.pending:
                self.stats.injected_conflicts += 1  # upstream fixed another trace
                return
            parent.set_trace(inj.trace_id)
        if parent.span_id != inj.parent_id:
            old = parent.span_id
            parent.span_id = inj.parent_id
            for c in parent.children or ():
                if c.parent_span_id == old:
                    c.parent_span_id = inj.parent_id
        ctx.adopt(parent, "header", 1.0)

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
            self._deactivate(ctx)
        if ctx.blocked():
            self.held.append(ctx)
            return
        self._emit(ctx)

    def abandon(self, ctx: Context) -> None:
        """A request that will never finish (connection lost): forget it."""
        if ctx.server:
            self._deactivate(ctx)
            if ctx.pending and ctx.key is not None:
                self._unqueue(ctx)
                self._resolved(ctx)

    def _emit(self, ctx: Context) -> None:
        span = ctx.span
        span.trace_id = ctx.trace_id
        span.span_id = ctx.span_id
        span.parent_span_id = ctx.parent_span_id
        span.correlation_source = ctx.source
        span.correlation_confidence = ctx.confidence
        policy = self.policy
        keep = policy is None or policy(ctx, span)  # may read the parent chain
        ctx.parent = None  # let the chain be collected
        if not keep:
            return
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
        """Give up waiting: held spans past HOLD_NS, and unmatched requests
        whose other side is evidently not traced."""
        if self.held:
            for ctx in self.held:
                c = ctx
                for _i in range(MAX_DEPTH):
                    if c is None:
                        break
                    if c.pending and now_ktime - ctx.done_ts >= HOLD_NS:
                        self._unqueue(c)
                        c.pending = False
                        self.stats.correlation_unresolved += 1
                    c = c.parent
            self._release()
        for d in (self.active, self.active_pid):
            for k in [k for k, v in d.items() if not v]:
                del d[k]
        old = now_ktime - max_age_ns
        done = now_ktime - HOLD_NS
        for table in (self.clients, self.pending):
            for key in list(table):
                q = table[key]
                while q and (q[0].start_ts < old or 0 < q[0].done_ts < done):
                    stale = q.popleft()
                    if stale.pending:
                        stale.pending = False
                        self._resolved(stale)
                if not q:
                    del table[key]

    def _unqueue(self, ctx: Context) -> None:
        q = self.pending.get(ctx.key)
        if q is not None and ctx in q:
            q.remove(ctx)
            if not q:
                del self.pending[ctx.key]

    def close(self) -> None:
        """Shutdown: nothing more will resolve; emit what is held."""
        for q in self.pending.values():
            for ctx in q:
                ctx.pending = False
        self.pending.clear()
        self.clients.clear()
        self._release()


def _push(table: dict[tuple, deque[Context]], key: tuple, ctx: Context) -> None:
    q = table.get(key)
    if q is None:
        table[key] = deque((ctx,))
    else:
        if len(q) >= MAX_QUEUE:
            q.popleft()
        q.append(ctx)
