"""The real CLI on nginx (root): agent CPU and BPF run time per span at fixed
rates, and nginx's saturation throughput traced against untraced.
tests/bench/nginx_cost.py does the work; its figures land in the benchmark
JSON as extra_info. Timings are reported, not asserted; what is asserted is
the exact accounting."""

from __future__ import annotations

import shutil

import pytest

from tests.bench import nginx_cost
from tests.kernel.conftest import require


@pytest.mark.bench
def test_nginx_agent_cost_and_saturation(benchmark):
    require("btf", "ringbuf", "tracepoint_syscalls")
    for tool in ("nginx", "wrk", "gcc", "curl"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed (make bench-micro installs it)")
    cores = ("compiled", "pure") if benchmark.enabled else ("compiled",)
    r = benchmark.pedantic(nginx_cost.run, args=([1000, 10000, 0], 5.0, 8.0, cores),
                           rounds=1, iterations=1)
    benchmark.extra_info.update(r)
    for core in cores:
        c = r["cores"][core]
        assert c["core"] == core
        # every request sent is one span (and the 200 of the warm-up), unless
        # events were dropped: then every drop is counted
        assert all(p["errors"] == 0 for p in c["phases"])
        assert c["events_seen"] == c["events_delivered"] + c["events_dropped"]
        if c["events_dropped"] == 0:
            assert c["spans_emitted"] == c["requests_sent"] + 200
        sat = c["saturation"]
        assert sat["events_seen"] == sat["events_delivered"] + sat["events_dropped"]
