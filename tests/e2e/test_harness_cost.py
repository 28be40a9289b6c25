"""Harness smoke test of the cost scenario: the real tracer on the stress
server at 1k req/s from the paced C client, exactly 1009 requests per run.
The tracer's CPU is read from its own cgroup (load + drain apart from
start-up and stop), BPF run time per traced syscall from bpf_stats, and
nothing is left behind (cgroup, sysctl, namespaces)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness import measure
from harness.cgroup import V1_CPUACCT, _v2_root
from netns.fixtures import netns_unavailable

N = 1009  # prime, about 1 s at 1k req/s


def _groups() -> set[str]:
    root = V1_CPUACCT if (V1_CPUACCT / "cpuacct.usage").exists() else _v2_root()
    return {p.name for p in root.iterdir() if p.name.startswith("httptrace-")} if root else set()


@pytest.mark.timeout(180)
def test_stress_cost_smoke(tmp_path: Path):
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    from harness.bench import bench
    from harness.runner import BenchConfig

    stats_before = Path(measure.BPF_STATS_SYSCTL).read_text()
    groups_before = _groups()
    cfg = BenchConfig(scenarios=["stress"], requests=N, repeat=1, aa=False, warmup=0.5,
                      out=tmp_path, progress=False, extra=False)
    result = bench(cfg)

    runs = pd.read_csv(result.out / "runs.csv")
    assert list(runs["variant"]) == ["baseline", "traced"]
    assert list(runs["loadgen"]) == ["paced", "paced"]
    assert list(runs["requests"]) == [N, N] and list(runs["gt_requests"]) == [N, N]
    assert list(runs["achieved_rps"].round(-1)) == [1000, 1000]
    t = runs[runs["variant"] == "traced"].iloc[0]
    assert t["recall"] == 1.0 and t["tracer_spans_emitted"] == N
    # CPU windows: start-up, load + drain, stop; all from the tracer's cgroup
    assert t["agent_drained"]
    assert 0 < t["agent_startup_cpu_s"] < t["agent_cpu_end_s"] < t["agent_life_cpu_s"]
    assert t["agent_cpu_s"] > 0 and t["agent_stop_cpu_s"] > 0
    assert t["agent_cpu_us_per_request"] == pytest.approx(t["agent_cpu_s"] * 1e6 / N)
    # the cgroup counts what wait4 counts (plus the shell that moved it in)
    assert abs(t["agent_life_cpu_s"] - t["agent_wait4_cpu_s"]) < 0.05
    # BPF: statistics on for the scenario, restored after
    assert t["bpf_ns_per_syscall"] > 0 and t["bpf_syscalls_per_request"] >= 2
    assert Path(measure.BPF_STATS_SYSCTL).read_text() == stats_before
    bpf = pd.read_csv(result.out / "bpf_programs.csv")
    assert {"recvfrom", "sendto"} <= set(bpf["syscall"].dropna())

    verdict = json.loads((result.out / "verdict.json").read_text())
    names = {r["budget"]: r for r in verdict["results"]}
    assert {"tracer_cpu", "tracer_process_cpu", "p99_added_latency"} <= set(names)
    # one pair: no noise floor for the differences, so never a pass
    assert names["p99_added_latency"]["status"] == "inconclusive"
    assert verdict["exit_code"] in (1, 3)
    md = (result.out / "summary.md").read_text()
    assert "## Cost (means over runs" in md and "## BPF run time per traced syscall" in md
    assert "| stress | recvfrom |" in md

    assert result.leftovers == {"stress": {"netns": [], "links": [], "pids": []}}
    assert _groups() == groups_before
