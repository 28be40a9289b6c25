"""Scoring spans against ground truth, percentiles, CIs, the run plan and the
tracer command template."""

from __future__ import annotations

import math

import pytest

from harness.analysis import mann_whitney, median_ci
from harness.plan import BPF_PASS, BPF_RUNS, PACED, RunPlan
from harness.runner import BenchConfig, HarnessError, _wait_records, format_tracer_cmd
from harness.scenarios import Expected, build
from harness.score import latency_percentiles, score_spans, span_request_id
from workloads.groundtruth import make_traceparent, parse_traceparent

CHAIN = (Expected("frontend", "server", "load"),
         Expected("frontend", "client", ("frontend", "server")),
         Expected("backend", "server", ("frontend", "client")))
NETNS = {111: "frontend", 222: "backend"}


def _gt(rid, service, kind, method="GET", path="/api/items/1", status=200, dur_us=1000):
    return {"request_id": rid, "service": service, "kind": kind, "method": method,
            "path": path, "status": status, "start_unix_ns": 10**18,
            "end_unix_ns": 10**18 + dur_us * 1000}


def _span(rid, netns, kind, span_id, trace_id="t" * 32, parent=None, method="GET",
          path="/api/items/1", status=200, dur_us=1100):
    return {"netns": netns, "kind": kind, "span_id": span_id, "trace_id": trace_id,
            "parent_span_id": parent, "method": method, "path": path, "status": status,
            "duration_ns": dur_us * 1000,
            "attributes": {"http.request.header.x-request-id": rid}}


def _chain_gt(rid):
    return [_gt(rid, "frontend", "server"), _gt(rid, "frontend", "client", path="/items/1"),
            _gt(rid, "backend", "server", path="/items/1")]


def test_perfect_tracer_scores_one():
    gt = _chain_gt("r1-1") + _chain_gt("r1-2")
    ctx = {"r1-1": ("a" * 32, "p" * 16), "r1-2": ("b" * 32, "q" * 16)}
    spans = []
    for rid, (tid, pid) in ctx.items():
        spans += [_span(rid, 111, "server", f"{rid}s", tid, pid),
                  _span(rid, 111, "client", f"{rid}c", tid, f"{rid}s", path="/items/1"),
                  _span(rid, 222, "server", f"{rid}b", tid, f"{rid}c", path="/items/1")]
    s = score_spans(gt, spans, tag="r1", netns_services=NETNS, chain=CHAIN, load_context=ctx)
    assert s["gt_requests"] == 2 and s["gt_records"] == 6
    assert s["precision"] == s["recall"] == s["field_accuracy"] == s["correlation"] == 1.0
    assert s["latency_error_p50_us"] == pytest.approx(100)


def test_missing_wrong_duplicate_and_foreign_spans():
    gt = _chain_gt("r1-1") + _chain_gt("r0-9")  # r0: another run, not expected
    spans = [
        _span("r1-1", 111, "server", "s1", status=500),  # wrong status
        _span("r1-1", 111, "server", "s1b"),  # duplicate
        _span(None, 111, "server", "s2"),  # no request id: false positive
        _span("r1-1", 999, "server", "s3"),  # other namespace: ignored
        _span("r1-1", 222, "server", "s4", path="/items/1"),
    ]
    s = score_spans(gt, spans, tag="r1", netns_services=NETNS, chain=CHAIN)
    assert s["gt_records"] == 3
    assert s["spans_total"] == 4 and s["spans_matched"] == 2
    assert s["spans_duplicate"] == 1 and s["spans_unmatched"] == 1
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["precision"] == pytest.approx(2 / 4)
    assert s["status_accuracy"] == 0.5 and s["method_accuracy"] == 1.0
    assert s["correlation"] == 0.0  # no load context: nothing can be right


def test_no_spans_gives_zero_recall_and_undefined_precision():
    s = score_spans(_chain_gt("r1-1"), [], tag="r1", netns_services=NETNS, chain=CHAIN)
    assert s["recall"] == 0.0 and math.isnan(s["precision"])


def test_request_id_from_other_attribute_keys():
    assert span_request_id({"attributes": {"rpc.grpc.request.metadata.x-request-id": ["a"]}}) \
        == "a"
    assert span_request_id({"attributes": {}}) is None


def test_latency_percentiles_are_exact():
    p = latency_percentiles(list(range(1, 1001)))
    assert p["latency_p50_us"] == pytest.approx(500.5)
    assert p["latency_p999_us"] == pytest.approx(999.001)
    assert math.isnan(latency_percentiles([])["latency_p99_us"])


def test_median_ci_and_mann_whitney():
    med, lo, hi = median_ci([5, 1, 4, 2, 6, 3])
    assert (med, lo, hi) == (3.5, 1, 6)
    assert median_ci([])[0] != median_ci([])[0]  # nan
    assert mann_whitney([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]) < 0.01
    assert math.isnan(mann_whitney([1], [2]))


def test_plan_alternates_order_and_has_aa_and_bpf():
    runs = RunPlan(rps=100, duration=3, repeat=6, bpf=BPF_PASS).specs()
    assert [(r.label, r.variant) for r in runs[:2]] == [("aa", "baseline")] * 2
    pairs = [r for r in runs if r.label == "pair"]
    assert len(pairs) == 12
    firsts = [r.variant for r in pairs if r.position == 0]
    assert firsts == ["baseline", "traced"] * 3
    assert runs[-1].label == "bpf" and runs[-1].variant == "traced"
    assert len(runs) == 2 + 12 + 1


def test_each_scenario_carries_its_plan_and_the_command_line_overrides_it(tmp_path):
    stress, chain = build("stress", tmp_path), build("http-chain", tmp_path)
    # cost at a fixed 1k req/s from the paced client, BPF time on every run
    assert (stress.plan.rps, stress.plan.loadgen, stress.plan.bpf) == (1000, PACED, BPF_RUNS)
    assert stress.plan.aa and stress.plan.extra_s > 0
    # accuracy: short runs, no A/A pair
    assert not chain.plan.aa and chain.plan.extra_s == 0
    assert stress.runs_planned(stress.plan) == 2 + 2 * stress.plan.repeat
    cfg = BenchConfig(scenarios=["stress"], rps=500, repeat=1, aa=False, bpf_pass=False)
    p = cfg.plan_for(stress)
    assert (p.rps, p.repeat, p.aa, p.bpf, p.duration) == (500, 1, False, "off", 8.0)
    assert [(s.label, s.variant) for s in p.specs()] == [("pair", "baseline"),
                                                         ("pair", "traced")]
    # overload/soak run their own plan, counted by the scenario
    ov, soak = build("overload", tmp_path), build("soak", tmp_path)
    assert ov.run_plan is not None and ov.plan.loadgen == "locust"
    assert ov.runs_planned(ov.plan) == 4 and soak.runs_planned(soak.plan) == 1
    assert BenchConfig(scenarios=["x"], extra=False).plan_for(stress).extra_s == 0
    assert BenchConfig(scenarios=["x"]).plan_for(stress).extra_s == 120
    assert p.extra_s == 0  # --repeat given: exactly that many pairs


def test_tracer_cmd_template():
    argv = format_tracer_cmd("{python} -m tracer run {netns_args} --output {output}",
                             python="/py", netns_args="--netns a --netns b", output="/o/s.jsonl")
    assert argv == ["/py", "-m", "tracer", "run", "--netns", "a", "--netns", "b", "--output",
                    "/o/s.jsonl"]
    with pytest.raises(HarnessError, match="unknown placeholder"):
        format_tracer_cmd("tracer {bogus}")
    with pytest.raises(HarnessError, match="empty"):
        format_tracer_cmd("  ")


def test_traceparent_round_trip():
    tp = make_traceparent("a" * 32, "b" * 16)
    assert parse_traceparent(tp) == ("a" * 32, "b" * 16)
    assert parse_traceparent("garbage") is None and parse_traceparent(None) is None


def test_wait_records_counts_the_runs_records_across_read_chunks(tmp_path):
    """Records of run hc01 are counted exactly, one of them split by the 1 MiB
    read boundary; another run's records are not; a count short of the
    expected one is returned once the limit passes."""
    gt = tmp_path / "ground_truth.jsonl"
    prefix = b'{"service":"frontend","request_id":'
    rec = prefix + b'"%s-%07d"}\n'
    head = rec % (b"hc02", 0) * 3
    # pad so that record hc01-1's needle '"hc01-' starts 3 bytes before 1 MiB
    filler = b"x" * ((1 << 20) - 3 - len(prefix) - len(head) - 1) + b"\n"
    body = head + filler + b"".join(rec % (b"hc01", i) for i in range(1, 24))
    body += rec % (b"hc02", 9)
    gt.write_bytes(body)
    assert body.find(b'"hc01-') == (1 << 20) - 3
    assert _wait_records(gt, "hc01", 23) == 23
    assert _wait_records(gt, "hc02", 4) == 4
    assert _wait_records(gt, "hc01", 24, limit_s=0.3) == 23
    assert _wait_records(tmp_path / "missing.jsonl", "hc01", 1, limit_s=0.1) == 0


def test_the_load_generator_takes_every_scenario_the_harness_names():
    """harness.load runs in the load namespace with its own list: a scenario
    missing there fails the bench at its first run (go-chain did)."""
    from harness import load, scenarios

    assert set(load.SCENARIOS) == set(scenarios.NAMES)
