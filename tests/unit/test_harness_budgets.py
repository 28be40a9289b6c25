"""Budget gating on synthetic run tables. A figure with a noise floor is
judged only when that floor is at most a third of its budget: a noisy figure
is INCONCLUSIVE (exit 3) whatever its value, never PASS; a quiet one passes
or fails by its value."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from harness import analysis
from harness.__main__ import main
from harness.bench import short_figures
from harness.budgets import (
    DEFAULT_BUDGETS,
    FAIL,
    INCONCLUSIVE,
    MISSING,
    PASS,
    RESOLUTION,
    Budget,
    BudgetFileError,
    Verdict,
    evaluate,
    judge,
    load_budgets,
)

PAIRS = 5


def _runs(*, p99_base=5000.0, p99_added=(10.0,) * PAIRS, aa_p99=(5000.0, 5002.0),
          agent_us=(3.0,) * PAIRS, bpf_ns=(2000.0,) * PAIRS, recall=1.0,
          scenario="stress") -> pd.DataFrame:
    """An A/A pair then PAIRS (baseline, traced) pairs at 1k req/s. Baselines
    after the A/A pair sit at p99_base + 1 us per pair, so consecutive
    baselines differ by 1 us (a quiet A/A)."""
    rows = []
    run = 0
    for i, v in enumerate(aa_p99):
        rows.append({"scenario": scenario, "label": "aa", "variant": "baseline", "pair": 0,
                     "position": i, "run": run, "latency_p99_us": v, "latency_p50_us": 200.0,
                     "latency_p999_us": 9000.0, "workload_cpu_cores": 0.10,
                     "achieved_rps": 1000.0, "valid": True})
        run += 1
    for i in range(PAIRS):
        base = {"scenario": scenario, "label": "pair", "pair": i, "achieved_rps": 1000.0,
                "latency_p50_us": 200.0, "latency_p999_us": 9000.0, "valid": True}
        rows.append({**base, "variant": "baseline", "position": i % 2, "run": run,
                     "latency_p99_us": p99_base + i, "workload_cpu_cores": 0.10})
        rows.append({**base, "variant": "traced", "position": 1 - i % 2, "run": run + 1,
                     "latency_p99_us": p99_base + i + p99_added[i],
                     "latency_p50_us": 205.0, "workload_cpu_cores": 0.102,
                     "agent_cpu_us_per_request": agent_us[i],
                     "agent_cpu_us_per_span": agent_us[i],
                     "bpf_ns_per_request": bpf_ns[i], "bpf_ns_per_span": bpf_ns[i],
                     "tracer_cpu_cores": agent_us[i] / 1000, "tracer_rss_peak_mb": 30.0,
                     "tracer_events_seen": 2000.0, "tracer_events_dropped": 0.0,
                     "recall": recall, "precision": 1.0, "field_accuracy": 1.0,
                     "correlation": 1.0})
        run += 2
    return pd.DataFrame(rows)


def _verdict(runs: pd.DataFrame):
    version, budgets = load_budgets(DEFAULT_BUDGETS)
    figs, noise = analysis.figures(runs)
    return evaluate(version, budgets, figs, noise), figs, noise


def _result(verdict, name: str):
    return next(r for r in verdict.results if r.budget == name)


def test_default_budgets_file_is_versioned_and_complete():
    version, budgets = load_budgets(DEFAULT_BUDGETS)
    assert version == 5
    by = {b.name: b for b in budgets}
    assert {"tracer_cpu", "tracer_process_cpu", "p99_added_latency", "tracer_rss", "drop_rate",
            "detection_recall", "correlation"} <= set(by)
    # the cost budgets are judged where they are conclusive: 1k req/s on stress
    for name, metric in (("tracer_cpu", "cost_us_per_request"),
                         ("tracer_process_cpu", "agent_cpu_us_per_span"),
                         ("p99_added_latency", "p99_added_us")):
        b = by[name]
        assert (b.metric, b.scenarios, b.noise, b.gate) == (metric, ("stress",), True, True)
    # the budgets (docs/budgets.md): agent + BPF <= 1% of a core at 1k req/s, agent <= 4 us/span
    assert by["tracer_cpu"].limit == 10.0 and by["tracer_process_cpu"].limit == 4.0
    assert by["p99_added_latency"].limit == 50.0
    assert by["correlation"].gate and not by["overhead_with_workload_growth"].gate


def test_quiet_figures_within_budget_pass():
    verdict, figs, noise = _verdict(_runs())
    f = figs["stress"]
    assert f["p99_added_us"] == pytest.approx(10)
    assert f["agent_cpu_us_per_request"] == pytest.approx(3)
    assert f["cost_us_per_request"] == pytest.approx(5)  # 3 us + 2000 ns
    assert f["workload_growth_us_per_request"] == pytest.approx(2)  # 0.002 core at 1k/s
    assert f["agent_cpu_us_per_request_n"] == PAIRS
    # identical runs: no spread; the A/A bound of the latency is 2 us (5002 - 5000
    # and 1 us steps between the baselines)
    assert noise["stress"]["agent_cpu_us_per_request"] == 0
    assert 1 <= noise["stress"]["p99_added_us"] <= 16
    for name in ("tracer_cpu", "tracer_process_cpu", "p99_added_latency", "detection_recall"):
        assert _result(verdict, name).status == PASS, name
    assert verdict.overall == PASS and verdict.exit_code == 0


def test_quiet_figures_over_budget_fail_by_value_with_margin():
    verdict, _, _ = _verdict(_runs(p99_added=(300.0,) * PAIRS, agent_us=(20.0,) * PAIRS))
    r = _result(verdict, "p99_added_latency")
    assert r.status == FAIL and r.margin == pytest.approx(50 - 300)
    assert "p99_added_latency" in r.line() and "margin -250" in r.line()
    assert _result(verdict, "tracer_process_cpu").status == FAIL
    assert _result(verdict, "tracer_cpu").value == pytest.approx(22)
    assert verdict.overall == FAIL and verdict.exit_code == 1


def test_noisy_figure_is_inconclusive_never_pass():
    """The latency's pair differences spread by hundreds of us: its value (a
    mean of 10 us, far within 50) is not judged."""
    noisy = (-390.0, 410.0, -290.0, 310.0, 10.0)
    verdict, figs, noise = _verdict(_runs(p99_added=noisy))
    assert figs["stress"]["p99_added_us"] == pytest.approx(10)
    assert noise["stress"]["p99_added_us"] > 50 * RESOLUTION
    r = _result(verdict, "p99_added_latency")
    assert r.status == INCONCLUSIVE and r.margin > 0
    assert "p99_added_us" in r.note and "noise floor" in r.note
    assert verdict.overall == INCONCLUSIVE and verdict.exit_code == 3
    assert [x.metric for x in verdict.inconclusive] == ["p99_added_us"]


def test_noisy_figure_over_budget_is_inconclusive_not_fail():
    noisy = (-300.0, 700.0, -200.0, 600.0, 200.0)  # mean 200 us, over the 50 us budget
    verdict, figs, _ = _verdict(_runs(p99_added=noisy))
    assert figs["stress"]["p99_added_us"] == pytest.approx(200)
    assert _result(verdict, "p99_added_latency").status == INCONCLUSIVE
    assert verdict.exit_code == 3


def test_aa_noise_alone_makes_a_difference_inconclusive():
    """Every pair adds exactly 10 us (no spread), but two untraced runs differ
    by 400 us: the data cannot resolve 50 us."""
    verdict, _, noise = _verdict(_runs(aa_p99=(5000.0, 5400.0)))
    assert noise["stress"]["p99_added_us"] > 100  # the A/A couples: 400, 1, 1, 1, 1 us
    assert _result(verdict, "p99_added_latency").status == INCONCLUSIVE


SPREAD = (0.5, 5.5, 1.0, 5.0, 3.0)  # mean 3 us, within 4, but its CI is wide


def test_direct_cpu_figure_both_ways():
    verdict, _, noise = _verdict(_runs(agent_us=SPREAD))
    assert noise["stress"]["agent_cpu_us_per_span"] > 4 * RESOLUTION
    assert _result(verdict, "tracer_process_cpu").status == INCONCLUSIVE
    tight = (2.95, 3.05, 3.0, 2.98, 3.02)
    verdict, _, noise = _verdict(_runs(agent_us=tight))
    assert noise["stress"]["agent_cpu_us_per_span"] < 0.3
    assert _result(verdict, "tracer_process_cpu").status == PASS
    verdict, _, _ = _verdict(_runs(agent_us=tuple(v + 10 for v in tight)))
    assert _result(verdict, "tracer_process_cpu").status == FAIL


@pytest.mark.parametrize("value", [0.0, 10.0, 14.9, 15.0, 15.1, 40.0])
@pytest.mark.parametrize("floor", [0.0, 4.9, 5.0, 5.1, 30.0, None])
def test_judge_never_decides_by_noise(value, floor):
    b = Budget("cpu", "cost_us_per_request", 15.0, "max", noise=True)
    r = judge(b, "stress", value, noise_floor=floor)
    if floor is None or floor > 5.0 or abs(value - 15.0) < floor:
        assert r.status == INCONCLUSIVE  # unresolved, or the limit inside the noise
    else:
        assert r.status == (PASS if value <= 15.0 else FAIL)


def test_a_value_within_its_noise_of_the_limit_is_inconclusive():
    b = Budget("cpu", "agent_cpu_us_per_request", 15.0, "max", noise=True)
    close = judge(b, "stress", 14.76, noise_floor=0.82)
    assert close.status == INCONCLUSIVE and "inside its noise floor" in close.note
    assert judge(b, "stress", 13.9, noise_floor=0.82).status == PASS
    assert judge(b, "stress", 16.0, noise_floor=0.82).status == FAIL
    _, budgets = load_budgets(DEFAULT_BUDGETS)
    tight = (3.7, 3.8, 3.75, 3.8, 3.7)  # floor ~0.07, 0.25 from the 4 us limit: resolved
    figs, noise = analysis.figures(_runs(agent_us=tight))
    assert noise["stress"]["agent_cpu_us_per_span"] < 0.25
    assert "agent_cpu_us_per_span" not in dict(short_figures("stress", budgets, figs, noise))
    wide = (3.0, 4.5, 3.2, 4.3, 3.8)  # mean 3.76, floor ~0.8: needs more pairs
    figs, noise = analysis.figures(_runs(agent_us=wide))
    more = dict(short_figures("stress", budgets, figs, noise))["agent_cpu_us_per_span"]
    floor = noise["stress"]["agent_cpu_us_per_span"]
    assert more == math.ceil(5 * (floor / (4 - 3.76)) ** 2) - 5


def test_a_failure_outranks_an_inconclusive_figure():
    verdict, _, _ = _verdict(_runs(p99_added=(-390.0, 410.0, -290.0, 310.0, 10.0),
                                   recall=0.9))
    assert _result(verdict, "detection_recall").status == FAIL
    assert _result(verdict, "p99_added_latency").status == INCONCLUSIVE
    assert verdict.overall == FAIL and verdict.exit_code == 1


def test_low_recall_fails_and_missing_data_is_not_a_pass():
    verdict, _, _ = _verdict(_runs(recall=0.9))
    assert _result(verdict, "detection_recall").status == FAIL
    b = Budget("x", "recall", 0.999, "min")
    assert judge(b, "s", math.nan).status == MISSING
    assert judge(b, "s", None).status == MISSING
    assert judge(b, "s", 0.9995).status == PASS
    # a noisy budget with one run has no noise floor: not a pass either
    nb = Budget("x", "p99_added_us", 50, "max", noise=True)
    assert judge(nb, "s", 10.0, noise_floor=math.nan).status == INCONCLUSIVE
    v = Verdict(4, [judge(Budget("y", "m", 1, "max"), "s", None)])
    assert v.overall == FAIL and v.exit_code == 1


def test_min_budget_without_noise_is_judged_by_value():
    b = Budget("x", "events_per_s", 10_000, "min", noise=False)
    assert judge(b, "stress", 9_000, noise_floor=5_000).status == FAIL


def test_short_figures_projects_the_extra_pairs_needed():
    _, budgets = load_budgets(DEFAULT_BUDGETS)
    figs, noise = analysis.figures(_runs(agent_us=SPREAD))
    short = dict(short_figures("stress", budgets, figs, noise))
    floor = noise["stress"]["agent_cpu_us_per_span"]
    # noise ~ 1/sqrt(runs): n (floor / target)^2 runs in all, 5 done; the target
    # is the smaller of a third of the limit and the distance to it (4 - 3)
    assert short["agent_cpu_us_per_span"] == math.ceil(5 * (floor / 1.0) ** 2) - 5
    assert "p99_added_us" not in short  # quiet
    quiet_figs, quiet_noise = analysis.figures(_runs())
    assert short_figures("stress", budgets, quiet_figs, quiet_noise) == []
    assert short_figures("http-chain", budgets, quiet_figs, quiet_noise) == []


def test_bad_budgets_file(tmp_path):
    p = tmp_path / "b.toml"
    p.write_text("version = 1\n[[budget]]\nname = 'a'\nmetric = 'm'\n")
    with pytest.raises(BudgetFileError, match="exactly one of max/min"):
        load_budgets(p)
    p.write_text("not toml [")
    with pytest.raises(BudgetFileError, match="not valid TOML"):
        load_budgets(p)


def test_cli_usage_and_environment_errors_exit_2(tmp_path, capsys):
    assert main(["matrix", "--kernels", "bogus"]) == 2
    assert "bad kernel spec" in capsys.readouterr().err
    assert main(["bench", "--budgets", str(tmp_path / "missing.toml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "budgets file not found" in err
    with pytest.raises(SystemExit) as e:
        main(["bench", "--scenario", "nope"])
    assert e.value.code == 2


def test_cli_exits_3_on_inconclusive_and_names_the_figure(monkeypatch, tmp_path, capsys):
    import harness.bench as bench_mod

    verdict = Verdict(4, [judge(Budget("p99_added_latency", "p99_added_us", 50, "max",
                                       noise=True), "stress", 10.0, noise_floor=900.0),
                          judge(Budget("tracer_rss", "tracer_rss_peak_mb", 50, "max"),
                                "stress", 30.0)])
    seen = {}

    def fake_bench(cfg, budgets_path):
        seen["cfg"] = cfg
        return bench_mod.BenchResult(tmp_path, verdict, pd.DataFrame(), {}, {}, {})

    monkeypatch.setattr(bench_mod, "bench", fake_bench)
    assert main(["bench", "--no-progress"]) == 3
    out = capsys.readouterr().out
    assert "INCONCLUSIVE p99_added_latency [stress]" in out
    assert "harness: INCONCLUSIVE; not resolved: p99_added_us [stress]" in out
    # the default bench: the cost scenario first, then accuracy
    assert seen["cfg"].scenarios == ["stress", "http-chain", "grpc", "mixed"]
    assert seen["cfg"].repeat is None and seen["cfg"].rps is None


def test_export_option_starts_a_real_receiver_and_sets_the_url():
    from harness.bench import _start_receiver
    from harness.runner import BenchConfig, format_tracer_cmd

    cfg = BenchConfig(scenarios=["http-chain"], export="otlp-http")
    rx = _start_receiver(cfg)
    try:
        assert cfg.export_url == f"otlp-http://127.0.0.1:{rx.port}/v1/traces"
        assert rx.count == 0 and rx.keep is False
    finally:
        rx.stop()
    assert _start_receiver(BenchConfig(scenarios=["x"])) is None
    assert format_tracer_cmd("{python} -m tracer run --output {output}", python="py",
                             output="o")[:3] == ["py", "-m", "tracer"]


@pytest.mark.parametrize("ratio,floor,status", [(0.72, 0.05, PASS), (0.45, 0.05, FAIL),
                                                (0.62, 0.05, INCONCLUSIVE),
                                                (0.72, 0.3, INCONCLUSIVE)])
def test_saturation_ratio_is_judged_with_its_ci_as_floor(ratio, floor, status):
    """The saturation figures (harness/bench.py) meet only the budgets meant
    for them: the ratio (>= 0.6) and the tracer's RSS."""
    version, budgets = load_budgets(DEFAULT_BUDGETS)
    figs = {"saturation": {"saturation_ratio": ratio, "tracer_rss_peak_mb": 35.0}}
    verdict = evaluate(version, budgets, figs, {"saturation": {"saturation_ratio": floor}})
    assert {r.budget: r.status for r in verdict.results} == {"saturation_ratio": status,
                                                             "tracer_rss": PASS}
