"""Harness smoke test of the `overload` scenario: real servers, the real
tracer under its CPU quota with adaptive sampling, short runs. The report
must carry the exact drop accounting (seen == delivered + dropped), the
sampling fields and the stall metric."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from netns.fixtures import netns_unavailable


@pytest.mark.timeout(150)
def test_overload_smoke(tmp_path: Path):
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    from harness.bench import bench
    from harness.runner import BenchConfig

    cfg = BenchConfig(scenarios=["overload"], duration=4, repeat=1, aa=False, bpf_pass=False,
                      warmup=0.5, out=tmp_path, progress=False)
    result = bench(cfg)

    runs = pd.read_csv(result.out / "runs.csv")
    assert list(runs["label"]) == ["calib", "pair", "pair", "drops"]
    assert list(runs["variant"]) == ["traced", "baseline", "traced", "traced"]
    traced = runs[runs["variant"] == "traced"]
    for _, r in traced.iterrows():
        seen, delivered, dropped = (int(r[k]) for k in (
            "tracer_events_seen", "tracer_events_delivered", "tracer_events_dropped"))
        assert seen > 0 and seen == delivered + dropped
        assert r["events_unaccounted"] == 0
        for k in ("tracer_adaptive_sampling_engaged", "tracer_conns_sampled_out",
                  "tracer_requests_sampled_out", "tracer_max_poll_gap_ms"):
            assert r[k] == r[k] and r[k] >= 0, k  # present (not NaN)
        assert r["tracer_max_poll_gap_ms"] > 0
        if r["label"] != "drops" and r["tracer_events_dropped"] == 0:
            # nothing dropped: every request is a span or a counted skip
            assert r["requests_unaccounted"] == 0
    # the overload pair runs at the calibrated rate, 5x the sustainable one
    pair = runs[runs["label"] == "pair"]
    sustainable = float(pair["sustainable_rps"].iloc[0])
    assert sustainable > 0
    assert pair["offered_rps"].iloc[0] == pytest.approx(5 * sustainable, abs=1)

    md = (result.out / "summary.md").read_text()
    assert "## overload: every run" in md and "seen − deliv − drop" in md
    assert "## overload: figures" in md and "requests sampled out" in md
    assert (result.out / "rss_sampling_overload.png").stat().st_size > 0
    verdict = json.loads((result.out / "verdict.json").read_text())
    names = {r["budget"]: r["status"] for r in verdict["results"]
             if r.get("scenario") == "overload"}
    assert names["events_accounted"] == "pass"
    assert "adaptive_sampling_engaged" in names and "agent_stall_throttled" in names
