"""gRPC calls written by the channel's I/O thread (issue #16, scenario `mixed`).

A Flask frontend (pid 200, worker threads 211/212) calls a gRPC backend
(pid 300) over one shared grpcio channel. grpcio usually writes a call's
HEADERS from the calling thread, but when the channel is busy or not yet
connected its event-engine thread (tid 299) writes them, and the calling
thread makes no syscall at all during the call. Such a call takes as parent
the one request of the process that is waiting for its first call.
"""

from __future__ import annotations

from tests.unit.h2synth import H2Pair, grpc_frame
from tests.unit.synth import (
    EGRESS,
    INGRESS,
    ROLE_CLIENT,
    ROLE_SERVER,
    Clock,
    Conversation,
    http_request,
    http_response,
)
from tracer.conn import ConnectionTable
from tracer.stats import Stats

IO_TID = 299
PATH = "/bench.Catalog/GetItem"


def _traceparent(i: int) -> tuple[str, str, str]:
    trace, parent = f"{i + 1:032x}", f"{i + 1:016x}"
    return trace, parent, f"00-{trace}-{parent}-01"


class Mixed:
    """Frontend workers + one gRPC channel + the backend; events in time order."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.events: list = []
        self.workers: dict[int, Conversation] = {}
        self.h2 = H2Pair()
        self.chan = Conversation(self.clock, 90, ROLE_CLIENT, pid=200, tid=IO_TID,
                                 comm="event_engine", laddr="10.0.0.1", lport=5000,
                                 raddr="10.0.0.3", rport=50051)
        self.back = Conversation(self.clock, 91, ROLE_SERVER, pid=300, tid=301,
                                 comm="event_engine", laddr="10.0.0.3", lport=50051,
                                 raddr="10.0.0.1", rport=5000)
        self.events += [self.chan.open(), self.back.open()]
        self.moved = 0
        self._pump(IO_TID)  # preface and settings (connect)
        self.sids: dict[str, int] = {}

    def _pump(self, writer_tid: int) -> None:
        """Every h2 chunk not replayed yet: each write on one end, then the read
        of the same bytes on the other. Client writes by writer_tid; the
        client's reads are always the I/O thread's."""
        for direction, data in self.h2.chunks[self.moved:]:
            if direction == "c2s":
                self.events.append(self.chan.syscall(EGRESS, data, tid=writer_tid))
                self.events.append(self.back.syscall(INGRESS, data))
            else:
                self.events.append(self.back.syscall(EGRESS, data))
                self.events.append(self.chan.syscall(INGRESS, data, tid=IO_TID))
        self.moved = len(self.h2.chunks)

    def incoming(self, name: str, tid: int, port: int, tp: str | None = None) -> None:
        w = Conversation(self.clock, tid, ROLE_SERVER, pid=200, tid=tid, comm="python",
                         laddr="10.0.0.1", lport=8080, raddr="10.0.0.2", rport=port)
        self.workers[name] = w
        self.events.append(w.open())
        headers = {"x-request-id": name, **({"traceparent": tp} if tp else {})}
        self.events += w.request(http_request("GET", f"/{name}", headers))

    def call(self, *names: str, writer_tid: int) -> None:
        """gRPC calls of these requests, written together by writer_tid."""
        for name in names:
            self.sids[name] = self.h2.request("POST", PATH, {"x-request-id": name},
                                              grpc_frame(b"\x08\x01"), grpc=True, flush=False)
        self.h2.flush_client()
        self._pump(writer_tid)

    def reply(self, *names: str) -> None:
        for name in names:
            self.h2.respond(self.sids[name], 200, {"content-type": "application/grpc"},
                            grpc_frame(b"item"), {"grpc-status": "0"})
        self._pump(IO_TID)

    def answer(self, name: str) -> None:
        self.events += self.workers[name].response(http_response(200, body=b"{}"))

    def run(self):
        spans: list = []
        stats = Stats()
        table = ConnectionTable(spans.append, stats)
        for ev in self.events:
            table.handle(ev)
        table.correlator.close()
        out = {}
        for s in spans:
            rid = (s.request_headers or {}).get("x-request-id")
            out[(rid, s.pid, s.kind)] = s
        return out, stats


def test_call_written_by_the_io_thread_links_to_the_request_waiting_for_it():
    """The miss seen in `mixed`: request a made its call from its own thread
    and has its reply but has not answered yet; request b's call is written
    by the I/O thread. b's call (and the backend span under it) belong to b."""
    m = Mixed()
    ta, pa, tpa = _traceparent(1)
    tb, pb, tpb = _traceparent(2)
    m.incoming("a", 211, 41000, tpa)
    m.call("a", writer_tid=211)
    m.reply("a")
    m.incoming("b", 212, 41001, tpb)
    m.call("b", writer_tid=IO_TID)
    m.reply("b")
    m.answer("a")
    m.answer("b")
    s, stats = m.run()
    assert len(s) == 6
    for name, trace, parent in (("a", ta, pa), ("b", tb, pb)):
        srv, cli, back = s[(name, 200, "server")], s[(name, 200, "client")], s[(name, 300, "server")]
        assert (srv.trace_id, srv.parent_span_id) == (trace, parent)
        assert (cli.trace_id, cli.parent_span_id) == (trace, srv.span_id)
        assert (back.trace_id, back.parent_span_id) == (trace, cli.span_id)
        assert back.correlation_source == "connection"
    assert (s[("a", 200, "client")].tid, s[("b", 200, "client")].tid) == (211, IO_TID)
    assert (s[("a", 200, "client")].correlation_source,
            s[("a", 200, "client")].correlation_confidence) == ("thread", 0.9)
    assert (s[("b", 200, "client")].correlation_source,
            s[("b", 200, "client")].correlation_confidence) == ("thread", 0.6)
    assert stats.correlation_ambiguous == 0


def test_calls_queued_while_the_channel_connects_are_not_guessed():
    """Two requests both waiting for their first call when the I/O thread
    writes both calls in one write (the first requests of a fresh channel):
    stream order says nothing about which call is whose, so neither is linked."""
    m = Mixed()
    m.incoming("a", 211, 41000, _traceparent(1)[2])
    m.incoming("b", 212, 41001, _traceparent(2)[2])
    m.call("b", "a", writer_tid=IO_TID)
    m.reply("a", "b")
    m.answer("a")
    m.answer("b")
    s, stats = m.run()
    for name in ("a", "b"):
        cli = s[(name, 200, "client")]
        assert cli.parent_span_id is None and cli.correlation_source == "none"
        assert s[(name, 300, "server")].parent_span_id == cli.span_id
        assert cli.trace_id != s[(name, 200, "server")].trace_id
    assert stats.correlation_ambiguous == 2


def test_a_request_that_made_its_call_is_not_taken_where_requests_make_several():
    """Once the process is seen making two calls for one request, a request
    that made a call may be making another: the I/O-thread guess stops."""
    m = Mixed()
    m.incoming("x", 211, 41000, _traceparent(0)[2])
    m.call("x", writer_tid=211)
    m.reply("x")
    m.sids["x2"] = m.h2.request("POST", PATH, {"x-request-id": "x"}, grpc_frame(b"\x08\x02"),
                                grpc=True)
    m._pump(211)  # x's second call, from its own thread
    m.h2.respond(m.sids["x2"], 200, {"content-type": "application/grpc"}, grpc_frame(b"i"),
                 {"grpc-status": "0"})
    m._pump(IO_TID)
    m.answer("x")
    m.incoming("a", 211, 41001, _traceparent(1)[2])
    m.call("a", writer_tid=211)
    m.reply("a")
    m.incoming("b", 212, 41002, _traceparent(2)[2])
    m.call("b", writer_tid=IO_TID)  # a's second call or b's first: unknown
    m.reply("b")
    m.answer("a")
    m.answer("b")
    s, stats = m.run()
    assert s[("a", 200, "client")].parent_span_id == s[("a", 200, "server")].span_id
    assert s[("b", 200, "client")].parent_span_id is None
    assert s[("b", 200, "client")].correlation_source == "none"


def test_a_request_the_process_sent_to_itself_is_not_taken():
    """The only request waiting in the process came from the process itself
    (a call to its own port): an I/O-thread call is not linked to it, which
    would chain the process's own calls one under the next."""
    m = Mixed()
    loop_c = Conversation(m.clock, 70, ROLE_CLIENT, pid=200, tid=213, comm="python",
                          laddr="10.0.0.1", lport=42000, raddr="10.0.0.1", rport=8080)
    loop_s = Conversation(m.clock, 71, ROLE_SERVER, pid=200, tid=211, comm="python",
                          laddr="10.0.0.1", lport=8080, raddr="10.0.0.1", rport=42000)
    m.events += [loop_c.open(), loop_s.open()]
    req = http_request("GET", "/self", {"x-request-id": "self"})
    m.events += loop_c.request(req)
    m.events += loop_s.request(req)
    m.call("b", writer_tid=IO_TID)
    m.reply("b")
    resp = http_response(200, body=b"{}")
    m.events += loop_s.response(resp)
    m.events += loop_c.response(resp)
    s, _ = m.run()
    assert s[("self", 200, "server")].parent_span_id == s[("self", 200, "client")].span_id
    assert s[("b", 200, "client")].parent_span_id is None
