"""Distributed traces end to end: client -> Flask frontend -> Flask backend,
each in its own network namespace, all traced by one tracer.

The frontend forwards x-request-id but never traceparent (an uninstrumented
app), so every link below the frontend is the tracer's own work: the
connection 5-tuple across namespaces and the thread that handles the request.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import pytest

from harness import scenarios
from tests.e2e.tracing import TracerRun
from tests.kernel.conftest import require

N = 23
TRACE = "4bf92f3577b34da6a3ce929d0e0e{:04x}"
PARENT = "00f067aa0ba9{:04x}"

CLIENT = textwrap.dedent("""
    import sys, threading, requests
    from concurrent.futures import ThreadPoolExecutor
    base, n, trace, parent = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    workers = int(sys.argv[5])
    local = threading.local()

    def one(i):
        s = local.__dict__.setdefault("s", requests.Session())  # keep-alive per thread
        h = {"x-request-id": f"corr-{i}"}
        if i >= n:
            h["traceparent"] = f"00-{trace.format(i)}-{parent.format(i)}-01"
        if i % 3:
            r = s.get(f"{base}/api/items/{1 + i % 7}", headers=h)
        else:
            r = s.post(f"{base}/api/orders", json={"item_id": 3, "qty": 1}, headers=h)
        assert r.status_code in (200, 201), r.status_code

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(2 * n)))
""")


def _traces(spans):
    out = defaultdict(list)
    for s in spans:
        out[s["trace_id"]].append(s)
    return out


def _wait_http(topology, role: str, url: str, timeout: float = 20.0) -> None:
    """Wait until url answers from namespace role (HTTP servers)."""
    probe = [sys.executable, "-c", f"import requests; requests.get('{url}', timeout=1)"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = topology.spawn(role, probe, stderr=subprocess.DEVNULL)
        if p.wait() == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def _wait_port(topology, role: str, addr: str, port: int) -> None:
    p = topology.spawn(role, [sys.executable, "-m", "harness.probe", f"{addr}:{port}",
                              "--timeout", "30"], stderr=subprocess.DEVNULL)
    assert p.wait(timeout=40) == 0, f"{addr}:{port} did not come up"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("scenario, concurrency", [
    ("http-chain", 1), ("http-chain", 8), ("mixed", 1)],
    ids=["flask-backend-sequential", "flask-backend-8-concurrent", "grpc-backend-sequential"])
def test_chain_traces_with_and_without_incoming_context(topology, tmp_path: Path,
                                                         scenario: str, concurrency: int):
    """The frontend is gunicorn gthread with 4 threads: with 8 concurrent
    clients its threads interleave requests, and each outgoing call must still
    link to the request its own thread is handling (exact for thread-per-request
    pools). With the gRPC backend (`mixed`), grpcio may write the call from its
    I/O thread: the link then relies on one request in flight in the frontend,
    which holds when requests are sequential (the concurrent case is a
    heuristic, measured by the harness)."""
    require("btf", "ringbuf", "tracepoint_syscalls")
    sc = scenarios.build(scenario, tmp_path)
    if scenario == "mixed":
        from workloads.grpc_service.stubs import ensure_stubs

        ensure_stubs()
    for srv in sc.servers:  # backend first
        topology.spawn(srv.role, list(srv.argv), env={**os.environ, **srv.env})
        _wait_port(topology, "client" if srv.role == "frontend" else "frontend",
                   srv.addr, srv.port)
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    ns = [topology.ns(r) for r in ("client", "frontend", "backend")]
    with TracerRun(tmp_path, *[a for n in ns for a in ("--netns", n)]) as tr:
        client = topology.spawn("client", [sys.executable, str(script), sc.load_host, str(N),
                                           TRACE, PARENT, str(concurrency)])
        assert client.wait(timeout=120) == 0
    services = {topology.inode(r): r for r in ("client", "frontend", "backend")}
    spans = [s for s in tr.spans if not s["path"].endswith("/healthz")]
    for s in spans:
        s["service"] = services[s["netns"]]
    # grpcio sometimes writes a call from its I/O thread, which handles no
    # request: that one link (frontend server -> its gRPC call) is left out by
    # design, never guessed. Everything else is exact.
    heuristic = scenario == "mixed"
    if not heuristic:
        traces = _traces(spans)
        assert len(traces) == 2 * N, sorted((s["service"], s["kind"], s["path"]) for s in spans)
    thread_links = 0
    for i in range(2 * N):
        rid = f"corr-{i}"
        mine = [s for s in spans if s["attributes"].get("http.request.header.x-request-id") == rid]
        assert len(mine) == 4, mine
        by = {(s["service"], s["kind"]): s for s in mine}
        cli, fsrv = by[("client", "client")], by[("frontend", "server")]
        fcli, bsrv = by[("frontend", "client")], by[("backend", "server")]
        if i >= N:  # the incoming trace id is preserved, the given parent kept
            assert cli["trace_id"] == TRACE.format(i)
            assert cli["parent_span_id"] == PARENT.format(i)
            assert cli["correlation"]["source"] == "header"
        else:
            assert cli["parent_span_id"] is None
        assert fsrv["parent_span_id"] == cli["span_id"]
        assert fsrv["trace_id"] == cli["trace_id"]
        assert bsrv["parent_span_id"] == fcli["span_id"]
        assert bsrv["trace_id"] == fcli["trace_id"]
        assert bsrv["correlation"] == {"source": "connection", "confidence": 1.0}
        if fcli["parent_span_id"] is not None or not heuristic:
            assert fcli["parent_span_id"] == fsrv["span_id"]  # never a wrong parent
            assert fcli["correlation"]["source"] == "thread"
            assert len({s["trace_id"] for s in mine}) == 1
            thread_links += 1
        else:
            assert fcli["correlation"]["source"] == "none"
        if scenario == "mixed":
            assert (fcli["protocol"], bsrv["protocol"]) == ("grpc", "grpc")
            assert bsrv["path"] == "/bench.Catalog/GetItem"
    # measured, not exact, for grpcio: most calls are written by the caller
    assert thread_links >= (0.8 * 2 * N if heuristic else 2 * N), thread_links
    assert tr.summary["correlation_unresolved"] == 0
    assert tr.summary["events_dropped"] == 0
