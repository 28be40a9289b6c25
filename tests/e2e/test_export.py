"""Exporters end to end: the real tracer CLI, a real HTTP server and client, and
real receivers in this process (an opentelemetry-proto TraceService over gRPC,
an OTLP/HTTP endpoint), decoded with the official protos.

Count-exact: 23 requests give 23 server + 23 client spans in the JSONL output,
and exactly those 46 spans, field by field, at the receiver.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

import pytest
import requests
from opentelemetry.proto.trace.v1 import trace_pb2
from prometheus_client.parser import text_string_to_metric_families

from harness.receivers import GrpcReceiver, HttpReceiver, attrs
from tests.e2e.test_http1 import plan
from tests.e2e.tracing import TracerRun, free_port, py_server
from tests.kernel.conftest import require

SLEEP_MS = 20
KIND = {"server": trace_pb2.Span.SPAN_KIND_SERVER, "client": trace_pb2.Span.SPAN_KIND_CLIENT}


@pytest.fixture(autouse=True)
def _needs_kernel():
    require("btf", "ringbuf", "tracepoint_syscalls")


def send(port: int, expected, suffix: str = "", keepalive: bool = True) -> None:
    """keepalive=False: a connection per request, which avoids the 40 ms Nagle +
    delayed-ACK stall http.server's two writes per response cause without a sleep."""
    with requests.Session() as session:
        for i, (method, path, query, status) in enumerate(expected):
            url = f"http://127.0.0.1:{port}{path}{suffix}" + (f"?{query}" if query else "")
            call = session.request if keepalive else requests.request
            r = call(method, url, data=b"x" * i if method == "POST" else None)
            assert r.status_code == status


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def is_error(s: dict) -> bool:
    return s["status"] >= 500 or (s["kind"] == "client" and s["status"] >= 400)


def check_exported(received, jsonl: list[dict], server_pid: int) -> None:
    """Every JSONL span arrived once, with the same ids, times and attributes."""
    got = {span.span_id.hex(): (res, span) for res, span in received}
    assert len(got) == len(received) == len(jsonl)
    for s in jsonl:
        res, o = got[s["span_id"]]
        assert o.trace_id.hex() == s["trace_id"]
        assert (o.parent_span_id.hex() or None) == s["parent_span_id"]
        assert o.kind == KIND[s["kind"]]
        route = "/".join("{id}" if seg.isdigit() else seg for seg in s["path"].split("/"))
        assert o.name == f"{s['method']} {route}"
        assert o.start_time_unix_nano == s["start_time_unix_nano"]
        assert o.end_time_unix_nano - o.start_time_unix_nano == s["duration_ns"]
        a = attrs(o.attributes)
        for k, v in s["attributes"].items():
            assert a[k] == v, k
        assert a["network.peer.address"] == s["peer_addr"]
        assert a["network.peer.port"] == s["peer_port"]
        assert a["thread.id"] == s["tid"]
        if is_error(s):
            assert o.status.code == trace_pb2.Status.STATUS_CODE_ERROR
            assert a["error.type"] == str(s["status"])
        else:
            assert o.status.code == trace_pb2.Status.STATUS_CODE_UNSET
            assert "error.type" not in a
        assert res["service.name"] == s["comm"]
        assert res["process.pid"] == s["pid"]
        assert res["process.executable.name"] == s["comm"]
        assert res["host.name"] == os.uname().nodename
    assert {res["process.pid"] for res, _ in received} == {server_pid, os.getpid()}


@pytest.mark.parametrize("receiver,scheme", [(GrpcReceiver, "otlp-grpc"),
                                             (HttpReceiver, "otlp-http")],
                         ids=["grpc", "http"])
def test_otlp_23_exact(tmp_path, receiver, scheme):
    port = free_port()
    expected = plan()
    with receiver() as rx, py_server(port, SLEEP_MS) as srv:
        url = f"{scheme}://127.0.0.1:{rx.port}"
        with TracerRun(tmp_path, "--port", str(port), "--export", url) as tr:
            send(port, expected)
        # the tracer flushes its exporters before it exits
        received = rx.spans()
    assert tr.returncode == 0
    assert len(tr.by("server", srv.pid)) == 23 and len(tr.by("client", os.getpid())) == 23
    assert len(tr.spans) == 46
    check_exported(received, tr.spans, srv.pid)
    server = sorted((s for _, s in received if s.kind == KIND["server"]),
                    key=lambda s: s.start_time_unix_nano)
    assert [attrs(s.attributes)["url.path"] for s in server] == [p for _, p, _, _ in expected]
    assert [attrs(s.attributes)["http.response.status_code"] for s in server] == \
        [st for *_, st in expected]
    sm = tr.summary
    assert (sm["spans_exported"], sm["spans_export_failed"], sm["spans_export_dropped"]) == \
        (46, 0, 0)
    label = url + ("/v1/traces" if scheme == "otlp-http" else "")
    assert list(sm["exporters"]) == [label]
    assert sm["exporters"][label]["spans_submitted"] == 46
    assert "exported 46, export failed 0, export dropped 0" in tr.stderr


def test_receiver_outage_drops_counted_and_recovery(tmp_path, monkeypatch):
    # a small queue so that an outage of a few hundred spans overflows it
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "50")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("OTEL_BSP_EXPORT_TIMEOUT", "3000")
    port = free_port()
    rx = GrpcReceiver().start()
    rx_port = rx.port
    try:
        with py_server(port, 0), \
                TracerRun(tmp_path, "--port", str(port),
                          "--export", f"otlp-grpc://127.0.0.1:{rx_port}") as tr:
            send(port, plan(), "/before")
            assert len(rx.wait_spans(46)) == 46
            rss_before = rss_kb(tr.proc.pid)
            rx.stop()
            # the outage: 300 requests, 600 spans, for a queue of 50
            send(port, [("GET", f"/ok/{i}", "", 200) for i in range(300)], "/during",
                 keepalive=False)
            time.sleep(1.0)  # the sender keeps retrying meanwhile
            assert tr.proc.poll() is None  # still tracing
            rss_during = rss_kb(tr.proc.pid)
            rx2 = GrpcReceiver(rx_port).start()
            send(port, plan(), "/after")
            after_ids = None
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # spans after the restart arrive
                got = rx2.spans()
                paths = [attrs(s.attributes)["url.path"] for _, s in got]
                if sum(p.endswith("/after") for p in paths) == 46:
                    after_ids = {s.span_id.hex() for _, s in got}
                    break
                time.sleep(0.2)
            assert after_ids is not None, "spans after the restart did not arrive"
    finally:
        rx.stop()
    rx_ids = {s.span_id.hex() for _, s in rx.spans() + rx2.spans()}
    rx2.stop()
    assert tr.returncode == 0
    sm = tr.summary
    assert sm["spans_emitted"] == 46 + 600 + 46 == len(tr.spans)
    # every span is in exactly one counter, and the receiver got the exported ones
    assert sm["spans_exported"] + sm["spans_export_failed"] + sm["spans_export_dropped"] == \
        sm["spans_emitted"]
    # the queue (50) and the batch in flight (10) hold the only outage spans that
    # can survive; the rest is dropped (queue full) or failed (retries ran out)
    assert sm["spans_export_dropped"] > 0
    assert sm["spans_export_dropped"] + sm["spans_export_failed"] >= 600 - 50 - 10
    assert sm["export_retries"] > 0
    # the receiver got every exported span; an export that timed out on a
    # loaded machine may have been delivered all the same (at-least-once): it
    # is counted failed, never lost
    assert sm["spans_exported"] <= len(rx_ids) <= sm["spans_exported"] + sm["spans_export_failed"]
    assert {s["span_id"] for s in tr.spans if s["path"].endswith("/after")} <= after_ids
    # RSS stays bounded: the queue holds 50 spans, not the outage's 600
    assert rss_during - rss_before < 4096, (rss_before, rss_during)


def _scrape(port: int) -> dict:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@contextlib.contextmanager
def bpf_stats():
    """BPF run-time stats on while the fd is held (the sysctl reads 1 meanwhile);
    unlike writing the sysctl, nothing else's setting is changed."""
    from tracer import loader

    fd = loader.libbpf().bpf_enable_stats(0)  # BPF_STATS_RUN_TIME
    if fd < 0:
        pytest.skip(f"bpf_enable_stats failed ({fd})")
    try:
        yield
    finally:
        os.close(fd)


def test_metrics_request_counter_is_23(tmp_path):
    port, mport = free_port(), free_port()
    with bpf_stats(), py_server(port, SLEEP_MS) as srv, \
            TracerRun(tmp_path, "--port", str(port), "--metrics", f"127.0.0.1:{mport}") as tr:
        send(port, [("GET", f"/ok/{i}", "", 200) for i in range(23)])
        with open(f"/proc/{srv.pid}/comm") as f:
            server_comm = f.read().strip()
        deadline = time.monotonic() + 10
        while True:
            m = _scrape(mport)
            if m.get(("httptrace_spans_emitted_total", ())) == 46 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert tr.returncode == 0
    server = tuple(sorted({"service": server_comm, "kind": "server", "method": "GET",
                           "route": "/ok/{id}"}.items()))
    assert m[("httptrace_requests_total", server)] == 23
    assert m.get(("httptrace_request_errors_total", server), 0) == 0
    assert m[("httptrace_request_duration_seconds_count", server)] == 23
    le = dict(server)
    assert m[("httptrace_request_duration_seconds_bucket",
              tuple(sorted({**le, "le": "0.01"}.items())))] == 0  # each slept 20 ms
    assert m[("httptrace_request_duration_seconds_bucket",
              tuple(sorted({**le, "le": "+Inf"}.items())))] == 23
    client = [v for (name, lbl), v in m.items()
              if name == "httptrace_requests_total" and dict(lbl)["kind"] == "client"]
    assert client == [23]
    assert m[("httptrace_spans_emitted_total", ())] == 46
    assert m[("httptrace_events_dropped_total", ())] == 0
    assert m[("httptrace_events_delivered_total", ())] > 0
    assert 0 <= m[("httptrace_ring_buffer_fill_ratio", ())] <= 1
    runs = {dict(lbl)["program"]: v for (name, lbl), v in m.items()
            if name == "httptrace_bpf_prog_runs_total"}
    assert len(runs) == tr.summary["programs_attached"]
    assert sum(runs.values()) > 0
    assert sum(v for (name, _), v in m.items()
               if name == "httptrace_bpf_prog_run_seconds_total") > 0


def test_jaeger_json_23(tmp_path):
    port = free_port()
    out = tmp_path / "traces.json"
    with py_server(port, SLEEP_MS), \
            TracerRun(tmp_path, "--port", str(port), "--export", f"jaeger-json:{out}") as tr:
        send(port, plan())
    assert tr.returncode == 0
    doc = json.loads(out.read_text())
    assert set(doc) >= {"data"}
    spans = [s for t in doc["data"] for s in t["spans"]]
    assert len(spans) == 46
    by_trace: dict[str, set] = {}
    for s in tr.spans:
        by_trace.setdefault(s["trace_id"], set()).add(s["span_id"])
    assert {t["traceID"]: {s["spanID"] for s in t["spans"]} for t in doc["data"]} == by_trace
    jsonl = {s["span_id"]: s for s in tr.spans}
    for t in doc["data"]:
        for s in t["spans"]:
            src = jsonl[s["spanID"]]
            assert s["traceID"] == t["traceID"]
            assert s["processID"] in t["processes"]
            assert t["processes"][s["processID"]]["serviceName"] == src["comm"]
            assert s["startTime"] == src["start_time_unix_nano"] // 1000
            assert s["duration"] == src["duration_ns"] // 1000
            refs = [(r["refType"], r["spanID"]) for r in s["references"]]
            assert refs == ([("CHILD_OF", src["parent_span_id"])] if src["parent_span_id"]
                            else [])
            tags = {x["key"]: x["value"] for x in s["tags"]}
            assert tags["span.kind"] == src["kind"]
            assert tags["url.path"] == src["path"]
            assert tags.get("error", False) is is_error(src)
    assert tr.summary["spans_exported"] == 46
