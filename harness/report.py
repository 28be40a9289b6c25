"""Report files under reports/<run-id>/: runs.csv, summary.csv, summary.md,
report.html with PNG plots, environment.json and verdict.json."""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import math
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from harness.budgets import Verdict

PACKAGES = ["pyroute2", "locust", "flask", "gunicorn", "grpcio", "grpcio-tools", "requests",
            "psutil", "pandas", "matplotlib", "scipy", "tqdm", "numpy"]

FIGURE_ROWS = [
    ("achieved_rps", "achieved load", "req/s"),
    ("cpu_overhead_pct_core_per_1k_rps", "CPU overhead", "% core / 1k req/s"),
    ("tracer_cpu_pct_core_per_1k_rps", "tracer process CPU", "% core / 1k req/s"),
    ("tracer_cpu_cores", "tracer CPU", "cores"),
    ("p50_added_us", "p50 added", "us"),
    ("p99_added_us", "p99 added", "us"),
    ("tracer_rss_peak_mb", "tracer RSS peak", "MB"),
    ("tracer_rss_steady_mb", "tracer RSS steady", "MB"),
    ("events_per_s", "events seen", "/s"),
    ("drop_rate", "drop rate", ""),
    ("bpf_ns_per_request", "BPF run time", "ns / request"),
    ("recall", "recall", ""),
    ("precision", "precision", ""),
    ("field_accuracy", "field accuracy", ""),
    ("latency_error_p50_us", "span latency error p50", "us"),
    ("correlation", "correlation", ""),
    ("invalid_runs", "invalid runs", ""),
]


def _cmd(argv: list[str]) -> str:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return "unavailable"
    text = (res.stdout or res.stderr).strip()
    return text.splitlines()[0] if text else "unavailable"


def environment(extra: dict) -> dict:
    try:
        with gzip.open("/proc/config.gz", "rb") as fh:
            config_hash = hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        config_hash = "unavailable"
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    cpu_model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu_model = next((ln.split(":", 1)[1].strip() for ln in fh
                              if ln.startswith("model name")), "")
    except OSError:
        pass
    repo = Path(__file__).resolve().parents[1]
    return {
        "kernel": platform.release(), "kernel_version": platform.version(),
        "machine": platform.machine(), "kernel_config_sha256": config_hash,
        "cpus": os.cpu_count(), "cpu_model": cpu_model,
        "mem_total_kb": _meminfo_total(),
        "python": sys.version.split()[0], "packages": versions,
        "clang": _cmd(["clang", "--version"]), "bpftool": _cmd(["bpftool", "version"]),
        "libbpf": _cmd(["dpkg-query", "-W", "-f", "${Version}", "libbpf1"]),
        "git_commit": _cmd(["git", "-C", str(repo), "rev-parse", "HEAD"]),
        "git_dirty": _git_dirty(repo),
        **extra,
    }


def _git_dirty(repo: Path) -> bool | None:
    try:
        res = subprocess.run(["git", "-C", str(repo), "status", "--porcelain",
                              "--untracked-files=no"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    return bool(res.stdout.strip()) if res.returncode == 0 else None


def _meminfo_total() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            return int(fh.readline().split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _fmt(v, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v}"
    if unit == "" and 0 <= v <= 1:
        return f"{v:.4f}"
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def figures_table(figs: dict[str, dict], noise: dict[str, dict]) -> tuple[list[str], list]:
    scenarios = list(figs)
    headers = ["figure", "unit", *scenarios]
    rows = []
    for key, label, unit in FIGURE_ROWS:
        cells = []
        for s in scenarios:
            cell = _fmt(figs[s].get(key), unit)
            nf = noise.get(s, {}).get(key)
            if nf is not None and not math.isnan(nf):
                cell += f" (A/A ±{_fmt(nf, unit)})"
            cells.append(cell)
        rows.append([label, unit, *cells])
    return headers, rows


def summary_md_rows(summary: pd.DataFrame) -> tuple[list[str], list]:
    headers = ["scenario", "figure", "baseline median [95% CI]", "traced median [95% CI]",
               "traced/baseline", "Mann-Whitney p"]
    rows = []
    def ci(r: pd.Series, prefix: str) -> str:
        m = r.get(f"{prefix}_median")
        if m is None or pd.isna(m):
            return "–"
        return (f"{_fmt(m, 'x')} [{_fmt(r.get(f'{prefix}_ci_low'), 'x')}, "
                f"{_fmt(r.get(f'{prefix}_ci_high'), 'x')}]")

    for _, r in summary.iterrows():
        rows.append([r["scenario"], r["figure"], ci(r, "baseline"), ci(r, "traced"),
                     _fmt(r.get("ratio"), "x"), _fmt(r.get("mannwhitney_p"), "x")])
    return headers, rows


def verdict_rows(verdict: Verdict) -> tuple[list[str], list]:
    headers = ["status", "budget", "scenario", "value", "limit", "margin", "A/A noise", "gated",
               "note"]
    rows = []
    for r in verdict.results:
        rel = "≤" if r.kind == "max" else "≥"
        rows.append([r.status.upper(), r.budget, r.scenario, _fmt(r.value, r.unit or "x"),
                     f"{rel} {r.limit:g} {r.unit}", _fmt(r.margin, r.unit or "x"),
                     _fmt(r.noise_floor, "x"), "yes" if r.gate else "no", r.note])
    return headers, rows


# --- plots ---------------------------------------------------------------------

def _latencies(raw: Path, runs: pd.DataFrame, variant: str) -> np.ndarray:
    vals = []
    for _, r in runs[(runs["variant"] == variant) & (runs["label"] == "pair")].iterrows():
        p = raw / r["scenario"] / f"{r['tag']}.latencies.csv"
        if p.exists():
            df = pd.read_csv(p, usecols=["ok", "latency_us"])
            vals.append(df.loc[df["ok"] == 1, "latency_us"].to_numpy())
    return np.concatenate(vals) if vals else np.array([])


def plots(out: Path, raw: Path, runs: pd.DataFrame, ts: pd.DataFrame) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for scenario, df in runs.groupby("scenario", sort=False):
        fig, ax = plt.subplots(figsize=(7, 4))
        for variant, color in (("baseline", "tab:blue"), ("traced", "tab:red")):
            lat = np.sort(_latencies(raw, df, variant))
            if len(lat):
                ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat), label=variant, color=color)
        ax.set_xscale("log")
        ax.set_xlabel("client latency (µs, log)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"{scenario}: latency CDF, all paired runs")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        name = f"latency_cdf_{scenario}.png"
        fig.tight_layout()
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        made.append((name, f"{scenario}: latency CDF, baseline vs traced"))

        sts = ts[ts["scenario"] == scenario] if not ts.empty else ts
        if sts.empty:
            continue
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
        for _tag, g in sts.groupby("tag", sort=False):
            g = g.sort_values("t")
            dt = g["t"].diff()
            variant = g["variant"].iloc[0]
            style = "-" if variant == "traced" else ":"
            wl = g["workload_cpu_s"].diff() / dt
            ax1.plot(g["t"], wl, style, color="tab:blue", alpha=0.5, lw=0.8)
            if "tracer_cpu_s" in g and g["tracer_cpu_s"].notna().any():
                ax1.plot(g["t"], g["tracer_cpu_s"].diff() / dt, "-", color="tab:red", alpha=0.6,
                         lw=0.8)
                ax2.plot(g["t"], g["tracer_rss"] / 1e6, "-", color="tab:red", alpha=0.6, lw=0.8)
        ax1.set_ylabel("CPU (cores)")
        ax1.set_title(f"{scenario}: workload (blue; dotted = baseline) and tracer (red) CPU")
        ax2.set_ylabel("tracer RSS (MB)")
        ax2.set_xlabel("seconds since the run started")
        for a in (ax1, ax2):
            a.grid(True, alpha=0.3)
        fig.tight_layout()
        name = f"cpu_rss_{scenario}.png"
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        made.append((name, f"{scenario}: CPU and RSS over time, every run"))

    traced = runs[runs["variant"] == "traced"]
    if "events_per_s" in traced and traced["events_per_s"].notna().any():
        fig, ax = plt.subplots(figsize=(7, 3.5))
        g = traced.groupby("scenario", sort=False)
        seen = g["events_per_s"].median()
        dropped = g["dropped_per_s"].median() if "dropped_per_s" in traced else seen * 0
        x = np.arange(len(seen))
        ax.bar(x - 0.2, seen.values, 0.4, label="seen")
        ax.bar(x + 0.2, dropped.values, 0.4, label="dropped", color="tab:red")
        ax.axhline(10_000, ls="--", color="grey", lw=0.8, label="10k/s")
        ax.set_xticks(x, seen.index)
        ax.set_ylabel("events/s (median of traced runs)")
        ax.set_title("events at the tracer")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "events.png", dpi=90)
        plt.close(fig)
        made.append(("events.png", "events/s seen and dropped by the tracer"))
    return made


# --- writers -------------------------------------------------------------------

def write_report(out: Path, raw: Path, runs: pd.DataFrame, summary: pd.DataFrame,
                 figs: dict, noise: dict, verdict: Verdict, env: dict, ts: pd.DataFrame,
                 bpf: pd.DataFrame, notes: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out / "runs.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    if not ts.empty:
        ts.to_csv(out / "timeseries.csv", index=False)
    if not bpf.empty:
        bpf.to_csv(out / "bpf_programs.csv", index=False)
    figures_df = pd.DataFrame(figs).T.rename_axis("scenario").reset_index()
    figures_df.to_csv(out / "figures.csv", index=False)
    with open(out / "environment.json", "w") as fh:
        json.dump(env, fh, indent=2, default=str)
    with open(out / "verdict.json", "w") as fh:
        json.dump({**verdict.to_dict(), "figures": figs, "noise_floor": noise}, fh, indent=2,
                  default=lambda o: None)
    images = plots(out, raw, runs, ts)
    from harness.overload import report_sections

    extra, extra_images = report_sections(out, runs, ts, figs)  # overload, soak
    images += extra_images

    counts = runs.groupby("scenario", sort=False).agg(
        runs=("tag", "count"), requests=("requests", "sum"), gt_requests=("gt_requests", "sum"))
    run_hdr = ["scenario", "runs", "requests sent (load)", "requests in ground truth"]
    run_rows = [[s, int(r.runs), int(r.requests), int(r.gt_requests)]
                for s, r in counts.iterrows()]
    fh_, fr = figures_table(figs, noise)
    vh, vr = verdict_rows(verdict)
    sh, sr = summary_md_rows(summary)
    md = [f"# Benchmark {env.get('run_id', '')}", "",
          f"Overall verdict: **{verdict.overall.upper()}** (budgets v{verdict.version}); "
          f"kernel {env.get('kernel')}, {env.get('cpus')} CPUs; tracer: "
          f"`{env.get('tracer_cmd')}`", "",
          "## Runs", "", md_table(run_hdr, run_rows), "",
          "## Budgets", "", md_table(vh, vr), "",
          "## Figures per scenario (medians over paired runs)", "", md_table(fh_, fr), "",
          "## Baseline vs traced", "", md_table(sh, sr), ""]
    for title, headers, rows in extra:
        md += [f"## {title}", "", md_table(headers, rows), ""]
    if notes:
        md += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    md += ["## Plots", "", *[f"- `{name}`: {title}" for name, title in images], ""]
    (out / "summary.md").write_text("\n".join(md))

    def html_table(headers, rows) -> str:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                       for r in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
             "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>bench "
             f"{html.escape(str(env.get('run_id', '')))}</title><style>{style}</style></head><body>",
             f"<h1>Benchmark {html.escape(str(env.get('run_id', '')))}</h1>",
             f"<p>Overall verdict: <b>{verdict.overall.upper()}</b> "
             f"(budgets v{verdict.version}); kernel {html.escape(str(env.get('kernel')))}; "
             f"tracer <code>{html.escape(str(env.get('tracer_cmd')))}</code></p>",
             "<h2>Runs</h2>", html_table(run_hdr, run_rows),
             "<h2>Budgets</h2>", html_table(vh, vr),
             "<h2>Figures per scenario</h2>", html_table(fh_, fr),
             "<h2>Baseline vs traced</h2>", html_table(sh, sr)]
    for title, headers, rows in extra:
        parts += [f"<h2>{html.escape(title)}</h2>", html_table(headers, rows)]
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes)
                     + "</ul>")
    parts.append("<h2>Plots</h2>")
    parts += [f"<h3>{html.escape(t)}</h3><img src='{n}' alt='{html.escape(t)}'>"
              for n, t in images]
    parts.append("<h2>Environment</h2><pre>" + html.escape(json.dumps(env, indent=2,
                                                                         default=str)) + "</pre>")
    parts.append("</body></html>")
    (out / "report.html").write_text("\n".join(parts))
