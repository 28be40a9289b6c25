"""A real Prometheus (Debian's `prometheus` 2.42) scrapes the tracer.

Two traced services, front -> back (tests/e2e/servers/relay_server.py, named
by their comm), get exactly 23 requests from this process; 4 of them fail in
back (500, passed on by front). Prometheus scrapes `--metrics` every second;
its HTTP API (/api/v1/query) must then answer PromQL with the exact counts,
the service-graph edge front -> back, and data for every query of the Grafana
dashboard in deploy/grafana/.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.test_export import bpf_stats
from tests.e2e.tracing import HERE, TracerRun, free_port, server
from tests.kernel.conftest import require

ROOT = HERE.parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "httptrace.json"
N = 23
FAILING = {i for i in range(N) if i % 5 == 4}  # 4 requests
SLEEP_MS = 20
# Grafana's variables, as a user with "All" selected sees them
GRAFANA_VARS = {"$__rate_interval": "30s", "$__range": "5m", "$job": ".+", "$service": ".+"}


@pytest.fixture(autouse=True)
def _needs_kernel():
    require("btf", "ringbuf", "tracepoint_syscalls")


@contextlib.contextmanager
def prometheus(target: str, timeout: float = 30.0):
    """The real server on 127.0.0.1, scraping `target` every second, its TSDB
    in a temporary directory; stopped (SIGTERM, then SIGKILL) and the
    directory removed on exit. Yields the base URL."""
    binary = shutil.which("prometheus")
    if binary is None:  # CI installs it (APT_PKGS): a missing binary is a failure there
        pytest.fail("the prometheus binary is missing: apt-get install prometheus")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="httptrace-prom-") as d:
        cfg = Path(d) / "prometheus.yml"
        cfg.write_text(json.dumps({  # YAML is a superset of JSON
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "httptrace", "scrape_interval": "1s",
                                "scrape_timeout": "1s",
                                "static_configs": [{"targets": [target]}]}]}))
        log_path = Path(d) / "prometheus.log"
        with open(log_path, "wb") as log:
            p = subprocess.Popen([binary, f"--config.file={cfg}",
                                  f"--storage.tsdb.path={Path(d) / 'data'}",
                                  f"--web.listen-address=127.0.0.1:{port}"],
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                with contextlib.suppress(requests.ConnectionError):
                    if requests.get(f"{url}/-/ready", timeout=2).status_code == 200:
                        break
                if p.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("prometheus did not become ready: "
                                       + log_path.read_text()[-2000:])
                time.sleep(0.2)
            yield url
        finally:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert not Path(d).exists()


def query(url: str, promql: str) -> list[dict]:
    r = requests.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", (promql, body)
    return body["data"]["result"]


def value(url: str, promql: str) -> float:
    """The single sample of an instant query (summed: one number)."""
    result = query(url, f"sum({promql})")
    assert len(result) == 1, (promql, result)
    return float(result[0]["value"][1])


def wait_for(url: str, promql: str, want: float, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        result = query(url, promql)
        got = [float(s["value"][1]) for s in result]
        if got == [want]:
            return
        time.sleep(0.25)
    raise AssertionError(f"{promql}: {got}, expected [{want}]")


def dashboard_queries() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    out = []
    for panel in doc["panels"]:
        for t in panel.get("targets", []):
            expr = t["expr"]
            for var, val in GRAFANA_VARS.items():
                expr = expr.replace(var, val)
            assert "$" not in expr, expr  # every variable substituted
            out.append((f"{panel['title']} {t['refId']}", expr))
    return out


@pytest.mark.timeout(240)
def test_real_prometheus_scrapes_exact_counts_and_the_dashboard(tmp_path):
    front_port, back_port, mport = free_port(), free_port(), free_port()
    relay = str(HERE / "servers" / "relay_server.py")
    with open("/proc/self/comm") as f:
        me = f.read().strip()  # this process is the traced client of front
    with bpf_stats(), \
            server([sys.executable, relay, "back", str(back_port), "-", str(SLEEP_MS)]), \
            server([sys.executable, relay, "front", str(front_port), str(back_port)]), \
            TracerRun(tmp_path, "--port", str(front_port), "--port", str(back_port),
                      "--metrics", f"127.0.0.1:{mport}",
                      "--export", f"jaeger-json:{tmp_path / 'traces.json'}") as tr, \
            prometheus(f"127.0.0.1:{mport}") as prom:
        wait_for(prom, 'up{job="httptrace"}', 1)
        for i in range(N):  # a connection per request (see test_export.send)
            kind = "fail" if i in FAILING else "ok"
            r = requests.get(f"http://127.0.0.1:{front_port}/api/{kind}/{i}", timeout=10)
            assert r.status_code == (500 if i in FAILING else 200)
        # 4 spans per request; then the scrapes after it
        wait_for(prom, 'httptrace_spans_emitted_total{job="httptrace"}', 4 * N)
        wait_for(prom, 'traces_service_graph_request_total{client="front",server="back"}', N)

        def red(service, kind, metric="httptrace_requests_total"):
            return value(prom, f'{metric}{{service="{service}",kind="{kind}"}}')

        assert red("front", "server") == N
        assert red("back", "server") == N
        assert red("front", "client") == N
        assert red(me, "client") == N
        assert red("back", "server", "httptrace_request_errors_total") == len(FAILING)
        assert red("front", "client", "httptrace_request_errors_total") == len(FAILING)
        assert red("back", "server", "httptrace_request_duration_seconds_count") == N
        # each back request slept 20 ms
        assert value(prom, 'httptrace_request_duration_seconds_bucket'
                           '{service="back",kind="server",le="0.01"}') == 0
        assert value(prom, 'httptrace_request_duration_seconds_bucket'
                           '{service="back",kind="server",le="+Inf"}') == N

        back = 'service="back",span_kind="SPAN_KIND_SERVER"'
        assert value(prom, f'traces_spanmetrics_calls_total{{{back}}}') == N
        assert value(prom, f'traces_spanmetrics_calls_total{{{back},'
                           f'status_code="STATUS_CODE_ERROR"}}') == len(FAILING)
        assert value(prom, f'traces_spanmetrics_latency_count{{{back},'
                           f'span_name="GET /ok/{{id}}"}}') == N - len(FAILING)
        assert value(prom, f'traces_spanmetrics_latency_count{{{back},'
                           f'span_name="GET /fail/{{id}}"}}') == len(FAILING)

        edge = 'client="front",server="back"'
        edges = query(prom, "sum by (client, server) (traces_service_graph_request_total)")
        assert {(e["metric"]["client"], e["metric"]["server"]): float(e["value"][1])
                for e in edges} == {(me, "front"): N, ("front", "back"): N}
        assert value(prom, f"traces_service_graph_request_failed_total{{{edge}}}") == \
            len(FAILING)
        assert value(prom, f"traces_service_graph_request_client_seconds_count{{{edge}}}") == N
        assert value(prom, f"traces_service_graph_request_server_seconds_count{{{edge}}}") == N
        assert value(prom, f'traces_service_graph_request_server_seconds_bucket'
                           f'{{{edge},le="0.01"}}') == 0
        # the client waited for the server: its view is never the shorter
        assert value(prom, f"traces_service_graph_request_client_seconds_sum{{{edge}}}") >= \
            value(prom, f"traces_service_graph_request_server_seconds_sum{{{edge}}}")
        assert value(prom, "traces_service_graph_unpaired_spans_total") == 0
        assert value(prom, "traces_service_graph_dropped_spans_total") == 0
        assert value(prom, "httptrace_service_graph_pending_spans") == 0
        assert value(prom, "httptrace_route_overflow_total") == 0

        # rate() needs two scrapes of a series: poll, bounded
        empty = dashboard_queries()
        deadline = time.monotonic() + 30
        while empty and time.monotonic() < deadline:
            empty = [(name, expr) for name, expr in empty if not query(prom, expr)]
            time.sleep(0.5)
        assert empty == []
    assert tr.returncode == 0
    assert tr.summary["spans_emitted"] == 4 * N
    assert tr.summary["events_dropped"] == 0

