"""Pure parts of the saturation scenario: wrk's report, the paired ratio CI,
the alternating order, and the run rows -> result figures; and the peak RSS
of a child, which must be its own (no root)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

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


# A parent holding BALLAST_MB reaps two `sleep` children: one with a bare
# wait4 (ru_maxrss), one with the harness's _wait4.
_CHILD_OF_A_BIG_PARENT = """
import json, os, subprocess, sys
from harness.saturation import _wait4, vm_hwm_mb
ballast = b"x" * ({mb} << 20)  # written, so resident
p = subprocess.Popen(["sleep", "0.2"])
_, _, ru = os.wait4(p.pid, 0)
q = subprocess.Popen(["sleep", "0.2"])
_, peak = _wait4(q, 10.0)
z = subprocess.Popen(["true"])
while open(f"/proc/{{z.pid}}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
    pass
zombie = vm_hwm_mb(z.pid)
z.wait()
print(json.dumps({{"ru_maxrss_mb": ru.ru_maxrss / 1024, "peak_mb": peak, "zombie": zombie}}))
"""
BALLAST_MB = 256


def test_peak_rss_is_the_childs_own_not_the_harness():
    # exec records the RSS of the address space it replaces, which a child of
    # the harness starts in: ru_maxrss showed the harness (112 MB), not the tracer (35)
    out = subprocess.run([sys.executable, "-c", _CHILD_OF_A_BIG_PARENT.format(mb=BALLAST_MB)],
                         cwd=Path(__file__).resolve().parents[2], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    r = json.loads(out)
    assert r["ru_maxrss_mb"] >= BALLAST_MB  # the trap is there
    # sleep maps a few pages of its own: far below the parent's ballast
    assert 0 < r["peak_mb"] < BALLAST_MB / 8
    assert r["zombie"] is None  # its memory is gone: no figure rather than 0
