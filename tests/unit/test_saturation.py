"""Pure parts of the saturation scenario: wrk's report, the paired ratio CI,
the alternating order, and the run rows -> result figures."""

from __future__ import annotations

import math

import pytest

from harness.saturation import SaturationError, group_order, parse_wrk, ratio_ci, summarize, table

WRK_OUT = """Running 1s test @ http://127.0.0.1:18998/
  2 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    10.78ms    5.09ms  29.58ms   71.39%
    Req/Sec   185.95     45.62   282.00     60.00%
  372 requests in 1.01s, 3.96MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:    369.22
Transfer/sec:      3.93MB
"""


def test_parse_wrk():
    assert parse_wrk(WRK_OUT) == {"requests": 372, "seconds": 1.01, "rps": 369.22, "errors": 7}
    assert parse_wrk("  90 requests in 500.00ms, 1MB read\nRequests/sec: 180.00\n") == {
        "requests": 90, "seconds": 0.5, "rps": 180.0, "errors": 0}


def test_parse_wrk_without_a_count_is_one_line():
    with pytest.raises(SaturationError) as e:
        parse_wrk("unable to connect to 198.18.1.2:8080 Connection refused")
    assert str(e.value) == ("no request count in wrk's output: "
                            "'unable to connect to 198.18.1.2:8080 Connection refused'")


def test_ratio_ci():
    assert ratio_ci([50.0], [100.0]) is None  # one pair: no interval
    assert ratio_ci([50.0, 60.0], [100.0, 120.0]) == (0.5, 0.5)  # no spread
    # ratios 0.4 and 0.6: mean log -0.71355, sd 0.28673, t(0.975, 1) = 12.7062
    lo, hi = ratio_ci([40.0, 60.0], [100.0, 100.0])
    assert math.isclose(lo, 0.03725, rel_tol=2e-3) and math.isclose(hi, 6.4406, rel_tol=2e-3)
    # three groups narrow it: t(0.975, 2) = 4.3027
    lo, hi = ratio_ci([45.0, 50.0, 55.0], [100.0, 100.0, 100.0])
    assert lo < 0.5 < hi and math.isclose(math.sqrt(lo * hi), 0.4983, rel_tol=2e-4)


def test_group_order_alternates():
    v = ["untraced", "tracer", "bcc"]
    assert [group_order(v, g) for g in range(3)] == [
        v, ["bcc", "tracer", "untraced"], v]


def _row(g, variant, rps, requests, **kw):
    return {"group": g, "variant": variant, "rps": rps, "requests": requests, **kw}


def test_summarize_figures():
    traced = {"cpu_s": 0.5, "rss_mb": 100.0, "ready_s": 0.3, "drops": 2, "events_seen": 1000}
    runs = [
        _row(0, "untraced", 100.0, 1000), _row(1, "untraced", 120.0, 1200),
        _row(2, "untraced", 110.0, 1100),
        _row(0, "tracer", 50.0, 500, captured=500, **traced),
        _row(1, "tracer", 66.0, 660, captured=659, **{**traced, "rss_mb": 120.0, "drops": 3}),
        _row(2, "tracer", 55.0, 550, captured=550, **{**traced, "ready_s": 0.5}),
    ]
    r = summarize(runs, {"bcc": "bcc not importable by /x (apt-get install python3-bpfcc)"})
    assert r["untraced_rps"] == 110 and r["traced_rps"] == 55 and r["ratio"] == 0.5
    assert r["ratio_ci"][0] < 0.5 < r["ratio_ci"][1]
    assert (r["drops"], r["events_seen"]) == (7, 3000)
    t = r["tracer"]
    assert t["cpu_us_per_request"] == round(1.5e6 / 1710, 2)  # 877.19
    assert t["recall"] == round(1709 / 1710, 4)
    assert (t["rss_mb"], t["ready_s"], t["runs"]) == (120.0, 0.3, 3)
    assert r["peers"] == {"bcc": {"skipped": "bcc not importable by /x "
                                             "(apt-get install python3-bpfcc)"}}
    text = table(r)
    assert "| saturation ratio | 0.500 | skipped |" in text
    assert text.endswith("bcc skipped: bcc not importable by /x (apt-get install python3-bpfcc)")


def test_summarize_pairs_only_within_a_group():
    # a peer run without its untraced partner (the group was cut short) is left out
    traced = {"cpu_s": 1.0, "rss_mb": 1.0, "ready_s": 1.0, "drops": 0, "events_seen": 1,
              "captured": 10}
    runs = [_row(0, "untraced", 100.0, 10), _row(0, "bcc", 40.0, 10, **traced),
            _row(1, "bcc", 90.0, 10, **traced)]
    p = summarize(runs, {})["peers"]["bcc"]
    assert (p["rps"], p["ratio"], p["runs"], p["ratio_ci"]) == (40, 0.4, 1, None)
