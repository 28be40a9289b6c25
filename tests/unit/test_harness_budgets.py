"""Budget gating on synthetic run tables: one budget that must fail, one that
must pass, and a failure inside the A/A noise floor that must be inconclusive."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from harness import analysis
from harness.__main__ import main
from harness.budgets import (
    DEFAULT_BUDGETS,
    FAIL,
    INCONCLUSIVE,
    MISSING,
    PASS,
    Budget,
    BudgetFileError,
    evaluate,
    judge,
    load_budgets,
)


def _runs(p99_base: float, p99_traced: float, aa: tuple[float, float], tracer_cpu: float,
          recall: float, pairs: int = 6, correlation: float = 1.0,
          aa_cpu: tuple[float, float] = (0.20, 0.20)) -> pd.DataFrame:
    rows = []
    for i, v in enumerate(aa):
        rows.append({"scenario": "http-chain", "label": "aa", "variant": "baseline", "pair": 0,
                     "position": i, "latency_p99_us": v, "latency_p50_us": 1000.0,
                     "workload_cpu_cores": aa_cpu[i], "achieved_rps": 1000.0, "valid": True})
    for i in range(pairs):
        rows.append({"scenario": "http-chain", "label": "pair", "variant": "baseline", "pair": i,
                     "position": i % 2, "latency_p99_us": p99_base + i,
                     "latency_p50_us": 1000.0, "workload_cpu_cores": 0.20,
                     "achieved_rps": 1000.0, "valid": True})
        rows.append({"scenario": "http-chain", "label": "pair", "variant": "traced", "pair": i,
                     "position": 1 - i % 2, "latency_p99_us": p99_traced + i,
                     "latency_p50_us": 1010.0, "workload_cpu_cores": 0.20,
                     "tracer_cpu_cores": tracer_cpu, "achieved_rps": 1000.0,
                     "tracer_rss_peak_mb": 30.0, "tracer_events_seen": 1000.0,
                     "tracer_events_dropped": 0.0, "recall": recall, "precision": 1.0,
                     "field_accuracy": 1.0, "correlation": correlation, "valid": True})
    return pd.DataFrame(rows)


def _verdict(runs: pd.DataFrame):
    version, budgets = load_budgets(DEFAULT_BUDGETS)
    figs, noise = analysis.figures(runs)
    return evaluate(version, budgets, figs, noise), figs


def _status(verdict, name: str) -> str:
    return next(r.status for r in verdict.results if r.budget == name)


def test_default_budgets_file_is_versioned_and_complete():
    version, budgets = load_budgets(DEFAULT_BUDGETS)
    assert version >= 1
    names = {b.name for b in budgets}
    assert {"tracer_cpu", "tracer_process_cpu", "p99_added_latency", "tracer_rss", "drop_rate",
            "detection_recall", "correlation"} <= names
    assert next(b for b in budgets if b.name == "correlation").gate
    assert not next(b for b in budgets if b.name == "stress_event_rate").gate


def test_everything_within_budget_passes():
    verdict, figs = _verdict(_runs(5000, 5010, aa=(5000, 5004), tracer_cpu=0.01, recall=1.0))
    assert figs["http-chain"]["p99_added_us"] == pytest.approx(10)
    assert figs["http-chain"]["cpu_overhead_pct_core_per_1k_rps"] == pytest.approx(1.0)
    assert _status(verdict, "p99_added_latency") == PASS
    assert _status(verdict, "tracer_cpu") == PASS
    assert _status(verdict, "tracer_process_cpu") == PASS
    assert _status(verdict, "correlation") == PASS
    assert verdict.overall == PASS and verdict.ok


def test_wrong_parents_fail_the_gated_correlation_budget():
    verdict, _ = _verdict(_runs(5000, 5010, aa=(5000, 5004), tracer_cpu=0.01, recall=1.0,
                                correlation=0.9))
    assert _status(verdict, "correlation") == FAIL
    assert verdict.overall == FAIL


def test_tracer_cpu_alone_over_budget_fails_whatever_the_workload_noise():
    """The overhead figure is inconclusive under heavy A/A noise, but the tracer
    process by itself is over the limit: that is a conclusive failure."""
    verdict, figs = _verdict(_runs(5000, 5010, aa=(5000, 5004), tracer_cpu=0.05, recall=1.0,
                                   aa_cpu=(0.20, 0.40)))
    assert figs["http-chain"]["tracer_cpu_pct_core_per_1k_rps"] == pytest.approx(5.0)
    assert _status(verdict, "tracer_cpu") == INCONCLUSIVE
    assert _status(verdict, "tracer_process_cpu") == FAIL
    assert verdict.overall == FAIL


def test_latency_over_budget_beyond_noise_fails_with_margin():
    verdict, _ = _verdict(_runs(5000, 5300, aa=(5000, 5010), tracer_cpu=0.01, recall=1.0))
    r = next(r for r in verdict.results if r.budget == "p99_added_latency")
    assert r.status == FAIL
    assert r.margin == pytest.approx(50 - 300)
    assert "p99_added_latency" in r.line() and "margin -250" in r.line()
    assert verdict.overall == FAIL and not verdict.ok


def test_failure_inside_aa_noise_is_inconclusive():
    verdict, _ = _verdict(_runs(5000, 5300, aa=(5000, 5400), tracer_cpu=0.01, recall=1.0))
    assert _status(verdict, "p99_added_latency") == INCONCLUSIVE
    assert verdict.overall == INCONCLUSIVE and not verdict.ok


def test_low_recall_fails_and_missing_data_is_not_a_pass():
    verdict, _ = _verdict(_runs(5000, 5000, aa=(5000, 5000), tracer_cpu=0.01, recall=0.9))
    assert _status(verdict, "detection_recall") == FAIL
    b = Budget("x", "recall", 0.999, "min")
    assert judge(b, "s", math.nan).status == MISSING
    assert judge(b, "s", None).status == MISSING
    assert judge(b, "s", 0.9995).status == PASS


def test_min_budget_ignores_noise():
    b = Budget("x", "events_per_s", 10_000, "min", noise=False)
    assert judge(b, "stress", 9_000, noise_floor=5_000).status == FAIL


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


def test_pass_inside_noise_is_flagged_as_unresolved():
    b = Budget("cpu", "cpu_overhead_pct_core_per_1k_rps", 1.5, "max", noise=True)
    r = judge(b, "http-chain", 1.0, noise_floor=10.0)
    assert r.status == PASS and "not resolved" in r.note
    assert judge(b, "http-chain", 1.0, noise_floor=0.1).note == ""


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
