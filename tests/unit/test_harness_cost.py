"""The cost measurement pieces without root: the tracer's CPU window (load +
drain, not its stop), BPF time per traced syscall, the paced load client,
the drain wait, number formatting, the report's saturation/peer hook, and
the harness's import graph (no cycles)."""

from __future__ import annotations

import ast
import csv
import http.server
import json
import math
import subprocess
import threading
from pathlib import Path

import pandas as pd
import pytest

from harness import analysis, fmt, paced, report
from harness.cgroup import UsageRecorder
from harness.runner import ScenarioRunner

HARNESS = Path(__file__).resolve().parents[2] / "harness"
N = 23


def test_tracer_cpu_window_is_load_plus_drain_not_the_stop():
    """Charged: CPU from load start (interpolated) to drained. The stop
    (SIGINT to exit: 0.4 s of CPU here) and start-up are not per request."""

    class Rec:
        def at(self, t):
            assert t == 100.0
            return 0.50  # start-up used 0.5 s before the load

    row = {"agent_cpu_end_s": 0.60, "agent_life_cpu_s": 1.00, "requests": 10_000,
           "tracer_spans_emitted": 5_000}
    f = ScenarioRunner._agent_figures(row, Rec(), 100.0, 10.0)
    assert f["agent_cpu_s"] == pytest.approx(0.10)
    assert f["agent_cpu_us_per_request"] == pytest.approx(10.0)
    assert f["agent_cpu_us_per_span"] == pytest.approx(20.0)
    assert f["tracer_cpu_cores"] == pytest.approx(0.01)
    assert math.isnan(ScenarioRunner._agent_figures({**row, "requests": 0}, Rec(), 100.0,
                                                    10.0)["agent_cpu_us_per_request"])


def test_usage_recorder_interpolates_between_samples():
    rec = UsageRecorder(account=None)
    rec.samples = [(10.0, 1.0), (10.1, 2.0), (10.2, math.nan), (10.3, 4.0)]
    assert rec.at(10.05) == pytest.approx(1.5)
    assert rec.at(10.2) == pytest.approx(3.0)  # NaN samples skipped
    assert math.isnan(rec.at(9.0)) and math.isnan(rec.at(11.0))


def test_wait_drained_returns_once_cpu_is_idle(monkeypatch):
    import harness.runner as runner

    clock = {"t": 0.0}
    monkeypatch.setattr(runner.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(runner.time, "sleep", lambda s: clock.__setitem__("t", clock["t"] + s))

    class Busy:  # 0.1 core until t = 1 s, then idle
        def usage_s(self):
            return min(clock["t"], 1.0) * 0.1

    drained, waited = ScenarioRunner.wait_drained(Busy())
    assert drained and 1.5 <= waited <= 1.65

    class Spinning:
        def usage_s(self):
            return clock["t"] * 0.5

    clock["t"] = 0.0
    drained, waited = ScenarioRunner.wait_drained(Spinning())
    assert not drained and waited == pytest.approx(runner.DRAIN_LIMIT_S, abs=0.11)


def test_bpf_per_traced_syscall_pairs_enter_and_exit():
    deltas = [
        {"name": "tp_enter_recvfrom", "run_cnt": 1000, "run_time_ns": 400_000},
        {"name": "tp_exit_recvfrom", "run_cnt": 1000, "run_time_ns": 600_000},
        {"name": "tp_enter_sendto", "run_cnt": 1000, "run_time_ns": 500_000},
        {"name": "tp_exit_sendto", "run_cnt": 999, "run_time_ns": 500_000},
        {"name": "tp_exec", "run_cnt": 3, "run_time_ns": 3_000},  # not a syscall program
    ]
    f = analysis.bpf_figures(deltas, requests=1000, spans=500)
    assert f["bpf_ns_per_request"] == pytest.approx(2_003)
    assert f["bpf_ns_per_span"] == pytest.approx(4_006)
    assert f["bpf_syscalls_per_request"] == pytest.approx(2.0)  # recvfrom + sendto
    assert f["bpf_ns_per_syscall"] == pytest.approx(1_000)  # enter + exit per call
    assert f["bpf_ns_per_run"] == pytest.approx(2_003_000 / 4002)
    assert analysis.syscall_of("tp_exit_accept4") == {"syscall": "accept4", "phase": "exit"}
    assert analysis.syscall_of("io_exit") == {"syscall": "", "phase": ""}
    assert math.isnan(analysis.bpf_figures(deltas, 0, 0)["bpf_ns_per_request"])
    rows = pd.DataFrame([{"scenario": "stress", "tag": "a", **d, **analysis.syscall_of(d["name"])}
                         for d in deltas])
    headers, table = report.bpf_syscall_table(rows)
    assert [r[1] for r in table] == ["recvfrom", "sendto"]
    assert table[0][2] == 1000 and table[0][3] == "1000"


def test_bpf_background_of_the_neighbours_is_taken_out():
    """A neighbour's syscalls run the same system-wide programs: the rate an
    idle window saw (2 s) comes off the load window (8 s)."""
    load = [{"prog_id": 1, "name": "tp_enter_write", "run_cnt": 9_000, "run_time_ns": 9_000_000},
            {"prog_id": 2, "name": "tp_exit_write", "run_cnt": 9_000, "run_time_ns": 1_000_000}]
    idle = [{"prog_id": 1, "name": "tp_enter_write", "run_cnt": 250, "run_time_ns": 250_000},
            {"prog_id": 2, "name": "tp_exit_write", "run_cnt": 250, "run_time_ns": 0}]
    d = analysis.load_deltas(load, idle, load_s=8.0, idle_s=2.0)
    assert [x["load_run_cnt"] for x in d] == [8_000, 8_000]
    assert [x["load_run_time_ns"] for x in d] == [8_000_000, 1_000_000]
    f = analysis.bpf_figures(d, requests=8_000, spans=8_000)
    assert f["bpf_ns_per_request"] == pytest.approx(1_125)
    assert f["bpf_ns_per_request_all"] == pytest.approx(1_250)
    assert f["bpf_ns_per_syscall"] == pytest.approx(1_125)
    assert f["bpf_syscalls_per_request"] == pytest.approx(1.0)
    # no idle window: nothing taken out
    assert analysis.load_deltas(load, None, 8.0, 0.0)[0]["load_run_cnt"] == 9_000


def test_extra_pairs_run_only_what_the_bound_can_resolve(monkeypatch):
    import harness.runner as runner

    clock = {"t": 0.0}
    monkeypatch.setattr(runner.time, "monotonic", lambda: clock["t"])
    ran = []

    def run(spec, i):
        clock["t"] += 10.0  # each run: 10 s, a pair 20 s
        ran.append((spec.label, spec.variant, spec.pair, spec.extra))
        return {"label": spec.label, "pair": spec.pair, "_elapsed_s": 10.0}

    rows = [{"label": "pair", "pair": p, "_elapsed_s": 10.0} for p in range(2) for _ in "bt"]
    # cpu needs 2 more pairs (40 s), latency 1000 (hopeless): 2 pairs run, then stop
    short = {0: [("cpu", 2), ("p99", 1000)], 2: [("cpu", 1), ("p99", 999)],
             4: [("p99", 998)]}
    info = runner.extra_pairs(run, rows, lambda r: short[len(ran)], bound_s=120.0)
    assert ran == [("pair", "baseline", 2, True), ("pair", "traced", 2, True),
                   ("pair", "traced", 3, True), ("pair", "baseline", 3, True)]
    assert info["extra_pairs"] == 2 and info["short"] == [("p99", 998)]
    assert "p99 needs 998 more pair(s)" in info["stopped"]
    ran.clear()
    info = runner.extra_pairs(run, rows, lambda r: [], bound_s=120.0)
    assert ran == [] and info["stopped"] == "resolved"


def test_cost_combines_tracer_and_bpf_per_run():
    runs = pd.DataFrame([
        {"scenario": "stress", "label": "pair", "variant": "traced", "pair": i, "run": i,
         "agent_cpu_us_per_request": a, "bpf_ns_per_request": b, "valid": True}
        for i, (a, b) in enumerate([(10.0, 3000.0), (12.0, 1000.0), (11.0, 2000.0)])])
    figs, noise = analysis.figures(runs)
    f = figs["stress"]
    assert f["cost_us_per_request"] == pytest.approx(13.0)  # 13, 13, 13: no spread
    assert noise["stress"]["cost_us_per_request"] == 0
    assert f["agent_cpu_us_per_request_ci_low"] < 11 < f["agent_cpu_us_per_request_ci_high"]


def test_mean_ci():
    m, lo, hi = analysis.mean_ci([1.0, 2.0, 3.0, float("nan")])
    assert m == 2.0 and lo == pytest.approx(2 - 4.303 / math.sqrt(3), abs=1e-3)
    assert hi - m == pytest.approx(m - lo)
    assert analysis.mean_ci([5.0])[0] == 5.0 and math.isnan(analysis.mean_ci([5.0])[1])
    assert math.isnan(analysis.mean_ci([])[0])


def test_fmt_is_the_one_number_formatter():
    assert math.isnan(fmt.number(None)) and math.isnan(fmt.number(True))
    assert math.isnan(fmt.number("x")) and fmt.number("2.5") == 2.5
    assert fmt.optional(float("nan")) is None and fmt.optional(3) == 3.0
    assert fmt.cell(None) == "n/a" and fmt.cell(0.5) == "0.5000" and fmt.cell(7) == "7"
    assert fmt.cell(123456.0, "x") == "123,456" and fmt.cell(12.345, "us") == "12.35"
    assert fmt.interval(10.0, 9.0, 11.0) == "10 [9, 11]" and fmt.interval(1.5, None, 2) == "1.5"
    copies = [p.name for p in HARNESS.glob("*.py")
              if any(isinstance(n, ast.FunctionDef) and n.name in ("_num", "_fmt")
                     for n in ast.walk(ast.parse(p.read_text())))
              and p.name not in ("saturation.py",)]  # saturation.py: not integrated yet
    assert copies == []


def _harness_imports() -> dict[str, set[str]]:
    graph = {}
    for p in HARNESS.glob("*.py"):
        deps = set()
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("harness"):
                deps |= ({a.name for a in n.names} if n.module == "harness"
                         else {n.module.split(".")[1]})
            elif isinstance(n, ast.Import):
                deps |= {a.name.split(".")[1] for a in n.names if a.name.startswith("harness.")}
        graph[p.stem] = deps
    return graph


def test_harness_modules_import_each_other_without_a_cycle():
    graph = _harness_imports()
    assert graph["fmt"] == set() and graph["plan"] == set() and graph["cgroup"] == set()
    assert not graph["overload"] & {"runner", "report", "scenarios", "bench"}
    assert not graph["report"] & {"runner", "overload", "scenarios", "bench"}

    def visit(node, path):
        for dep in graph.get(node, ()):
            assert dep not in path, f"import cycle: {' -> '.join([*path, dep])}"
            visit(dep, [*path, dep])

    for mod in graph:
        visit(mod, [mod])


def test_saturation_hook_renders_tracer_and_peers_side_by_side():
    assert report.saturation_sections(None) == []
    sat = {"untraced_rps": 95000, "traced_rps": 49000, "ratio": 0.516, "ratio_ci": [0.5, 0.53],
           "drops": 0, "tracer": {"rss_mb": 35.1, "ready_s": 1.6, "recall": 1.0, "drops": 0},
           "peers": {"bcc": {"cpu_us_per_request": 9.5, "rss_mb": 120.0, "ready_s": 4.2,
                             "ratio": 0.7, "recall": 0.99, "drops": 0},
                     "other": {"skipped": "no kernel headers"}}}
    tables = report.saturation_sections(sat, tracer={"cpu_us_per_request": 24.0})
    titles = [t for t, _, _ in tables]
    assert titles == ["Saturation", "Tracer and peers side by side", "Peers skipped"]
    _, headers, rows = tables[1]
    assert headers == ["figure", "tracer", "bcc", "other"]
    by = {r[0]: r[1:] for r in rows}
    assert by["CPU µs / request"] == ["24", "9.5", "skipped"]
    assert by["saturation ratio (traced / untraced req/s)"][:2] == ["0.516", "0.7"]
    assert tables[2][2] == [["other", "no kernel headers"]]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str | None, str | None]] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        _Handler.seen.append((self.headers.get("x-request-id"),
                              self.headers.get("traceparent")))
        # one write: head and body in separate segments meet delayed ACKs
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")

    def log_message(self, *args):
        pass


def test_paced_client_sends_exactly_n_requests_with_ids(tmp_path):
    try:
        exe = paced.binary()
    except paced.PacedError as e:
        pytest.skip(str(e))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    _Handler.seen = []
    lat = tmp_path / "lat.csv"
    try:
        argv = paced.command(f"http://127.0.0.1:{srv.server_port}", "/ping", 200.0, 10.0, "tg",
                             lat, requests=N)
        assert argv[0] == str(exe) and argv[4:6] == ["200", str(N / 200)]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    finally:
        srv.shutdown()
    s = paced.summary(res.stdout, 200.0)
    assert (s["requests"], s["failures"], s["issued"], s["users"]) == (N, 0, N, 4)
    assert 0.1 <= s["end_unix"] - s["start_unix"] < 5
    with open(lat, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["request_id", "trace_id", "span_id", "method", "path", "status",
                             "ok", "start_unix_ns", "latency_us", "wake_late_us"]
    assert [r["request_id"] for r in rows] == [f"tg-{i:07d}" for i in range(1, N + 1)]
    assert all(r["status"] == "200" and r["ok"] == "1" and float(r["latency_us"]) > 0
               for r in rows)
    # the server saw the same ids, each with a traceparent carrying the row's ids
    assert [rid for rid, _ in _Handler.seen] == [r["request_id"] for r in rows]
    assert all(tp == f"00-{r['trace_id']}-{r['span_id']}-01"
               for (_, tp), r in zip(_Handler.seen, rows, strict=True))
    # due times are 5 ms apart (200 req/s), whatever the response time
    due = [int(r["start_unix_ns"]) for r in rows]
    assert {b - a for a, b in zip(due, due[1:], strict=False)} == {5_000_000}
    # the client slept for most requests; how late it woke is the machine's jitter
    woke = [float(r["wake_late_us"]) for r in rows if r["wake_late_us"]]
    assert len(woke) >= N // 2 and all(w >= 0 for w in woke)
    with pytest.raises(paced.PacedError, match="no summary"):
        paced.summary("garbage", 1.0)
    json.dumps(s)


def test_excerpt_comes_from_the_named_report(tmp_path):
    from harness.budgets import Budget, Verdict, judge

    verdict = Verdict(4, [judge(Budget("tracer_cpu", "cost_us_per_request", 15, "max",
                                       unit="us CPU / request", noise=True), "stress", 23.85,
                                noise_floor=1.1),
                          judge(Budget("x", "y", 1, "max", gate=False), "stress", 0.5)])
    figs = {"stress": {"agent_cpu_us_per_request": 16.0, "cost_us_per_request": 23.85,
                       "cost_us_per_request_ci_low": 22.76, "cost_us_per_request_ci_high": 24.95,
                       "cost_us_per_request_n": 5, "wake_late_p99_us": 216.2},
            "http-chain": {"agent_cpu_us_per_request": 112.6}}
    rep = tmp_path / "20991231-000000-abcd"
    rep.mkdir()
    (rep / "verdict.json").write_text(json.dumps({**verdict.to_dict(), "exit_code": 1,
                                                  "figures": figs,
                                                  "noise_floor": {"stress": {
                                                      "cost_us_per_request": 1.1}}}))
    (rep / "environment.json").write_text(json.dumps({
        "run_id": rep.name, "wall_time_s": 209.4, "cpus": 2, "kernel": "6.18",
        "git_commit": "ae6115f2a9d0", "git_dirty": False}))
    text = report.excerpt(rep)
    assert text.startswith(f"Report `{rep.name}`: stress, http-chain; 3 min 29 s wall time")
    assert "| FAIL | tracer_cpu | stress | 23.85 |" in text
    assert "| x |" not in text  # not gated
    assert "| stress | cost: tracer + BPF | µs CPU / request | 23.85 [22.76, 24.95] | 5 | 1.1 |" \
        in text
    assert "http-chain | tracer process" not in text  # only the cost scenario
    assert "216.2 µs late at p99" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{report.EXCERPT_BEGIN}\nold\n{report.EXCERPT_END}\nb\n")
    report.replace_excerpt(readme, text)
    doc = readme.read_text()
    assert doc.startswith("a\n") and doc.endswith("\nb\n") and "old" not in doc and text in doc
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="no <!-- bench-excerpt:begin -->"):
        report.replace_excerpt(readme, text)
