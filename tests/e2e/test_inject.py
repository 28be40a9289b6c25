"""Context propagation by injection (--inject), end to end: client -> Flask
frontend -> Flask backend, each in its own network namespace.

The frontend forwards x-request-id but never traceparent, and runs gunicorn
gthread with 4 threads under 8 concurrent clients: the only way the backend
can receive a traceparent is the kernel's sk_msg program. The load client is
not traced (only the frontend and backend namespaces are), so each trace is
exactly: frontend server span -> frontend client span -> backend server span.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

from harness import scenarios
from tests.e2e.test_correlation import _wait_http
from tests.e2e.tracing import TracerRun
from tests.kernel.conftest import require

N = 23
TRACE = "5cf92f3577b34da6a3ce929d0e0e{:04x}"
PARENT = "00f067aa0ba9{:04x}"

CLIENT = textwrap.dedent("""
    import sys, threading, requests
    from concurrent.futures import ThreadPoolExecutor
    base, n, workers, trace, parent = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \\
        sys.argv[4], sys.argv[5]
    local = threading.local()

    def one(i):
        s = local.__dict__.setdefault("s", requests.Session())  # keep-alive per thread
        h = {"x-request-id": f"inj-{i}"}
        if trace != "-":
            h["traceparent"] = f"00-{trace.format(i)}-{parent.format(i)}-01"
        if i % 3:
            r = s.get(f"{base}/api/items/{1 + i % 7}", headers=h)
        else:
            r = s.post(f"{base}/api/orders", json={"item_id": 3, "qty": 1}, headers=h)
        assert r.status_code in (200, 201), r.status_code

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(n)))
""")


def _chain(topology, tmp_path: Path, *tracer_args: str, incoming: bool = False):
    """Run the chain for N requests under the tracer; (spans, summary, backend
    ground truth by request id, tracer stderr)."""
    sc = scenarios.build("http-chain", tmp_path)
    for srv in sc.servers:  # backend first
        topology.spawn(srv.role, list(srv.argv), env={**os.environ, **srv.env})
    # generous: gunicorn starts in tens of seconds in an emulated (matrix) guest
    _wait_http(topology, "frontend", f"http://{scenarios.BACKEND}:8081/healthz", timeout=180)
    _wait_http(topology, "client", f"{sc.load_host}/healthz", timeout=180)
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    ns = [topology.ns(r) for r in ("frontend", "backend")]
    with TracerRun(tmp_path, *[a for n in ns for a in ("--netns", n)], *tracer_args) as tr:
        client = topology.spawn("client", [sys.executable, str(script), sc.load_host, str(N),
                                           "8", TRACE if incoming else "-", PARENT])
        assert client.wait(timeout=120) == 0
    gt = defaultdict(list)
    with open(tmp_path / "ground_truth.jsonl") as f:
        for line in f:
            rec = json.loads(line)
            if rec["service"] == "backend" and rec["kind"] == "server" and rec["request_id"]:
                gt[rec["request_id"]].append(rec)
    services = {topology.inode(r): r for r in ("frontend", "backend")}
    spans = [s for s in tr.spans if not s["path"].endswith("/healthz")]
    for s in spans:
        s["service"] = services[s["netns"]]
    return spans, tr.summary, gt, tr.stderr


@pytest.mark.timeout(600)
@pytest.mark.parametrize("incoming", [False, True], ids=["new-traces", "incoming-traceparent"])
def test_injected_traceparent_links_frontend_to_backend(topology, tmp_path: Path,
                                                        incoming: bool):
    require("btf", "ringbuf", "tracepoint_syscalls", "sockops", "sk_msg", "inject_object")
    spans, summary, gt, stderr = _chain(topology, tmp_path, "--inject", incoming=incoming)
    assert "--inject unavailable" not in stderr
    traces = defaultdict(list)
    for s in spans:
        traces[s["trace_id"]].append(s)
    assert len(traces) == N, sorted((s["service"], s["kind"], s["path"]) for s in spans)
    for i in range(N):
        rid = f"inj-{i}"
        (rec,) = gt[rid]
        assert rec["traceparent_in"], rec  # the kernel wrote it; the app forwards none
        mine = [s for s in spans if s["attributes"].get("http.request.header.x-request-id") == rid]
        by = {(s["service"], s["kind"]): s for s in mine}
        assert len(mine) == 3 and len(by) == 3, mine
        fsrv, fcli = by[("frontend", "server")], by[("frontend", "client")]
        bsrv = by[("backend", "server")]
        assert len(traces[fsrv["trace_id"]]) == 3
        assert {s["trace_id"] for s in mine} == {fsrv["trace_id"]}
        # what the backend received is exactly the frontend client span
        assert rec["traceparent_in"] == f"00-{fcli['trace_id']}-{fcli['span_id']}-01"
        assert fcli["parent_span_id"] == fsrv["span_id"]
        assert bsrv["parent_span_id"] == fcli["span_id"]
        assert fcli["correlation"]["source"] == "header"
        assert bsrv["correlation"]["source"] in ("header", "connection")
        if incoming:  # the client's trace id and parent are kept end to end
            assert fsrv["trace_id"] == TRACE.format(i)
            assert fsrv["parent_span_id"] == PARENT.format(i)
    inj = summary["inject"]
    assert inj["done"] == N and inj["push_fail"] == 0 and inj["lost"] == 0, inj
    assert summary["spans_injected"] == N
    assert summary["events_dropped"] == 0


@pytest.mark.timeout(600)
def test_injection_is_off_by_default(topology, tmp_path: Path):
    require("btf", "ringbuf", "tracepoint_syscalls")
    spans, summary, gt, _ = _chain(topology, tmp_path)
    assert len(gt) == N
    assert all(rec["traceparent_in"] is None for recs in gt.values() for rec in recs)
    assert "inject" not in summary
