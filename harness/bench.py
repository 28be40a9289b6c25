"""`python -m harness bench`: run the scenarios, write the report, judge budgets."""

from __future__ import annotations

import logging
import secrets
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from harness import analysis, overload, report
from harness.budgets import DEFAULT_BUDGETS, Verdict, evaluate, load_budgets
from harness.runner import BenchConfig, HarnessError, preflight, run_scenario

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
    total = cfg.runs_per_scenario() * len(cfg.scenarios)
    progress = None
    if cfg.progress:
        from tqdm import tqdm

        progress = tqdm(total=total, desc="bench", unit="run", leave=True)
    receiver = _start_receiver(cfg)
    try:
        for name in cfg.scenarios:
            r, ts, b, info = run_scenario(cfg, name, raw / name, run_id, progress)
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
    runs = pd.DataFrame(rows)
    summary = analysis.summary_table(runs)
    figs, noise = analysis.figures(runs)
    overload.add_figures(figs, runs, pd.DataFrame(ts_rows))
    verdict = evaluate(version, budgets, figs, noise)
    for name, info in infos.items():
        if not info.get("tracer_loaded_bpf"):
            notes.append(f"{name}: the tracer command loaded no BPF program that bpftool could "
                         "see; readiness was not confirmed and BPF run time is missing.")
        n_invalid = figs[name].get("invalid_runs", 0)
        if n_invalid:
            notes.append(f"{name}: {n_invalid} run(s) invalid (load generator above 90% CPU); "
                         "excluded from the budget figures.")
        if any(info.get("leftovers", {}).values()):
            notes.append(f"{name}: left behind after teardown: {info['leftovers']}")
    for s, f in figs.items():
        if f.get("correlation") == 0:
            notes.append(f"{s}: correlation is 0: the tracer does not link spans across "
                         "processes yet (budget not gated).")
    env = report.environment({
        "run_id": run_id, "tracer_cmd": cfg.tracer_cmd,
        "bench_config": {k: str(v) if isinstance(v, Path) else v
                         for k, v in asdict(cfg).items()},
        "budgets_file": str(budgets_path), "budgets_version": version,
        "scenarios": infos, "wall_time_s": round(time.monotonic() - t_start, 1),
        "bpftool_available": shutil.which("bpftool") is not None,
    })
    ts = pd.DataFrame(ts_rows)
    report.write_report(out, raw, runs, summary, figs, noise, verdict, env, ts,
                        pd.DataFrame(bpf_rows), notes)
    leftovers = {k: v.get("leftovers", {}) for k, v in infos.items()}
    return BenchResult(out, verdict, runs, figs, noise, leftovers)


__all__ = ["BenchConfig", "BenchResult", "HarnessError", "bench"]
