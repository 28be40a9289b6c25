# cython: annotation_typing=False
"""The owner of an HTTP/1 connection's two parsers: pairs requests with
responses, starts and finishes their trace context, and builds the spans.
The parsers (tracer/protocols/http1.py) know none of this: bytes in, messages
out, through the Listener interface implemented here.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from tracer.connstate import Conn
from tracer.events import ConnRole, DataDir, DataEvent
from tracer.protocols.http1 import LOST, MAX_PIPELINED, Http1Parser, Listener, Message
from tracer.spans import http1_span

if TYPE_CHECKING:
    from tracer.conn import ConnectionTable

_ROLE_SERVER = int(ConnRole.ROLE_SERVER)
_INGRESS = int(DataDir.DIR_INGRESS)
_EGRESS = int(DataDir.DIR_EGRESS)


class Http1Session(Listener):
    """HTTP/1 on one connection: two parsers and in-order request/response pairing.

    Pairing is FIFO (HTTP/1 answers in order, pipelined or not). Interim 1xx
    responses pair with nothing; 101 and CONNECT-2xx end parsing (another
    protocol follows)."""

    __slots__ = ("conn", "table", "stats", "req", "resp", "pending", "req_dir", "dead",
                 "server", "correlator")

    def __init__(self, conn: Conn, table: ConnectionTable) -> None:
        self.conn = conn
        self.table = table
        self.stats = table.stats
        self.correlator = table.correlator
        self.req = Http1Parser(True, self, table.stats)
        self.resp = Http1Parser(False, self, table.stats)
        self.pending: deque[Message] = deque()
        self.server = conn.role == _ROLE_SERVER
        self.req_dir = _INGRESS if self.server else _EGRESS
        self.dead = False

    def on_data(self, ev: DataEvent) -> None:
        if ev.direction == self.req_dir:
            self.req.feed(ev)
        else:
            self.resp.feed(ev)

    def on_close(self, eof: bool) -> None:
        """eof: the socket was closed, so a close-delimited response is complete.
        Otherwise (shutdown, expiry) whatever is unfinished counts as lost."""
        if self.dead:
            return
        if eof:
            self.resp.finish_lost()
        stats = self.stats
        if self.req.buf:  # a request head never finished
            stats.incomplete_requests += 1
        stats.incomplete_requests += len(self.pending)
        self._abandon()
        self.req.stop()
        self.resp.stop()
        self.dead = True

    # ---- Listener ----

    def on_head(self, parser: Http1Parser, msg: Message) -> None:
        # direction alternation: a message starting on one side ends the other
        # side's message whose end we lost (a request is over once its response
        # starts; a response once the next request starts)
        if parser is self.req:
            resp = self.resp
            if resp.state == LOST:  # else finish_lost has nothing to do: skip the call
                resp.finish_lost()
            if len(self.pending) >= MAX_PIPELINED:
                self.stats.requests_overflow += 1
                self._give_up()
                return
            self.pending.append(msg)
            ev = msg.first_ev
            msg.ctx = self.correlator.start(
                self.conn, self.server, ev.pid, ev.tid, msg._headers_dict(), None,
                ev.ts_exit if self.server else ev.ts_enter)
        else:
            req = self.req
            if req.state == LOST:
                req.finish_lost()

    def on_end(self, parser: Http1Parser, msg: Message) -> None:
        if parser is self.req:
            return
        status = msg.status
        if status < 200 and status != 101:
            return  # interim response: the final one follows
        pending = self.pending
        if not pending:
            self.stats.unpaired_responses += 1
            return
        req = pending.popleft()
        self.correlator.finish(req.ctx, http1_span(self.conn, req, msg,
                                                   self.table.clock_offset_ns))
        if status == 101 or (req.method == "CONNECT" and 200 <= status < 300):
            self.stats.upgraded_connections += 1
            self.stats.incomplete_requests += len(pending)
            self._abandon()
            self.req.stop()
            self.resp.stop()
            self.dead = True
            self.conn.give_up(counted=False)

    def on_malformed(self, parser: Http1Parser, nbytes: int) -> None:
        self.stats.unparsed_bytes += nbytes
        self._give_up()

    def _give_up(self) -> None:
        """Stop parsing this connection for good, counted: the requests in
        flight as incomplete, the connection as unparsed."""
        self.stats.incomplete_requests += len(self.pending)
        self._abandon()
        self.req.stop()
        self.resp.stop()
        self.dead = True
        self.conn.give_up(counted=True)

    def _abandon(self) -> None:
        correlator = self.correlator
        for msg in self.pending:
            if msg.ctx is not None:
                correlator.abandon(msg.ctx)
        self.pending.clear()

    def request_method(self) -> str | None:
        pending = self.pending
        return pending[0].method if pending else None
