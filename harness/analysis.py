"""From the table of runs to per-scenario figures: medians with 95% CIs,
traced/baseline ratios, Mann-Whitney tests, the cost figures the budgets
judge (means with 95% CIs), and the noise floor of each of them. Pure
functions over plain data and pandas frames."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from scipy import stats

from harness.fmt import number

# Figures compared baseline vs traced in summary.csv.
COMPARED = [
    "achieved_rps", "latency_p50_us", "latency_p90_us", "latency_p99_us", "latency_p999_us",
    "workload_cpu_cores", "system_cpu_cores", "loadgen_cpu_cores",
]
# Figures that exist for traced runs only.
TRACED_ONLY = [
    "agent_cpu_us_per_request", "agent_cpu_us_per_span", "bpf_ns_per_request",
    "bpf_ns_per_syscall", "tracer_cpu_cores", "tracer_rss_peak_mb", "tracer_rss_steady_mb", "events_per_s",
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
    return pd.to_numeric(df[name], errors="coerce") if name in df else pd.Series(dtype=float)


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
    return number(row.get(key, math.nan))


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean with a t-interval; (mean, NaN, NaN) with fewer than 2 values."""
    x = np.asarray([v for v in values if not math.isnan(number(v))], float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if len(x) < 2:
        return m, math.nan, math.nan
    sem = float(x.std(ddof=1)) / math.sqrt(len(x))
    if sem == 0:
        return m, m, m
    lo, hi = stats.t.interval(confidence, len(x) - 1, loc=m, scale=sem)
    return m, float(lo), float(hi)


def _halfwidth(m: float, lo: float, hi: float) -> float:
    return max(m - lo, hi - m) if not (math.isnan(lo) or math.isnan(hi)) else math.nan


def _aa_couples(df: pd.DataFrame) -> list[tuple[pd.Series, pd.Series]]:
    """Two untraced runs each: the A/A pair, then consecutive baselines of
    the pairs (run order)."""
    def ordered(frame: pd.DataFrame, key: str) -> pd.DataFrame:
        return frame.sort_values(key) if key in frame else frame

    aa = ordered(df[df["label"] == "aa"], "position")
    base = ordered(df[(df["label"] == "pair") & (df["variant"] == "baseline")], "run")
    couples = [(aa.iloc[0], aa.iloc[1])] if len(aa) == 2 else []
    couples += [(base.iloc[i], base.iloc[i + 1]) for i in range(len(base) - 1)]
    return couples


def aa_bound(df: pd.DataFrame, fn) -> float:
    """The largest effect an A/A comparison is compatible with: the same
    difference computed between untraced runs, bound of its 95% CI (one
    couple: its absolute difference). NaN without any couple."""
    diffs = [fn(b) - fn(a) for a, b in _aa_couples(df)]
    diffs = [d for d in diffs if not math.isnan(d)]
    if not diffs:
        return math.nan
    m, lo, hi = mean_ci(diffs)
    return abs(m) if math.isnan(lo) else max(abs(lo), abs(hi))


def syscall_of(prog_name: str) -> dict:
    """{"syscall", "phase"} of a syscall tracepoint program named like
    tp_enter_read / tp_exit_read; empty strings for other programs."""
    m = _SYSCALL_PROG.search(prog_name or "")
    return {"syscall": m.group(2), "phase": m.group(1)} if m else {"syscall": "", "phase": ""}


_SYSCALL_PROG = re.compile(r"(?:^|_)(enter|exit)_([a-z0-9_]+)$")


def load_deltas(load: list[dict], idle: list[dict] | None, load_s: float,
                idle_s: float) -> list[dict]:
    """Per program, the load window's run count and time (bpf_delta rows)
    with the background an idle window just before predicts for the same
    length taken out: the programs run for every process on the machine,
    and what the neighbours do is not the load's cost. Adds bg_run_cnt,
    bg_run_time_ns, load_run_cnt, load_run_time_ns (may be < 0 per program)."""
    by = {d["prog_id"]: d for d in idle or []}
    k = load_s / idle_s if idle and idle_s > 0 else 0.0
    out = []
    for d in load:
        b = by.get(d["prog_id"], {})
        bg_cnt, bg_ns = b.get("run_cnt", 0) * k, b.get("run_time_ns", 0) * k
        out.append({**d, "bg_run_cnt": bg_cnt, "bg_run_time_ns": bg_ns,
                    "load_run_cnt": d["run_cnt"] - bg_cnt,
                    "load_run_time_ns": d["run_time_ns"] - bg_ns})
    return out


def bpf_figures(deltas: list[dict], requests, spans) -> dict:
    """One run's BPF run time (bpf_stats deltas per program, background
    taken out when load_deltas() added it): per request, per span, per
    program run and per traced syscall (the syscall programs' time over the
    syscalls they saw: one enter and one exit per syscall). Also the
    machine-wide time in the load window, background included (_all)."""
    def cnt(d):
        return d.get("load_run_cnt", d["run_cnt"])

    def ns(d):
        return d.get("load_run_time_ns", d["run_time_ns"])

    total_ns = max(sum(ns(d) for d in deltas), 0.0)
    total_cnt = max(sum(cnt(d) for d in deltas), 0.0)
    per: dict[str, dict[str, float]] = {}
    for d in deltas:
        sc = syscall_of(d["name"])
        if sc["syscall"]:
            e = per.setdefault(sc["syscall"], {"ns": 0.0, "enter": 0.0, "exit": 0.0})
            e["ns"] += ns(d)
            e[sc["phase"]] += cnt(d)
    sys_ns = max(sum(e["ns"] for e in per.values()), 0.0)
    sys_cnt = max(sum(max(e["enter"], e["exit"]) for e in per.values()), 0.0)
    all_ns = sum(d["run_time_ns"] for d in deltas)
    n, k = number(requests), number(spans)
    return {
        "bpf_ns_total": float(total_ns), "bpf_runs_total": float(total_cnt),
        "bpf_ns_per_request": total_ns / n if n > 0 else math.nan,
        "bpf_ns_per_span": total_ns / k if k > 0 else math.nan,
        "bpf_runs_per_request": total_cnt / n if n > 0 else math.nan,
        "bpf_ns_per_run": total_ns / total_cnt if total_cnt else math.nan,
        "bpf_syscalls_per_request": sys_cnt / n if n > 0 else math.nan,
        "bpf_ns_per_syscall": sys_ns / sys_cnt if sys_cnt else math.nan,
        "bpf_ns_per_request_all": all_ns / n if n > 0 else math.nan,
    }


# Difference figures: per pair, traced minus baseline.
LATENCY_ADDED = {"p50_added_us": "latency_p50_us", "p99_added_us": "latency_p99_us",
                 "p999_added_us": "latency_p999_us"}


def _growth_us(base: pd.Series, traced: pd.Series) -> float:
    """Growth of the workload's CPU, µs per request (traced's rate)."""
    rps = _get(traced, "achieved_rps")
    g = _get(traced, "workload_cpu_cores") - _get(base, "workload_cpu_cores")
    return g * 1e6 / rps if rps > 0 else math.nan


def _workload_us(r: pd.Series) -> float:
    rps = _get(r, "achieved_rps")
    return _get(r, "workload_cpu_cores") * 1e6 / rps if rps > 0 else math.nan


def _put(f: dict, noise: dict, key: str, values, aa: float | None = None) -> None:
    """f[key] = mean of values, with its 95% CI and count; noise[key] = the CI
    half-width, or the A/A bound when that is larger."""
    m, lo, hi = mean_ci(values)
    f[key], f[f"{key}_ci_low"], f[f"{key}_ci_high"] = m, lo, hi
    f[f"{key}_n"] = int(sum(1 for v in values if not math.isnan(number(v))))
    hw = _halfwidth(m, lo, hi)
    if aa is not None and not math.isnan(aa):
        hw = aa if math.isnan(hw) else max(hw, aa)
    noise[key] = hw


def figures(runs: pd.DataFrame) -> tuple[dict[str, dict], dict[str, dict]]:
    """Per-scenario figures the budgets judge, and each one's noise floor.

    Cost figures are means over runs with a 95% t-interval (keys
    <figure>_ci_low/_ci_high/_n). The noise floor of a figure is the
    half-width of that interval; for a traced-minus-baseline difference it
    is at least the A/A bound (the same difference between untraced runs).
    """
    figs: dict[str, dict] = {}
    noise: dict[str, dict] = {}
    for scenario, df in runs.groupby("scenario", sort=False):
        valid = df[df.get("valid", True) != False]  # noqa: E712 (pandas mask)
        pairs = _pairs(valid)
        traced = valid[valid["variant"] == "traced"]
        # traced runs at the plan's rate: the pairs' and the BPF pass
        main = traced[traced["label"].isin(["pair", "bpf"])]
        traced_pairs = traced[traced["label"] == "pair"]
        f: dict = {}
        nz: dict = {}

        def med(values) -> float:
            vals = [v for v in values if not math.isnan(number(v))]
            return float(np.median(vals)) if vals else math.nan

        def col(frame, key) -> list[float]:  # one value per row, NaN where missing
            if key not in frame:
                return [math.nan] * len(frame)
            return [number(v) for v in frame[key]]

        # the tracer's own CPU, load + drain, ns-based
        _put(f, nz, "agent_cpu_us_per_request", col(main, "agent_cpu_us_per_request"))
        _put(f, nz, "agent_cpu_us_per_span", col(main, "agent_cpu_us_per_span"))
        # in-kernel: BPF run time (runs with bpf_stats on)
        for key in ("bpf_ns_per_request", "bpf_ns_per_span", "bpf_ns_per_syscall",
                    "bpf_syscalls_per_request", "bpf_ns_per_run", "bpf_ns_per_request_all"):
            _put(f, nz, key, col(main, key))
        # all-in: tracer process + BPF in the traced processes, per run when
        # both were measured in the same run, else with the BPF mean
        for unit in ("request", "span"):
            agent, bpf = f"agent_cpu_us_per_{unit}", f"bpf_ns_per_{unit}"
            same = [a + b / 1e3 for a, b in zip(col(main, agent), col(main, bpf), strict=True)
                    if not (math.isnan(a) or math.isnan(b))]
            key = f"cost_us_per_{unit}"
            if len(same) >= 2:
                _put(f, nz, key, same)
            else:
                f[key] = f[agent] + f[bpf] / 1e3
                f[f"{key}_n"] = f[f"{agent}_n"]
                nz[key] = nz[agent] + nz[bpf] / 1e3
        # added latency, per pair, at least the A/A bound
        for key, lat in LATENCY_ADDED.items():
            _put(f, nz, key, [_get(t, lat) - _get(b, lat) for b, t in pairs],
                 aa=aa_bound(df, lambda r, c=lat: _get(r, c)))
        # cross-check: growth of the workload's CPU (BPF programs run in its
        # syscalls), and the tracer plus that growth
        _put(f, nz, "workload_growth_us_per_request", [_growth_us(b, t) for b, t in pairs],
             aa=aa_bound(df, _workload_us))
        _put(f, nz, "overhead_growth_us_per_request",
             [_get(t, "agent_cpu_us_per_request") + _growth_us(b, t) for b, t in pairs],
             aa=aa_bound(df, _workload_us))
        f.update({
            "pairs": len(pairs),
            "tracer_cpu_cores": med(col(traced_pairs, "tracer_cpu_cores")),
            "agent_startup_s": med(col(traced, "agent_startup_s")),
            "agent_startup_cpu_s": med(col(traced, "agent_startup_cpu_s")),
            "agent_stop_s": med(col(traced, "agent_stop_s")),
            "agent_stop_cpu_s": med(col(traced, "agent_stop_cpu_s")),
            "agent_drain_s": med(col(traced, "agent_drain_s")),
            "tracer_rss_peak_mb": float(_col(traced, "tracer_rss_peak_mb").max())
            if _col(traced, "tracer_rss_peak_mb").notna().any() else math.nan,
            "tracer_rss_steady_mb": med(col(traced_pairs, "tracer_rss_steady_mb")),
            "events_per_s": med(col(traced, "events_per_s")),
            "recall": med(col(traced, "recall")),
            "recall_min": float(_col(traced, "recall").min())
            if _col(traced, "recall").notna().any() else math.nan,
            "precision": med(col(traced, "precision")),
            "field_accuracy": med(col(traced, "field_accuracy")),
            "correlation": med(col(traced, "correlation")),
            "latency_error_p50_us": med(col(traced, "latency_error_p50_us")),
            # the client's timer wake-up lateness in untraced runs: the
            # machine's own jitter, a floor under any latency difference
            "wake_late_p99_us": med(col(valid[valid["variant"] == "baseline"],
                                        "wake_late_p99_us")),
            "achieved_rps": med(col(valid[valid["label"] == "pair"], "achieved_rps")),
            "invalid_runs": int((df.get("valid", True) == False).sum()),  # noqa: E712
        })
        seen = _col(traced, "tracer_events_seen").sum(min_count=1)
        dropped = _col(traced, "tracer_events_dropped").sum(min_count=1)
        f["drop_rate"] = float(dropped / seen) if seen and seen > 0 else (
            0.0 if seen == 0 else math.nan)
        figs[scenario] = f
        noise[scenario] = nz
    return figs, noise
