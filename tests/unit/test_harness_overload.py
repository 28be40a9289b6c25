"""Pure parts of harness/overload.py: calibration arithmetic, exact
accounting, RSS trend, and the figures the overload/soak budgets judge."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from harness import overload


def test_sustainable_rate_is_quota_over_cpu_per_request():
    calib = {"tracer_cpu_cores": 0.01, "achieved_rps": 200.0}
    assert overload.sustainable_rps(calib, 0.02) == pytest.approx(400.0)
    assert overload.sustainable_rps({"tracer_cpu_cores": math.nan}, 0.02) == overload.CALIB_RPS


def test_requests_unaccounted_counts_every_skip():
    row = {"requests": 23, "tracer_spans_emitted": 11.0, "tracer_requests_sampled_out": 7.0,
           "tracer_spans_filtered": 2.0, "tracer_spans_sampled_out": 1.0,
           "tracer_incomplete_requests": 1.0}
    assert overload.requests_unaccounted(row) == 1
    assert math.isnan(overload.requests_unaccounted({"requests": 23}))


def test_tracer_summary_exact_identity(tmp_path):
    from harness.runner import tracer_summary

    s = {"events_seen": 23, "events_delivered": 20, "events_dropped": 3, "max_poll_gap_ms": 12.5,
         "adaptive_sampling_engaged": 2, "adaptive_transitions": [[1.0, 0.5]]}
    out_path = tmp_path / "spans.jsonl"
    (tmp_path / "spans.jsonl.summary.json").write_text(json.dumps(s))
    out = tracer_summary(out_path, 2.0)
    assert out["events_unaccounted"] == 0 and out["events_per_s"] == 11.5
    assert out["tracer_max_poll_gap_ms"] == 12.5 and out["tracer_adaptive_sampling_engaged"] == 2
    assert json.loads(out["tracer_adaptive_transitions"]) == [[1.0, 0.5]]
    (tmp_path / "spans.jsonl.summary.json").write_text(json.dumps({**s, "events_delivered": 19}))
    assert tracer_summary(out_path, 2.0)["events_unaccounted"] == 1


def test_rss_trend_slope_and_range():
    t0 = 1000.0
    g = pd.DataFrame({"wall": [t0 + 30 * i for i in range(21)],  # 10 minutes
                      "tracer_rss": [40e6 + 0.5e6 * i for i in range(21)]})  # +1 MB/min
    tr = overload.rss_trend(g, t0, t0 + 600, 60.0)
    assert tr["rss_slope_mb_per_min"] == pytest.approx(1.0)
    assert tr["rss_range_mb"] == pytest.approx(9.0)  # from minute 1 on
    assert tr["rss_peak_mb"] == pytest.approx(50.0)


def test_add_figures_soak():
    runs = pd.DataFrame([{"scenario": "soak", "label": "soak", "variant": "traced", "tag": "sk1",
                          "load_start": 0.0, "load_end": 600.0, "requests": 23,
                          "tracer_spans_emitted": 20, "tracer_events_dropped": 2,
                          "requests_unaccounted": 3, "events_unaccounted": 0,
                          "tracer_max_poll_gap_ms": 90.0}])
    ts = pd.DataFrame({"tag": ["sk1"] * 21, "wall": [30.0 * i for i in range(21)],
                       "tracer_rss": [40e6] * 21})
    figs = {"soak": {}}
    overload.add_figures(figs, runs, ts)
    f = figs["soak"]
    assert f["events_unaccounted"] == 0 and f["requests_unaccounted"] == 3
    assert f["requests_unexplained"] == 1  # 3 missing, 2 explained by counted drops
    assert f["max_poll_gap_ms"] == 90.0 and f["rss_slope_mb_per_min"] == pytest.approx(0.0)
