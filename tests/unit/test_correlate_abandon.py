"""Correlator.abandon: a server request whose connection was lost leaves the
pending queue (through _unqueue, the one place that edits it), stops being an
in-process parent candidate, and releases the spans it held back."""

from __future__ import annotations

import ast
from pathlib import Path

from tracer.connstate import Conn
from tracer.correlate import Correlator
from tracer.spans import Span
from tracer.stats import Stats

SRC = Path(__file__).resolve().parents[2] / "tracer" / "correlate.py"


def _conn(laddr, lport, raddr, rport):
    conn = Conn(None, 1, 0)
    conn.laddr, conn.lport, conn.raddr, conn.rport, conn.netns = laddr, lport, raddr, rport, 1
    return conn


def test_abandon_unqueues_and_releases():
    spans = []
    c = Correlator(spans.append, Stats())
    srv = _conn("10.0.0.1", 8080, "10.0.0.2", 40000)
    c.note_client("10.0.0.2", 1)  # the caller is traced: its server side waits for it
    a = c.start(srv, True, 200, 201, {}, ts=10)
    b = c.start(srv, True, 200, 202, {}, ts=20)
    key = ("10.0.0.2", 40000, "10.0.0.1", 8080)
    assert a.pending and b.pending and list(c.pending[key]) == [a, b]
    # a's thread calls a backend: the call's span is held while a is pending
    call = c.start(_conn("10.0.0.1", 50000, "10.0.0.3", 9090), False, 200, 201, {}, ts=30)
    assert call.parent is a
    c.finish(call, Span(kind="client", end_ktime=40))
    assert spans == [] and c.held == [call]

    c.abandon(a)
    assert not a.pending and list(c.pending[key]) == [b]
    assert not c.active.get(201) and c.active_pid[200] == {b}
    assert c.held == [] and [s.span_id for s in spans] == [call.span_id]
    assert spans[0].trace_id == a.trace_id and spans[0].parent_span_id == a.span_id

    c.abandon(b)
    assert c.pending == {} and not any(c.active.values()) and not any(c.active_pid.values())
    c.flush(100)  # housekeeping drops the emptied entries
    assert c.active == {} and c.active_pid == {}
    c.abandon(b)  # twice: nothing left to forget
    assert c.pending == {} and len(spans) == 1


def test_only_unqueue_removes_from_the_pending_queues():
    """abandon and flush give a context up through _unqueue, not a copy of it."""
    tree = ast.parse(SRC.read_text())
    editors = set()
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Delete) and any(
                    isinstance(t, ast.Subscript) and ast.unparse(t.value) == "self.pending"
                    for t in node.targets):
                editors.add(fn.name)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "remove" and ast.unparse(node.func.value) == "q":
                editors.add(fn.name)
    assert editors == {"_unqueue"}
