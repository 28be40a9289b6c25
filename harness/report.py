"""Report files under reports/<run-id>/: runs.csv, summary.csv, summary.md,
report.html with PNG plots, environment.json and verdict.json.

Scenario-specific tables (overload, soak) come in as `sections`; a
saturation result with peers (harness/saturation.py's dict) as
`saturation`. This module imports only budgets and fmt from the harness."""

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
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from harness.budgets import RESOLUTION, Result, Verdict
from harness.fmt import cell, interval, number

PACKAGES = ["pyroute2", "locust", "flask", "gunicorn", "grpcio", "grpcio-tools", "requests",
            "psutil", "pandas", "matplotlib", "scipy", "tqdm", "numpy"]

FIGURE_ROWS = [
    ("achieved_rps", "achieved load", "req/s"),
    ("cost_us_per_request", "cost: tracer + BPF", "µs CPU / request"),
    ("cost_us_per_span", "cost: tracer + BPF", "µs CPU / span"),
    ("agent_cpu_us_per_request", "tracer process (load + drain)", "µs CPU / request"),
    ("agent_cpu_us_per_span", "tracer process (load + drain)", "µs CPU / span"),
    ("bpf_ns_per_request", "BPF run time", "ns / request"),
    ("bpf_ns_per_span", "BPF run time", "ns / span"),
    ("bpf_ns_per_syscall", "BPF run time", "ns / traced syscall"),
    ("bpf_ns_per_request_all", "BPF run time, machine-wide (neighbours included)",
     "ns / request"),
    ("bpf_syscalls_per_request", "traced syscalls", "/ request"),
    ("workload_growth_us_per_request", "workload CPU growth (cross-check)", "µs / request"),
    ("overhead_growth_us_per_request", "tracer + workload growth (cross-check)",
     "µs / request"),
    ("tracer_cpu_cores", "tracer CPU (load + drain)", "cores"),
    ("p50_added_us", "p50 added", "us"),
    ("p99_added_us", "p99 added", "us"),
    ("p999_added_us", "p99.9 added", "us"),
    ("wake_late_p99_us", "machine jitter: client wake-up lateness p99, untraced", "us"),
    ("agent_startup_s", "tracer start-up (launch to ready)", "s"),
    ("agent_startup_cpu_s", "tracer start-up CPU", "s"),
    ("agent_stop_s", "tracer stop (SIGINT to exit)", "s"),
    ("agent_stop_cpu_s", "tracer stop CPU", "s"),
    ("tracer_rss_peak_mb", "tracer RSS peak", "MB"),
    ("tracer_rss_steady_mb", "tracer RSS steady", "MB"),
    ("events_per_s", "events seen", "/s"),
    ("drop_rate", "drop rate", ""),
    ("recall", "recall", ""),
    ("precision", "precision", ""),
    ("field_accuracy", "field accuracy", ""),
    ("latency_error_p50_us", "span latency error p50", "us"),
    ("correlation", "correlation", ""),
    ("pairs", "pairs (baseline, traced)", ""),
    ("invalid_runs", "invalid runs", ""),
]
# The cost table: figures with their 95% CI and noise floor.
COST_ROWS = [k for k, _, _ in FIGURE_ROWS[:12]] + ["p50_added_us", "p99_added_us",
                                                   "p999_added_us"]
PEER_ROWS = [  # (label, key in the tracer's / a peer's figures, decimals)
    ("CPU µs / request", "cpu_us_per_request"),
    ("peak RSS MB", "rss_mb"),
    ("start-up s (launch to ready)", "ready_s"),
    ("saturation ratio (traced / untraced req/s)", "ratio"),
    ("recall", "recall"),
    ("events dropped", "drops"),
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


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def figures_table(figs: dict[str, dict], noise: dict[str, dict]) -> tuple[list[str], list]:
    """Every figure per scenario; ± is the noise floor where there is one."""
    scenarios = list(figs)
    headers = ["figure", "unit", *scenarios]
    rows = []
    for key, label, unit in FIGURE_ROWS:
        if all(math.isnan(number(figs[s].get(key))) for s in scenarios):
            continue
        cells = []
        for s in scenarios:
            text = cell(figs[s].get(key), unit)
            nf = number(noise.get(s, {}).get(key))
            if not math.isnan(nf) and not math.isnan(number(figs[s].get(key))):
                text += f" (±{cell(nf, unit)})"
            cells.append(text)
        rows.append([label, unit, *cells])
    return headers, rows


def cost_table(figs: dict[str, dict], noise: dict[str, dict]) -> tuple[list[str], list]:
    """Cost figures with their 95% CI, run count and noise floor; for the
    scenarios that measured BPF run time or tracer CPU."""
    units = {k: u for k, _, u in FIGURE_ROWS}
    labels = {k: lab for k, lab, _ in FIGURE_ROWS}
    headers = ["scenario", "figure", "unit", "mean [95% CI]", "n", "noise floor"]
    rows = []
    for s, f in figs.items():
        if math.isnan(number(f.get("agent_cpu_us_per_request"))):
            continue
        for key in COST_ROWS:
            if math.isnan(number(f.get(key))):
                continue
            rows.append([s, labels[key], units[key],
                         interval(f.get(key), f.get(f"{key}_ci_low"), f.get(f"{key}_ci_high"),
                                  units[key] or "x"),
                         cell(f.get(f"{key}_n")), cell(noise.get(s, {}).get(key), "x")])
    return headers, rows


def bpf_syscall_table(bpf: pd.DataFrame) -> tuple[list[str], list]:
    """Per traced syscall, over every run with BPF statistics: calls (the
    larger of enter and exit runs) and ns of BPF per call, background taken
    out where an idle window measured it."""
    headers = ["scenario", "syscall", "calls", "ns / call (enter + exit)", "runs"]
    if bpf.empty or "syscall" not in bpf:
        return headers, []
    cnt = "load_run_cnt" if "load_run_cnt" in bpf else "run_cnt"
    ns = "load_run_time_ns" if "load_run_time_ns" in bpf else "run_time_ns"
    rows = []
    sys_rows = bpf[bpf["syscall"].fillna("") != ""]
    for (scenario, name), g in sys_rows.groupby(["scenario", "syscall"], sort=False):
        calls = sum(max(gg.loc[gg["phase"] == ph, cnt].sum() for ph in ("enter", "exit"))
                    for _, gg in g.groupby("tag"))
        if calls < 1:
            continue
        rows.append([scenario, name, round(calls), cell(g[ns].sum() / calls, "ns"),
                     g["tag"].nunique()])
    rows.sort(key=lambda r: (r[0], -r[2]))
    return headers, rows


def saturation_sections(saturation: dict | None, tracer: dict | None = None
                        ) -> list[tuple[str, list[str], list[list]]]:
    """Tables for a saturation result ({"untraced_rps", "traced_rps",
    "ratio", "drops", "peers": {name: {...} | {"skipped": reason}}}, as
    harness/saturation.py makes it), with the tracer and each peer side by
    side: CPU per request, RSS, start-up, saturation ratio, recall, drops.
    `tracer` fills the tracer's column where the saturation result has no
    value (e.g. its CPU per request at 1k req/s from the cost scenario).
    No saturation: no tables."""
    if not saturation:
        return []
    summary = [["untraced req/s", cell(saturation.get("untraced_rps"), "x")],
               ["traced req/s", cell(saturation.get("traced_rps"), "x")],
               ["ratio (traced / untraced)", cell(saturation.get("ratio"), "x")],
               ["ratio 95% CI", _ci_text(saturation.get("ratio_ci"))],
               ["events dropped (counted)", cell(saturation.get("drops"))]]
    tables = [("Saturation", ["figure", "value"], summary)]
    peers = saturation.get("peers") or {}
    ours = {**(tracer or {}), **{k: v for k, v in (saturation.get("tracer") or {}).items()
                                 if v is not None}}
    if not ours.get("ratio") and saturation.get("ratio") is not None:
        ours["ratio"] = saturation["ratio"]
    cols = {"tracer": ours, **peers}
    rows = []
    for label, key in PEER_ROWS:
        cells = []
        for f in cols.values():
            cells.append("skipped" if "skipped" in f else cell(f.get(key), "x"))
        rows.append([label, *cells])
    skipped = [[name, f["skipped"]] for name, f in peers.items() if "skipped" in f]
    tables.append(("Tracer and peers side by side", ["figure", *cols], rows))
    if skipped:
        tables.append(("Peers skipped", ["peer", "reason"], skipped))
    return tables


def _ci_text(ci) -> str:
    if not ci or len(ci) != 2:
        return "n/a"
    return f"{cell(ci[0], 'x')} – {cell(ci[1], 'x')}"


def summary_md_rows(summary: pd.DataFrame) -> tuple[list[str], list]:
    headers = ["scenario", "figure", "baseline median [95% CI]", "traced median [95% CI]",
               "traced/baseline", "Mann-Whitney p"]
    rows = []
    def ci(r: pd.Series, prefix: str) -> str:
        m = r.get(f"{prefix}_median")
        if m is None or pd.isna(m):
            return "–"
        return (f"{cell(m, 'x')} [{cell(r.get(f'{prefix}_ci_low'), 'x')}, "
                f"{cell(r.get(f'{prefix}_ci_high'), 'x')}]")

    for _, r in summary.iterrows():
        rows.append([r["scenario"], r["figure"], ci(r, "baseline"), ci(r, "traced"),
                     cell(r.get("ratio"), "x"), cell(r.get("mannwhitney_p"), "x")])
    return headers, rows


def verdict_rows(verdict: Verdict) -> tuple[list[str], list]:
    headers = ["status", "budget", "scenario", "value", "limit", "margin", "noise floor",
               "needs ≤", "gated", "note"]
    rows = []
    for r in verdict.results:
        rel = "≤" if r.kind == "max" else "≥"
        rows.append([r.status.upper(), r.budget, r.scenario, cell(r.value, r.unit or "x"),
                     f"{rel} {r.limit:g} {r.unit}", cell(r.margin, r.unit or "x"),
                     cell(r.noise_floor, "x"),
                     cell(abs(r.limit) * RESOLUTION, "x") if r.noise_floor is not None or
                     r.status == "inconclusive" else "", "yes" if r.gate else "no", r.note])
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

def pooled_latency_table(raw: Path, runs: pd.DataFrame) -> tuple[list[str], list]:
    """Client latency percentiles over all paired runs of each variant pooled."""
    headers = ["scenario", "variant", "samples", "p50 µs", "p99 µs", "p99.9 µs"]
    rows = []
    for scenario, df in runs.groupby("scenario", sort=False):
        for variant in ("baseline", "traced"):
            lat = _latencies(raw, df, variant)
            if len(lat):
                p = np.percentile(lat, [50, 99, 99.9])
                rows.append([scenario, variant, len(lat), *(cell(v, "us") for v in p)])
    return headers, rows


def write_report(out: Path, raw: Path, runs: pd.DataFrame, summary: pd.DataFrame,
                 figs: dict, noise: dict, verdict: Verdict, env: dict, ts: pd.DataFrame,
                 bpf: pd.DataFrame, notes: list[str], sections: Sequence[Callable] = (),
                 saturation: dict | None = None, tracer_peer: dict | None = None) -> None:
    """Write every report file. `sections`: the scenarios' own report
    functions (out, runs, ts, figs) -> (tables, images); `saturation` and
    `tracer_peer`: see saturation_sections()."""
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
        json.dump({**verdict.to_dict(), "exit_code": verdict.exit_code, "figures": figs,
                   "noise_floor": noise, "saturation": saturation}, fh, indent=2,
                  default=lambda o: None)
    images = plots(out, raw, runs, ts)
    extra: list[tuple[str, list[str], list[list]]] = []
    for fn in sections:  # overload, soak
        tables, more = fn(out, runs, ts, figs)
        extra += tables
        images += more

    counts = runs.groupby("scenario", sort=False).agg(
        runs=("tag", "count"), requests=("requests", "sum"), gt_requests=("gt_requests", "sum"))
    run_hdr = ["scenario", "runs", "requests sent (load)", "requests in ground truth"]
    run_rows = [[s, int(r.runs), int(r.requests), int(r.gt_requests)]
                for s, r in counts.iterrows()]
    short = ", ".join(f"{r.metric} [{r.scenario}]" for r in verdict.inconclusive)
    head = (f"Overall verdict: **{verdict.overall.upper()}** (exit {verdict.exit_code}; "
            f"budgets v{verdict.version})" + (f"; not resolved: {short}" if short else "") +
            f"; kernel {env.get('kernel')}, {env.get('cpus')} CPUs; tracer: "
            f"`{env.get('tracer_cmd')}`")
    tables = [("Runs", *(run_hdr, run_rows)),
              ("Budgets", *verdict_rows(verdict)),
              ("Cost (means over runs, 95% CI; a figure is judged when its noise floor "
               f"≤ {RESOLUTION:.2g} of its budget)", *cost_table(figs, noise)),
              ("BPF run time per traced syscall", *bpf_syscall_table(bpf)),
              *[(t, h, r) for t, h, r in saturation_sections(saturation, tracer_peer)],
              ("Figures per scenario (± noise floor)", *figures_table(figs, noise)),
              ("Client latency, all paired runs pooled", *pooled_latency_table(raw, runs)),
              ("Baseline vs traced (medians over paired runs)", *summary_md_rows(summary)),
              *extra]
    md = [f"# Benchmark {env.get('run_id', '')}", "", head, ""]
    for title, headers, rows in tables:
        if rows:
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
    run_id = html.escape(str(env.get("run_id", "")))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>bench "
             f"{run_id}</title><style>{style}</style></head><body>",
             f"<h1>Benchmark {run_id}</h1>",
             "<p>" + html.escape(head.replace("**", "").replace("`", "")) + "</p>"]
    for title, headers, rows in tables:
        if rows:
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


EXCERPT_BEGIN, EXCERPT_END = "<!-- bench-excerpt:begin -->", "<!-- bench-excerpt:end -->"


def excerpt(report_dir: Path) -> str:
    """Markdown for a README from a written report (verdict.json and
    environment.json): its id, wall time and commit, the gated budgets, and
    the cost figures with their CIs. Numbers are the report's, not typed."""
    verdict_d = json.loads((report_dir / "verdict.json").read_text())
    env = json.loads((report_dir / "environment.json").read_text())
    fields = set(Result.__dataclass_fields__)
    verdict = Verdict(verdict_d.get("budgets_version", 0),
                      [Result(**{k: v for k, v in r.items() if k in fields})
                       for r in verdict_d.get("results", []) if r.get("gate")])
    figs, noise = verdict_d.get("figures") or {}, verdict_d.get("noise_floor") or {}
    wall = number(env.get("wall_time_s"))
    head = (f"Report `{env.get('run_id')}`: {', '.join(figs)}; "
            f"{int(wall // 60)} min {int(wall % 60)} s wall time on {env.get('cpus')} CPUs "
            f"(kernel {env.get('kernel')}, commit {str(env.get('git_commit', ''))[:10]}"
            f"{', dirty tree' if env.get('git_dirty') else ''}). Overall: "
            f"**{verdict_d.get('overall', '').upper()}** (exit {verdict_d.get('exit_code')}).")
    out = [head, "", md_table(*verdict_rows(verdict)), ""]
    # the cost scenario(s): where the tracer and BPF were both measured
    costly = {s: f for s, f in figs.items()
              if not math.isnan(number(f.get("cost_us_per_request")))}
    cost = cost_table(costly, noise)
    if cost[1]:
        out += [md_table(*cost), ""]
    for s, f in costly.items():
        jitter = number(f.get("wake_late_p99_us"))
        if not math.isnan(jitter):
            out += [f"Machine jitter on `{s}`: the load client's timer wake-ups were "
                    f"{cell(jitter, 'us')} µs late at p99 (median of the untraced runs).", ""]
    return "\n".join(out)


def replace_excerpt(readme: Path, text: str) -> None:
    """Put `text` between the excerpt markers of `readme`."""
    doc = readme.read_text()
    try:
        before, rest = doc.split(EXCERPT_BEGIN, 1)
        _, after = rest.split(EXCERPT_END, 1)
    except ValueError as e:
        raise ValueError(f"{readme}: no {EXCERPT_BEGIN} ... {EXCERPT_END} block") from e
    readme.write_text(f"{before}{EXCERPT_BEGIN}\n{text}\n{EXCERPT_END}{after}")
