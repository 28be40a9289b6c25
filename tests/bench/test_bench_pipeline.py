"""End-to-end agent throughput at saturation: kernel → ring → decode →
reassembly → HTTP/1 parse → spans, with the drop count."""

import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.kernel.conftest import require
from tracer.agent import Filters, Tracer

N_EXCHANGES = 40_000


def _run():
    spans = []
    storm = subprocess.Popen([sys.executable, str(Path(__file__).with_name("http_storm.py")),
                              str(N_EXCHANGES)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    tracer = Tracer(Filters(pids=[storm.pid]), sink=spans.append)
    tracer.start()
    stop = threading.Event()
    try:
        t = threading.Thread(target=tracer.run, kwargs={"stop": stop})
        t.start()
        storm.stdin.write("go\n")
        storm.stdin.flush()
        t0 = time.perf_counter()
        storm.wait()
        stop.set()
        t.join()
        elapsed = time.perf_counter() - t0
    finally:
        summary = tracer.stop()
    storm_s = float(storm.stdout.read().split()[1])
    return {"spans": len(spans), "spans_per_s": round(len(spans) / elapsed),
            "events_per_s": round(summary["events_delivered"] / elapsed),
            "exchanges_per_s_traced": round(N_EXCHANGES / storm_s),
            "seen": summary["events_seen"], "delivered": summary["events_delivered"],
            "dropped": summary["events_dropped"]}


def test_pipeline_spans_per_second_at_saturation(benchmark):
    require("btf", "ringbuf", "tracepoint_syscalls")
    r = benchmark.pedantic(_run, rounds=2, iterations=1)
    benchmark.extra_info.update(r)
    assert r["seen"] == r["delivered"] + r["dropped"]
    # with no drops, every exchange is exactly two spans (client and server)
    if r["dropped"] == 0:
        assert r["spans"] == 2 * N_EXCHANGES
