"""`python -m harness bench`: run the scenarios, write the report, judge budgets."""

from __future__ import annotations

import logging
import math
import secrets
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from harness import analysis, report
from harness.budgets import (
    DEFAULT_BUDGETS,
    Budget,
    Verdict,
    evaluate,
    load_budgets,
    resolution,
)
from harness.fmt import number
from harness.runner import BenchConfig, HarnessError, preflight, run_scenario
from harness.scenarios import build

log = logging.getLogger(__name__)


@dataclass
class BenchResult:
    out: Path
    verdict: Verdict
    runs: pd.DataFrame
    figures: dict
    noise: dict
    leftovers: dict


def _start_receiver(cfg: BenchConfig):
    """The OTLP receiver traced runs export to, in this process (its CPU is not
    the tracer's); the tracer runs in the root namespace, so loopback works."""
    if not cfg.export:
        return None
    from harness.receivers import GrpcReceiver, HttpReceiver

    if cfg.export == "otlp-grpc":
        rx = GrpcReceiver(keep=False).start()
        cfg.export_url = f"otlp-grpc://127.0.0.1:{rx.port}"
    elif cfg.export == "otlp-http":
        rx = HttpReceiver(keep=False).start()
        cfg.export_url = f"otlp-http://127.0.0.1:{rx.port}/v1/traces"
    else:
        raise HarnessError(f"--export {cfg.export}: expected otlp-http or otlp-grpc")
    return rx


def short_figures(scenario: str, budgets: list[Budget], figs: dict, noise: dict
                  ) -> list[tuple[str, int]]:
    """Gated noisy figures of `scenario` that judge() would call inconclusive
    (noise floor above a third of the budget, or above the value's distance
    to the limit), with the extra pairs each would need, assuming the floor
    shrinks as 1/sqrt(runs)."""
    short = []
    f, nz = figs.get(scenario, {}), noise.get(scenario, {})
    for b in budgets:
        if not (b.gate and b.noise and b.applies_to(scenario)):
            continue
        floor, need = number(nz.get(b.metric)), resolution(b)
        value = number(f.get(b.metric))
        if not math.isnan(value):
            need = min(need, abs(b.limit - value))
        count = number(f.get(f"{b.metric}_n"))
        n = 0 if math.isnan(count) else int(count)
        if math.isnan(floor):
            short.append((b.metric, 2 if n < 2 else 1))
        elif floor > need:
            more = math.ceil(n * (floor / need) ** 2) - n if need > 0 else 10**6
            short.append((b.metric, max(1, more)))
    return short


def bench(cfg: BenchConfig, budgets_path: Path = DEFAULT_BUDGETS) -> BenchResult:
    """Run everything and write ``cfg.out/<run-id>/``. Raises HarnessError on
    environment problems; budget failures are in the returned verdict."""
    version, budgets = load_budgets(budgets_path)  # fail fast on a bad file
    preflight(cfg)
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
    out = cfg.out / run_id
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    ts_rows: list[dict] = []
    bpf_rows: list[dict] = []
    infos: dict[str, dict] = {}
    notes: list[str] = []
    t_start = time.monotonic()
    scenarios = {name: build(name, raw / name) for name in cfg.scenarios}
    progress = None
    if cfg.progress:
        from tqdm import tqdm

        total = sum(sc.runs_planned(cfg.plan_for(sc)) for sc in scenarios.values())
        progress = tqdm(total=total, desc="bench", unit="run", leave=True)
    receiver = _start_receiver(cfg)
    try:
        for name in cfg.scenarios:
            def needs_more(scenario_rows: list[dict], name=name) -> list[tuple[str, int]]:
                figs, noise = analysis.figures(pd.DataFrame(scenario_rows))
                return short_figures(name, budgets, figs, noise)

            r, ts, b, info = run_scenario(cfg, name, raw / name, run_id, progress, needs_more)
            rows += r
            ts_rows += ts
            bpf_rows += b
            infos[name] = info
    finally:
        if progress is not None:
            progress.close()
        if receiver is not None:
            receiver.stop()
    if receiver is not None:
        exported = int(sum(v for r in rows if (v := r.get("tracer_spans_exported")) == v
                           and v is not None))  # v == v: not NaN
        notes.append(f"export: traced runs also exported to a real {cfg.export} receiver "
                     f"({cfg.export_url}); it received {receiver.count} spans, the tracers "
                     f"reported {exported} exported. Compare tracer CPU and RSS with a run "
                     "without --export for the export cost.")
    saturation = _saturation(cfg, raw / "saturation", notes)
    runs = pd.DataFrame(rows)
    summary = analysis.summary_table(runs)
    figs, noise = analysis.figures(runs)
    if saturation and saturation.get("ratio") is not None:
        # judged like any figure: its CI half-width is its noise floor
        lo, hi = saturation.get("ratio_ci") or (None, None)
        seen = saturation.get("events_seen") or 0
        figs["saturation"] = {"saturation_ratio": saturation["ratio"],
                              "saturation_ratio_n": saturation.get("pairs"),
                              "tracer_rss_peak_mb": (saturation.get("tracer") or {}).get("rss_mb"),
                              "drop_rate": (saturation.get("drops") or 0) / seen if seen
                              else math.nan}
        noise["saturation"] = {"saturation_ratio": (hi - lo) / 2 if lo is not None
                               and hi is not None else math.nan}
    ts = pd.DataFrame(ts_rows)
    for sc in scenarios.values():
        if sc.figures is not None and sc.name in figs:
            sc.figures(figs, runs, ts)  # overload, soak
    verdict = evaluate(version, budgets, figs, noise)
    notes += _notes(infos, figs, runs)
    env = report.environment({
        "run_id": run_id, "tracer_cmd": cfg.tracer_cmd,
        "bench_config": {k: str(v) if isinstance(v, Path) else v
                         for k, v in asdict(cfg).items()},
        "budgets_file": str(budgets_path), "budgets_version": version,
        "scenarios": infos, "wall_time_s": round(time.monotonic() - t_start, 1),
        "bpftool_available": shutil.which("bpftool") is not None,
    })
    sections = [sc.sections for sc in scenarios.values() if sc.sections is not None]
    report.write_report(out, raw, runs, summary, figs, noise, verdict, env, ts,
                        pd.DataFrame(bpf_rows), notes, sections=sections, saturation=saturation)
    leftovers = {k: v.get("leftovers", {}) for k, v in infos.items()}
    return BenchResult(out, verdict, runs, figs, noise, leftovers)


def _saturation(cfg: BenchConfig, workdir: Path, notes: list[str]) -> dict | None:
    """nginx at saturation beside the scenarios: with the default scenarios,
    or when asked. A failure is a note, not the end of the bench."""
    from harness.scenarios import DEFAULT_SCENARIOS

    wanted = cfg.saturation
    if wanted is None:
        wanted = sorted(cfg.scenarios) == sorted(DEFAULT_SCENARIOS)
    if not wanted:
        return None
    from harness.saturation import SaturationError, run_saturation

    try:
        sat = run_saturation(workdir, peers=cfg.peers)
    except (SaturationError, OSError) as e:
        notes.append(f"saturation: not run ({e})")
        return None
    for name, peer in (sat.get("peers") or {}).items():
        if "skipped" in peer:
            notes.append(f"saturation: peer {name} skipped ({peer['skipped']})")
    return sat


def _notes(infos: dict[str, dict], figs: dict, runs: pd.DataFrame) -> list[str]:
    notes = []
    for name, info in infos.items():
        if not info.get("tracer_loaded_bpf"):
            notes.append(f"{name}: the tracer command loaded no BPF program that bpftool could "
                         "see; readiness was not confirmed and BPF run time is missing.")
        n_invalid = figs.get(name, {}).get("invalid_runs", 0)
        if n_invalid:
            notes.append(f"{name}: {n_invalid} run(s) invalid (load generator above 90% CPU); "
                         "excluded from the budget figures.")
        extra = info.get("extra") or {}
        if extra:
            short = ", ".join(f"{m} (+{n} pairs)" for m, n in extra.get("short", []))
            notes.append(f"{name}: {extra['extra_pairs']} extra pair(s) in {extra['spent_s']} s "
                         f"of the {extra['bound_s']:g} s bound"
                         + (f"; still short: {short}; stopped: {extra['stopped']}" if short
                            else "; every gated figure resolved"))
        if any(info.get("leftovers", {}).values()):
            notes.append(f"{name}: left behind after teardown: {info['leftovers']}")
    if "agent_drained" in runs:
        busy = runs[runs["agent_drained"] == False]  # noqa: E712 (pandas mask)
        for _, r in busy.iterrows():
            notes.append(f"{r['scenario']} {r['tag']}: the tracer never went idle after the "
                         "load; its CPU was read at the drain limit.")
    for s, f in figs.items():
        if f.get("correlation") == 0:
            notes.append(f"{s}: correlation is 0: the tracer does not link spans across "
                         "processes yet.")
    return notes


__all__ = ["BenchConfig", "BenchResult", "HarnessError", "bench", "short_figures"]
