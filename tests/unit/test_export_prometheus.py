"""RED metrics, bounded labels, the health collector and the /metrics endpoint."""

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.tracing import free_port
from tests.unit.export_spans import make_span
from tracer.export import prometheus, semconv
from tracer.stats import Stats


def samples(text: str) -> dict:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def red(max_series=1000):
    reg = CollectorRegistry()
    return reg, prometheus.RedMetrics(reg, semconv.Resources({"python3": "shop"}, host="h"),
                                      max_series)


def lbl(route, kind="server", method="GET", service="shop"):
    return tuple(sorted({"service": service, "kind": kind, "method": method,
                         "route": route}.items()))


def test_red_counts_errors_and_buckets():
    reg, m = red()
    for i in range(23):
        m(make_span(path=f"/item/{i}", status=500 if i % 5 == 4 else 200,
                    start_ktime=0, end_ktime=20_000_000))  # 20 ms
    m(make_span(kind="client", path="/item/x", status=404))
    s = samples(generate_latest(reg).decode())
    assert s[("httptrace_requests_total", lbl("/item/{id}"))] == 23
    assert s[("httptrace_request_errors_total", lbl("/item/{id}"))] == 4
    assert s[("httptrace_request_duration_seconds_count", lbl("/item/{id}"))] == 23
    bucket = lbl("/item/{id}")
    assert s[("httptrace_request_duration_seconds_bucket", tuple(sorted(
        dict(bucket, le="0.01").items())))] == 0
    assert s[("httptrace_request_duration_seconds_bucket", tuple(sorted(
        dict(bucket, le="0.025").items())))] == 23
    assert s[("httptrace_request_duration_seconds_sum", bucket)] == pytest.approx(0.46)
    assert s[("httptrace_request_errors_total", lbl("/item/x", kind="client"))] == 1


def test_label_sets_are_capped_and_overflow_counted():
    reg, m = red(max_series=3)
    for name in ("a", "b", "c", "d", "e"):
        m(make_span(path=f"/{name}"))
        m(make_span(path=f"/{name}"))
    m(make_span(method="WEIRD", path="/a"))
    s = samples(generate_latest(reg).decode())
    routes = {dict(k[1])["route"] for k in s if k[0] == "httptrace_requests_total"}
    assert routes == {"/a", "/b", "/c", "{other}"}
    assert s[("httptrace_requests_total", lbl("{other}"))] == 4
    assert s[("httptrace_requests_total", lbl("{other}", method="_OTHER"))] == 1
    assert s[("httptrace_route_overflow_total", ())] == 5


class FakeRing:
    def available(self):
        return 1 << 20


class FakeTracer:
    def __init__(self):
        self.stats = Stats()
        self.stats.events_delivered = 100
        self.stats.events_dropped = 3
        self.stats.unparsed_bytes = 7
        self.stats.connections_open = 2
        self.rb = FakeRing()
        self.ring_bytes = 8 << 20
        self.obj = None
        self.attached = []


class FakePipe:
    name = "otlp-grpc://c:4317"

    def counters(self):
        return {"spans_exported": 5, "spans_export_failed": 1, "spans_export_dropped": 2,
                "export_batches": 1, "export_retries": 4, "export_queue_len": 9}


def test_health_collector_and_endpoint():
    port = free_port()
    srv = prometheus.MetricsServer("127.0.0.1", port, None, [FakePipe()],
                                   semconv.Resources(host="h"))
    srv.start()
    try:
        srv.health.tracer = FakeTracer()
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    finally:
        srv.stop()
    s = samples(text.decode())
    assert s[("httptrace_events_delivered_total", ())] == 100
    assert s[("httptrace_events_dropped_total", ())] == 3
    assert s[("httptrace_unparsed_bytes_total", ())] == 7
    assert s[("httptrace_connections_open", ())] == 2
    assert s[("httptrace_ring_buffer_fill_ratio", ())] == 0.125
    ex = (("exporter", "otlp-grpc://c:4317"),)
    assert s[("httptrace_spans_exported_total", ex)] == 5
    assert s[("httptrace_spans_export_failed_total", ex)] == 1
    assert s[("httptrace_spans_export_dropped_total", ex)] == 2
    assert s[("httptrace_export_retries_total", ex)] == 4
    assert s[("httptrace_export_queue_spans", ex)] == 9


def test_port_in_use_raises_oserror():
    srv = prometheus.MetricsServer("127.0.0.1", free_port(), None, [],
                                   semconv.Resources(host="h"))
    srv.start()
    try:
        other = prometheus.MetricsServer("127.0.0.1", srv.port, None, [],
                                         semconv.Resources(host="h"))
        with pytest.raises(OSError):
            other.start()
    finally:
        srv.stop()


@pytest.mark.skipif(not shutil.which("bpftool") or not Path("/sys/kernel/btf/vmlinux").exists(),
                    reason="bpftool and kernel BTF needed")
def test_prog_info_offsets_match_kernel_btf():
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", "/sys/kernel/btf/vmlinux"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    types = json.loads(out)["types"]
    (info,) = [t for t in types if t["kind"] == "STRUCT" and t["name"] == "bpf_prog_info"]
    off = {m["name"]: m["bits_offset"] // 8 for m in info["members"]}
    assert off["run_time_ns"] == prometheus.PROG_INFO_RUN_TIME_NS
    assert off["run_cnt"] == prometheus.PROG_INFO_RUN_CNT
    assert prometheus.PROG_INFO_LEN == prometheus.PROG_INFO_RUN_CNT + 8


def span_lbl(name, kind="SPAN_KIND_SERVER", status="STATUS_CODE_UNSET", service="shop"):
    return tuple(sorted({"service": service, "span_name": name, "span_kind": kind,
                         "status_code": status}.items()))


def test_span_metrics_split_by_status():
    reg, m = red()
    for i in range(23):
        m(make_span(path=f"/item/{i}", status=500 if i % 5 == 4 else 200,
                    start_ktime=0, end_ktime=20_000_000))
    m(make_span(kind="client", path="/cart", status=200, start_ktime=0, end_ktime=60_000_000))
    s = samples(generate_latest(reg).decode())
    ok, err = span_lbl("GET /item/{id}"), span_lbl("GET /item/{id}", status="STATUS_CODE_ERROR")
    assert s[("traces_spanmetrics_calls_total", ok)] == 19
    assert s[("traces_spanmetrics_calls_total", err)] == 4
    assert s[("traces_spanmetrics_latency_count", ok)] == 19
    assert s[("traces_spanmetrics_latency_count", err)] == 4
    assert s[("traces_spanmetrics_latency_sum", err)] == pytest.approx(0.08)
    assert s[("traces_spanmetrics_latency_bucket", tuple(sorted(dict(ok, le="0.025").items())))] \
        == 19
    client = span_lbl("GET /cart", kind="SPAN_KIND_CLIENT")
    assert s[("traces_spanmetrics_calls_total", client)] == 1
    assert s[("traces_spanmetrics_latency_bucket", tuple(sorted(
        dict(client, le="0.05").items())))] == 0
    # the ERROR series exists only once an error was seen
    assert ("traces_spanmetrics_calls_total",
            span_lbl("GET /cart", kind="SPAN_KIND_CLIENT", status="STATUS_CODE_ERROR")) not in s
    # RED and span metrics are the same observations
    assert s[("httptrace_requests_total", lbl("/item/{id}"))] == 23
    assert s[("httptrace_request_duration_seconds_count", lbl("/item/{id}"))] == 23


def test_span_metrics_share_the_route_cap():
    reg, m = red(max_series=2)
    for path in ("/a", "/b", "/c", "/d"):
        m(make_span(path=path))
    m(make_span(protocol="grpc", method="POST", path="/shop.Cart/Add"))
    s = samples(generate_latest(reg).decode())
    names = {dict(k[1])["span_name"]: v for k, v in s.items()
             if k[0] == "traces_spanmetrics_calls_total"}
    assert names == {"GET /a": 1, "GET /b": 1, "GET {other}": 2, "{other}": 1}
    assert s[("httptrace_route_overflow_total", ())] == 3


def test_span_metrics_off():
    reg = CollectorRegistry()
    m = prometheus.RedMetrics(reg, semconv.Resources(host="h"), span_metrics=False)
    m(make_span())
    s = samples(generate_latest(reg).decode())
    assert not [k for k in s if k[0].startswith("traces_spanmetrics")]
    assert [v for k, v in s.items() if k[0] == "httptrace_requests_total"] == [1]


DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "httptrace.json"
# exposed only with a loaded BPF object and stats on: tests/e2e/test_prometheus_real.py
BPF_ONLY = {"httptrace_bpf_prog_run_seconds_total", "httptrace_bpf_prog_runs_total"}


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]


def test_dashboard_queries_only_metrics_the_tracer_exposes():
    srv = prometheus.MetricsServer("127.0.0.1", 0, FakeTracer(), [FakePipe()],
                                   semconv.Resources(host="h"))
    c = make_span(kind="client", comm="front", status=503)
    srv.red(c)
    srv.red(make_span(comm="back", parent_span_id=c.span_id, status=503))
    exposed = {name for name, _ in samples(generate_latest(srv.registry).decode())}
    used = {n for e in dashboard_exprs()
            for n in re.findall(r"\b((?:httptrace|traces|process)_\w+)\b", e)}
    assert used - exposed == BPF_ONLY
    # every panel says where its data comes from, and every query has a panel
    doc = json.loads(DASHBOARD.read_text())
    panels = [p for p in doc["panels"] if p["type"] != "row"]
    assert all(p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
               and p["targets"] and p["description"] for p in panels)
    assert len({p["id"] for p in doc["panels"]}) == len(doc["panels"])


def test_dashboard_variables_are_the_ones_the_e2e_test_substitutes():
    """tests/e2e/test_prometheus_real.py runs every query with these given a
    value; a new variable must be added there, or its queries go unchecked."""
    from tests.e2e.test_prometheus_real import GRAFANA_VARS

    used = {v for e in dashboard_exprs() for v in re.findall(r"\$\{?\w+", e)}
    assert used == set(GRAFANA_VARS)
