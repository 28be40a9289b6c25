"""Cost of `--metrics` (RED, span metrics, service graph), two ways:

    sudo .venv/bin/python -m tests.bench.metrics_cost [N] [REPEAT]

1. The real CLI on the keep-alive storm (tests/bench/http_storm.py: N
   exchanges, 2N spans, each client span the parent of a server span of the
   same process, so every exchange is one service-graph request), with
   `--metrics` off and on, alternating. The agent's CPU is the sum of its
   threads' schedstat (ns), read once it has drained; runs with ring-buffer
   drops are left out (fewer spans). The last scrape is printed (edges,
   unpaired).
2. In this process: microseconds per span of MetricsServer.red on synthetic
   client/server pairs, RED only, + span metrics, + service graph.
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.bench.export_cost import STORM, _hwm_kb
from tests.e2e.tracing import free_port

SCRAPED = ("httptrace_requests_total", "traces_service_graph_request_total",
           "traces_service_graph_unpaired_spans_total")


def sched_ns(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except OSError:  # a thread gone meanwhile
            pass
    return total


def scrape(port: int) -> dict:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            if s.name in SCRAPED:
                out[s.name] = out.get(s.name, 0) + s.value
    return out


def run_once(n: int, metrics: bool) -> dict:
    out = Path(tempfile.mkdtemp()) / "spans.jsonl"
    port = free_port()
    extra = ["--metrics", f"127.0.0.1:{port}"] if metrics else []
    storm = subprocess.Popen([sys.executable, str(STORM), str(n)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    tracer = subprocess.Popen([sys.executable, "-m", "tracer", "run", "--pid", str(storm.pid),
                               "--output", str(out), *extra], stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(5):  # warnings (a stale core) come first
            line = tracer.stderr.readline()
            if "tracer: tracing" in line:
                break
        else:
            raise RuntimeError(f"tracer did not start: {line}")
        c0 = sched_ns(tracer.pid)
        storm.stdin.write("go\n")
        storm.stdin.flush()
        storm.wait(timeout=300)
        time.sleep(1.2)  # let the agent drain
        c1 = sched_ns(tracer.pid)
        scraped = scrape(port) if metrics else {}
        hwm = _hwm_kb(tracer.pid)
        tracer.send_signal(signal.SIGINT)
        tracer.communicate(timeout=60)
    finally:
        storm.kill()
        tracer.kill()
    summary = json.loads(Path(str(out) + ".summary.json").read_text())
    return {"cpu_s": (c1 - c0) / 1e9, "spans": summary["spans_emitted"],
            "dropped": summary["events_dropped"], "rss_peak_mb": hwm / 1024,
            "scraped": scraped}


def cli(n: int, repeat: int) -> dict:
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(repeat):
        for mode in runs:
            runs[mode].append(run_once(n, mode == "on"))
    table = {}
    for mode, rs in runs.items():
        clean = [r for r in rs if r["dropped"] == 0] or rs
        table[mode] = {
            "agent_us_per_span": round(statistics.median(r["cpu_s"] / r["spans"] * 1e6
                                                         for r in clean), 2),
            "runs_without_drops": sum(r["dropped"] == 0 for r in rs),
            "rss_peak_mb": round(statistics.median(r["rss_peak_mb"] for r in rs), 1),
            "last_scrape": rs[-1]["scraped"],
        }
    table["on"]["extra_us_per_span"] = round(table["on"]["agent_us_per_span"]
                                             - table["off"]["agent_us_per_span"], 2)
    return table


def in_process(pairs: int = 20000, repeat: int = 5) -> dict:
    from prometheus_client import CollectorRegistry

    from tests.unit.export_spans import make_span
    from tracer.export import prometheus, semconv

    def spans():
        out = []
        for i in range(pairs):
            c = make_span(kind="client", pid=1, comm="front", path=f"/item/{i % 50}")
            out.append(make_span(kind="server", pid=2, comm="back", path=f"/item/{i % 50}",
                                 parent_span_id=c.span_id,
                                 status=500 if i % 10 == 0 else 200))
            out.append(c)
        return out

    def once(span_metrics: bool, graph: bool) -> float:
        reg = CollectorRegistry()
        g = prometheus.ServiceGraph(reg) if graph else None
        red = prometheus.RedMetrics(reg, semconv.Resources(host="h"),
                                    span_metrics=span_metrics, graph=g)
        sp = spans()
        t = time.perf_counter()
        for s in sp:
            red(s)
        return (time.perf_counter() - t) / len(sp) * 1e6

    modes = {"red": (False, False), "red+spanmetrics": (True, False),
             "red+spanmetrics+graph": (True, True)}
    res: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(repeat):
        for name, args in modes.items():
            res[name].append(once(*args))
    return {name: round(statistics.median(v), 2) for name, v in res.items()}


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    rep = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    for mode, row in cli(n, rep).items():
        print(f"cli {mode:4s} {row}")
    print(f"in-process us/span {in_process()}")
