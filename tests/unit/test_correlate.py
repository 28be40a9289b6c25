"""Correlation over synthetic event streams: client -> frontend -> backend."""

from tests.unit.synth import (
    ROLE_CLIENT,
    ROLE_SERVER,
    Clock,
    Conversation,
    http_request,
    http_response,
)
from tracer.conn import ConnectionTable
from tracer.stats import Stats

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


class Chain:
    """Client (pid 100) -> frontend (pid 200, one thread) -> backend (pid 300)."""

    def __init__(self, client_port=40000, front_port=50000, clock=None):
        self.clock = clock or Clock()
        c = self.clock
        self.cli = Conversation(c, 1, ROLE_CLIENT, pid=100, tid=100, comm="client",
                                laddr="10.0.0.2", lport=client_port, raddr="10.0.0.1", rport=8080)
        self.fsrv = Conversation(c, 2, ROLE_SERVER, pid=200, tid=201, comm="front",
                                 laddr="10.0.0.1", lport=8080, raddr="10.0.0.2",
                                 rport=client_port)
        self.fcli = Conversation(c, 3, ROLE_CLIENT, pid=200, tid=201, comm="front",
                                 laddr="10.0.0.1", lport=front_port, raddr="10.0.0.3",
                                 rport=9090)
        self.bsrv = Conversation(c, 4, ROLE_SERVER, pid=300, tid=301, comm="back",
                                 laddr="10.0.0.3", lport=9090, raddr="10.0.0.1",
                                 rport=front_port)
        self.events = []

    def _take(self, conv, evs):
        self.events.extend(evs if isinstance(evs, list) else [evs])

    def open(self):
        for conv in (self.cli, self.fsrv, self.fcli, self.bsrv):
            self._take(conv, conv.open())

    def request(self, i, headers=None, race=False):
        """One request through the chain, events in the order the agent sees them.
        race: the backend's read is seen before the frontend's write."""
        h = {"x-request-id": f"r{i}", **(headers or {})}
        self._take(self.cli, self.cli.request(http_request("GET", f"/front/{i}", h)))
        self._take(self.fsrv, self.fsrv.request(http_request("GET", f"/front/{i}", h)))
        down = http_request("GET", f"/back/{i}", {"x-request-id": f"r{i}"})
        if race:
            f = self.fcli.request(down)
            b = self.bsrv.request(down)
            self.events.extend(b + f)  # the backend's read overtakes the frontend's write
        else:
            self._take(self.fcli, self.fcli.request(down))
            self._take(self.bsrv, self.bsrv.request(down))
        self._take(self.bsrv, self.bsrv.response(http_response(200, body=b"b")))
        self._take(self.fcli, self.fcli.response(http_response(200, body=b"b")))
        self._take(self.fsrv, self.fsrv.response(http_response(201, body=b"f")))
        self._take(self.cli, self.cli.response(http_response(201, body=b"f")))


def run(events, flush_at=None):
    spans = []
    stats = Stats()
    table = ConnectionTable(spans.append, stats)
    for ev in events:
        table.handle(ev)
    if flush_at is not None:
        table.correlator.flush(flush_at)
    return spans, stats, table


def by_role(spans):
    out = {}
    for s in spans:
        out[(s.comm, s.kind)] = s
    return out


def check_chain(spans, header=False):
    s = by_role(spans)
    cli, fsrv = s[("client", "client")], s[("front", "server")]
    fcli, bsrv = s[("front", "client")], s[("back", "server")]
    assert len({x.trace_id for x in spans}) == 1
    assert len({x.span_id for x in spans}) == 4
    if header:
        assert cli.trace_id == TRACE
        assert (cli.parent_span_id, cli.correlation_source) == (PARENT, "header")
    else:
        assert (cli.parent_span_id, cli.correlation_source) == (None, "none")
    assert fsrv.parent_span_id == cli.span_id
    assert fcli.parent_span_id == fsrv.span_id
    assert bsrv.parent_span_id == fcli.span_id
    assert bsrv.correlation_source == "connection"
    assert fsrv.correlation_source == "connection"
    assert fcli.correlation_source == "thread"
    return s


def test_chain_without_headers_is_one_trace_with_exact_edges():
    ch = Chain()
    ch.open()
    ch.request(0)
    spans, stats, table = run(ch.events)
    assert len(spans) == 4
    check_chain(spans)
    assert stats.spans_emitted == 4
    assert not table.correlator.held and not table.correlator.pending


def test_incoming_traceparent_is_preserved_down_the_chain():
    ch = Chain()
    ch.open()
    ch.request(0, {"traceparent": f"00-{TRACE}-{PARENT}-01"})
    spans, _, _ = run(ch.events)
    s = check_chain(spans, header=True)
    assert s[("front", "server")].trace_id == TRACE


def test_b3_headers_are_understood():
    ch = Chain()
    ch.open()
    ch.request(0, {"X-B3-TraceId": TRACE, "X-B3-SpanId": PARENT, "X-B3-Sampled": "1"})
    spans, _, _ = run(ch.events)
    check_chain(spans, header=True)


def test_23_keepalive_requests_make_23_separate_traces():
    ch = Chain()
    ch.open()
    for i in range(23):
        ch.request(i)
    spans, stats, _ = run(ch.events)
    assert len(spans) == 4 * 23
    traces = {}
    for s in spans:
        traces.setdefault(s.trace_id, []).append(s)
    assert len(traces) == 23
    for group in traces.values():
        assert len({s.request_headers["x-request-id"] for s in group}) == 1
        check_chain(group)


def test_server_seen_before_its_client_is_resolved_not_guessed():
    ch = Chain()
    ch.open()
    ch.request(0, race=True)
    spans, stats, table = run(ch.events)
    check_chain(spans)
    assert stats.correlation_unresolved == 0
    assert not table.correlator.pending


def test_untraced_client_does_not_delay_the_server_span():
    clock = Clock()
    srv = Conversation(clock, 9, ROLE_SERVER, pid=300, laddr="10.0.0.3", lport=9090,
                       raddr="192.0.2.7", rport=1234)
    srv.open()
    srv.exchange(http_request("GET", "/x"), http_response(200))
    spans, stats, table = run(srv.events)
    assert len(spans) == 1  # emitted at once, not held for a client that is not traced
    assert spans[0].parent_span_id is None and spans[0].correlation_source == "none"


def test_missing_client_side_is_given_up_after_the_hold_window():
    ch = Chain()
    ch.open()
    ch.request(0)
    # drop the frontend's outgoing request events: the backend waits in vain
    fcli_req = {id(e) for e in ch.fcli.events if getattr(e, "direction", None) == 0}
    events = [e for e in ch.events if id(e) not in fcli_req]
    spans, stats, table = run(events)
    kinds = sorted((s.comm, s.kind) for s in spans)
    assert ("back", "server") not in kinds  # held
    table.correlator.flush(ch.clock.t + 10**9)
    back = [s for s in spans if s.comm == "back"]
    assert len(back) == 1 and back[0].parent_span_id is None
    assert stats.correlation_unresolved == 1


def test_event_loop_thread_with_two_requests_in_flight_makes_no_guess():
    clock = Clock()
    s1 = Conversation(clock, 1, ROLE_SERVER, pid=200, tid=201, lport=8080, rport=1)
    s2 = Conversation(clock, 2, ROLE_SERVER, pid=200, tid=201, lport=8080, rport=2)
    out = Conversation(clock, 3, ROLE_CLIENT, pid=200, tid=201, laddr="10.0.0.1", lport=5,
                       raddr="10.0.0.9", rport=80)
    for c in (s1, s2, out):
        c.open()
    s1.request(http_request("GET", "/a"))
    s2.request(http_request("GET", "/b"))
    out.exchange(http_request("GET", "/down"), http_response(200))
    s1.response(http_response(200))
    s2.response(http_response(200))
    events = sorted(s1.events + s2.events + out.events,
                    key=lambda e: getattr(e, "ts_exit", getattr(e, "ts", 0)))
    spans, stats, _ = run(events)
    down = [s for s in spans if s.path == "/down"][0]
    assert down.parent_span_id is None and down.correlation_source == "none"
    assert stats.correlation_ambiguous == 1


def test_thread_pool_requests_link_to_their_own_thread():
    """Two worker threads each handle one request and call downstream: each
    downstream call gets its own thread's request as parent."""
    clock = Clock()
    a = Conversation(clock, 1, ROLE_SERVER, pid=200, tid=211, lport=8080, rport=1)
    b = Conversation(clock, 2, ROLE_SERVER, pid=200, tid=212, lport=8080, rport=2)
    da = Conversation(clock, 3, ROLE_CLIENT, pid=200, tid=211, laddr="10.0.0.1", lport=5,
                      raddr="10.0.0.9", rport=80)
    db = Conversation(clock, 4, ROLE_CLIENT, pid=200, tid=212, laddr="10.0.0.1", lport=6,
                      raddr="10.0.0.9", rport=80)
    for c in (a, b, da, db):
        c.open()
    a.request(http_request("GET", "/a"))
    b.request(http_request("GET", "/b"))
    db.exchange(http_request("GET", "/down-b"), http_response(200))
    da.exchange(http_request("GET", "/down-a"), http_response(200))
    b.response(http_response(200))
    a.response(http_response(200))
    events = sorted(a.events + b.events + da.events + db.events,
                    key=lambda e: getattr(e, "ts_exit", getattr(e, "ts", 0)))
    spans, _, _ = run(events)
    p = {s.path: s for s in spans}
    assert p["/down-a"].parent_span_id == p["/a"].span_id
    assert p["/down-b"].parent_span_id == p["/b"].span_id
    assert p["/down-a"].trace_id == p["/a"].trace_id != p["/b"].trace_id


def test_connection_joined_late_pairs_by_order_and_time():
    """A keep-alive connection open before the tracer: its first request was
    read by a syscall the tracer never saw, so the server side starts one
    request later. Pairing must not shift: request i links to request i."""
    clock = Clock()
    cli = Conversation(clock, 1, ROLE_CLIENT, pid=100, tid=100, comm="client",
                       laddr="10.0.0.2", lport=40000, raddr="10.0.0.1", rport=8080)
    srv = Conversation(clock, 2, 0, pid=200, tid=201, comm="front", laddr="10.0.0.1",
                       lport=8080, raddr="10.0.0.2", rport=40000)
    cli.open()  # first sight (role known from connect for the client here)
    srv.open()  # ROLE_UNKNOWN: first sight of an old socket
    events = list(cli.events) + list(srv.events)
    for i in range(5):
        req = http_request("GET", f"/r{i}", {"x-request-id": f"r{i}"})
        events += cli.request(req)
        if i:  # the server's read of request 0 was already blocked at attach
            events += srv.request(req)
        events += srv.response(http_response(200, body=b"ok"))
        events += cli.response(http_response(200, body=b"ok"))
    spans, stats, _ = run(events)
    clients = {s.path: s for s in spans if s.kind == "client"}
    servers = {s.path: s for s in spans if s.kind == "server"}
    assert sorted(servers) == [f"/r{i}" for i in range(1, 5)]
    for path, s in servers.items():
        assert s.parent_span_id == clients[path].span_id
        assert s.trace_id == clients[path].trace_id
        assert s.correlation_source == "connection"


def _io_thread_case(in_flight: int):
    """Requests handled on worker threads; the downstream call is written by a
    separate I/O thread (as grpcio's event engine does)."""
    clock = Clock()
    servers = [Conversation(clock, 10 + k, ROLE_SERVER, pid=200, tid=210 + k, lport=8080,
                            rport=100 + k) for k in range(in_flight)]
    down = Conversation(clock, 3, ROLE_CLIENT, pid=200, tid=299, laddr="10.0.0.1", lport=5,
                        raddr="10.0.0.9", rport=80)
    for c in (*servers, down):
        c.open()
    for k, c in enumerate(servers):
        c.request(http_request("GET", f"/in{k}"))
    down.exchange(http_request("GET", "/down"), http_response(200))
    for c in servers:
        c.response(http_response(200))
    events = sorted([e for c in (*servers, down) for e in c.events],
                    key=lambda e: getattr(e, "ts_exit", getattr(e, "ts", 0)))
    spans, stats, _ = run(events)
    return {s.path: s for s in spans}, stats


def test_io_thread_call_links_to_the_one_request_waiting_for_a_call():
    """A call written by a thread that handles no request: the one request of
    the process that has made no call yet is its parent (0.6)."""
    p, stats = _io_thread_case(1)
    assert p["/down"].parent_span_id == p["/in0"].span_id
    assert p["/down"].trace_id == p["/in0"].trace_id
    assert (p["/down"].correlation_source, p["/down"].correlation_confidence) == ("thread", 0.6)
    assert stats.correlation_ambiguous == 0


def test_io_thread_call_with_two_requests_waiting_is_left_a_root():
    p, stats = _io_thread_case(2)
    assert p["/down"].parent_span_id is None
    assert p["/down"].correlation_source == "none"
    assert stats.correlation_ambiguous == 1


def test_ancestor_walk_is_bounded_even_on_a_cycle():
    """blocked() walks parents to find a pending one; the walk is bounded, so
    a long chain or (by any bug) a cycle can never stall the agent."""
    from tracer.correlate import MAX_DEPTH, Context

    a = Context("a" * 16, True, 1, 1, 0)
    b = Context("b" * 16, False, 1, 2, 0)
    a.parent, b.parent = b, a  # a cycle
    assert a.blocked() is False
    chain = [Context(f"{i:016x}", True, 1, i, 0) for i in range(MAX_DEPTH + 5)]
    for child, parent in zip(chain, chain[1:], strict=False):
        child.parent = parent
    chain[3].pending = True
    assert chain[0].blocked() is True
    chain[3].pending = False
    chain[-1].pending = True  # beyond the bound: not looked at
    assert chain[0].blocked() is False
