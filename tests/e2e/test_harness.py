"""Harness smoke test: one scenario, exactly 23 requests per run, a complete
report whose counts match the servers' ground truth, and nothing left behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import psutil
import pytest

from netns.fixtures import netns_unavailable
from netns.topology import NETNS_RUN_DIR

N = 23  # prime: off-by-one and doubling errors cannot hide


def _netns() -> set[str]:
    return set(os.listdir(NETNS_RUN_DIR)) if NETNS_RUN_DIR.exists() else set()


def _links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(text in part for part in (p.info["cmdline"] or [])):
                found.append(p.pid)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.mark.timeout(120)
def test_http_chain_23_requests(tmp_path: Path):
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    from harness.bench import bench
    from harness.runner import BenchConfig

    ns_before, links_before = _netns(), _links()
    cfg = BenchConfig(scenarios=["http-chain"], requests=N, rps=40, duration=10, repeat=1,
                      aa=False, bpf_pass=False, warmup=0.5, out=tmp_path,
                      # A stand-in tracer keeps this a test of the harness alone.
                      tracer_cmd="sleep 600", tracer_ready_timeout=1.0, progress=False)
    result = bench(cfg)

    runs = pd.read_csv(result.out / "runs.csv")
    assert list(runs["variant"]) == ["baseline", "traced"]
    assert list(runs["requests"]) == [N, N]
    assert list(runs["gt_requests"]) == [N, N]
    gt = [json.loads(line) for line in
          (result.out / "raw" / "http-chain" / "ground_truth.jsonl").read_text().splitlines()]
    for tag in runs["tag"]:
        mine = [r for r in gt if r["request_id"].startswith(f"{tag}-")]
        # Each request: frontend server + frontend's call + backend server.
        assert len({r["request_id"] for r in mine if r["service"] == "frontend"
                    and r["kind"] == "server"}) == N
        assert len(mine) == 3 * N
    md = (result.out / "summary.md").read_text()
    assert f"| http-chain | 2 | {2 * N} | {2 * N} |" in md
    for name in ("summary.csv", "report.html", "environment.json", "verdict.json",
                 "latency_cdf_http-chain.png"):
        assert (result.out / name).stat().st_size > 0, name

    # The stand-in emits nothing: detection must read as missing, never as a pass.
    verdict = json.loads((result.out / "verdict.json").read_text())
    recall = [r for r in verdict["results"] if r["budget"] == "detection_recall"]
    assert recall and recall[0]["status"] in ("fail", "missing")
    assert verdict["overall"] == "fail"

    assert result.leftovers == {"http-chain": {"netns": [], "links": [], "pids": []}}
    assert _netns() == ns_before
    assert _links() == links_before
    assert _processes_mentioning(str(tmp_path)) == []
    assert [c.pid for c in psutil.Process().children(recursive=True)] == []
