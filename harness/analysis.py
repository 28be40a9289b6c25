"""From the table of runs to per-scenario figures: medians with 95% CIs,
traced/baseline ratios, Mann-Whitney tests, the overhead figures the budgets
judge, and the A/A noise floor for each of them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

# Figures compared baseline vs traced in summary.csv.
COMPARED = [
    "achieved_rps", "latency_p50_us", "latency_p90_us", "latency_p99_us", "latency_p999_us",
    "workload_cpu_cores", "system_cpu_cores", "loadgen_cpu_cores",
]
# Figures that exist for traced runs only.
TRACED_ONLY = [
    "tracer_cpu_cores", "tracer_rss_peak_mb", "tracer_rss_steady_mb", "events_per_s",
    "delivered_per_s", "dropped_per_s", "drop_rate", "precision", "recall", "field_accuracy",
    "latency_error_p50_us", "latency_error_p99_us", "correlation",
]


def median_ci(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Median with a distribution-free CI from order statistics (binomial).
    With few runs the interval widens to the min..max (6 runs: 96.9%)."""
    x = np.sort(np.asarray([v for v in values if v is not None and not pd.isna(v)], float))
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan
    med = float(np.median(x))
    if n < 3:
        return med, float(x[0]), float(x[-1])
    # Narrowest [x[k], x[n-1-k]] (0-based) covering the median with the given
    # confidence: coverage = 1 - 2 P(B <= k), B ~ Binomial(n, 1/2).
    lo_idx, hi_idx = 0, n - 1
    for k in range((n - 1) // 2, -1, -1):
        cover = 1 - 2 * stats.binom.cdf(k, n, 0.5)
        if cover >= confidence:
            lo_idx, hi_idx = k, n - 1 - k
            break
    return med, float(x[lo_idx]), float(x[hi_idx])


def mann_whitney(a, b) -> float:
    a = [v for v in a if not pd.isna(v)]
    b = [v for v in b if not pd.isna(v)]
    if len(a) < 2 or len(b) < 2 or (len(set(a)) == 1 and set(a) == set(b)):
        return math.nan
    return float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df else pd.Series(dtype=float)


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (scenario, figure): baseline vs traced over the paired runs."""
    out = []
    for scenario, df in runs.groupby("scenario", sort=False):
        pairs = df[df["label"] == "pair"]
        base = pairs[pairs["variant"] == "baseline"]
        traced = df[df["variant"] == "traced"]
        traced_pairs = pairs[pairs["variant"] == "traced"]
        for fig in COMPARED:
            b, bl, bh = median_ci(_col(base, fig))
            t, tl, th = median_ci(_col(traced_pairs, fig))
            out.append({"scenario": scenario, "figure": fig, "baseline_median": b,
                        "baseline_ci_low": bl, "baseline_ci_high": bh, "traced_median": t,
                        "traced_ci_low": tl, "traced_ci_high": th,
                        "ratio": t / b if b else math.nan,
                        "mannwhitney_p": mann_whitney(_col(base, fig), _col(traced_pairs, fig)),
                        "n_baseline": int(_col(base, fig).notna().sum()),
                        "n_traced": int(_col(traced_pairs, fig).notna().sum())})
        for fig in TRACED_ONLY:
            src = traced_pairs if fig not in ("drop_rate", "events_per_s") else traced
            t, tl, th = median_ci(_col(src, fig))
            out.append({"scenario": scenario, "figure": fig, "traced_median": t,
                        "traced_ci_low": tl, "traced_ci_high": th,
                        "n_traced": int(_col(src, fig).notna().sum())})
    return pd.DataFrame(out)


def _pairs(df: pd.DataFrame) -> list[tuple[pd.Series, pd.Series]]:
    pairs = df[df["label"] == "pair"]
    out = []
    for _, g in pairs.groupby("pair"):
        b, t = g[g["variant"] == "baseline"], g[g["variant"] == "traced"]
        if len(b) == 1 and len(t) == 1:
            out.append((b.iloc[0], t.iloc[0]))
    return out


def _get(row: pd.Series, key: str) -> float:
    v = row.get(key, math.nan)
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _cpu_overhead(base: pd.Series, traced: pd.Series) -> float:
    """% of one core per 1k req/s: the tracer's own CPU plus what the workload
    spent extra (syscall hooks run in the workload's context)."""
    tracer = _get(traced, "tracer_cpu_cores")
    tracer = 0.0 if math.isnan(tracer) else tracer
    growth = _get(traced, "workload_cpu_cores") - _get(base, "workload_cpu_cores")
    krps = _get(traced, "achieved_rps") / 1000.0
    return (tracer + growth) * 100.0 / krps if krps > 0 else math.nan


def figures(runs: pd.DataFrame) -> tuple[dict[str, dict], dict[str, dict]]:
    """Per-scenario figures the budgets judge, and the A/A noise floor of the
    difference figures (same formula applied to the two baseline runs)."""
    figs: dict[str, dict] = {}
    noise: dict[str, dict] = {}
    for scenario, df in runs.groupby("scenario", sort=False):
        valid = df[df.get("valid", True) != False]  # noqa: E712 (pandas mask)
        pairs = _pairs(valid)
        traced = valid[valid["variant"] == "traced"]
        traced_main = traced[traced["label"] == "pair"]

        def med(values) -> float:
            vals = [v for v in values if not math.isnan(v)]
            return float(np.median(vals)) if vals else math.nan

        f = {
            "cpu_overhead_pct_core_per_1k_rps": med([_cpu_overhead(b, t) for b, t in pairs]),
            "p99_added_us": med([_get(t, "latency_p99_us") - _get(b, "latency_p99_us")
                                 for b, t in pairs]),
            "p50_added_us": med([_get(t, "latency_p50_us") - _get(b, "latency_p50_us")
                                 for b, t in pairs]),
            "tracer_cpu_cores": med(list(_col(traced_main, "tracer_cpu_cores"))),
            # The tracer process alone, same normalisation: not subject to the
            # workload's run-to-run noise.
            "tracer_cpu_pct_core_per_1k_rps": med([
                _get(t, "tracer_cpu_cores") * 1e5 / _get(t, "achieved_rps")
                for _, t in traced_main.iterrows() if _get(t, "achieved_rps") > 0]),
            "tracer_rss_peak_mb": float(_col(traced, "tracer_rss_peak_mb").max())
            if _col(traced, "tracer_rss_peak_mb").notna().any() else math.nan,
            "tracer_rss_steady_mb": med(list(_col(traced_main, "tracer_rss_steady_mb"))),
            "events_per_s": med(list(_col(traced, "events_per_s"))),
            "recall": med(list(_col(traced, "recall"))),
            "recall_min": float(_col(traced, "recall").min())
            if _col(traced, "recall").notna().any() else math.nan,
            "precision": med(list(_col(traced, "precision"))),
            "field_accuracy": med(list(_col(traced, "field_accuracy"))),
            "correlation": med(list(_col(traced, "correlation"))),
            "latency_error_p50_us": med(list(_col(traced, "latency_error_p50_us"))),
            "bpf_ns_per_request": med(list(_col(df, "bpf_ns_per_request"))),
            "achieved_rps": med(list(_col(valid[valid["label"] == "pair"], "achieved_rps"))),
            "invalid_runs": int((df.get("valid", True) == False).sum()),  # noqa: E712
        }
        seen = _col(traced, "tracer_events_seen").sum(min_count=1)
        dropped = _col(traced, "tracer_events_dropped").sum(min_count=1)
        f["drop_rate"] = float(dropped / seen) if seen and seen > 0 else (
            0.0 if seen == 0 else math.nan)
        figs[scenario] = f

        noise[scenario] = _noise_floor(df)
    return figs, noise


def _noise_floor(df: pd.DataFrame) -> dict[str, float]:
    """How far two untraced runs differ, per difference figure: the A/A pair,
    widened to the median gap between consecutive baseline runs of the pairs
    (one A/A pair alone can land close together by luck)."""
    aa = df[df["label"] == "aa"].sort_values("position")
    base = df[(df["label"] == "pair") & (df["variant"] == "baseline")].sort_values("pair")
    couples = [(aa.iloc[0], aa.iloc[1])] if len(aa) == 2 else []
    couples += [(base.iloc[i], base.iloc[i + 1]) for i in range(len(base) - 1)]
    if not couples:
        return {}

    def floor(fn) -> float:
        gaps = [abs(fn(b) - fn(a)) for a, b in couples]
        gaps = [g for g in gaps if not math.isnan(g)]
        if not gaps:
            return math.nan
        return max(gaps[0] if len(aa) == 2 else 0.0, float(np.median(gaps)))

    def cpu_per_1k(r: pd.Series) -> float:
        krps = _get(r, "achieved_rps") / 1000.0
        return _get(r, "workload_cpu_cores") * 100.0 / krps if krps > 0 else math.nan

    return {
        "p99_added_us": floor(lambda r: _get(r, "latency_p99_us")),
        "p50_added_us": floor(lambda r: _get(r, "latency_p50_us")),
        "cpu_overhead_pct_core_per_1k_rps": floor(cpu_per_1k),
    }
