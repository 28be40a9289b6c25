"""Loader throughput: drain a ring buffer fed by a syscall storm.

Reports sustained events/s through mmap consume + decode, and the counted
drops. The assertion is about accounting (every event delivered or counted as
dropped), never about speed: speed is the benchmark's figure.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kernel.conftest import require
from tracer import events, loader
from tracer.agent import load_sock

N_WRITES = 300_000


def _storm_run(capture_bytes: int, decode: bool):
    obj = loader.BPFObject.open(loader.object_path("sock"))
    try:
        obj.set_rodata(self_tgid=os.getpid(), capture_bytes=capture_bytes)
        load_sock(obj)
        storm = subprocess.Popen([sys.executable, str(Path(__file__).with_name("storm.py")),
                                  str(N_WRITES), "64"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        # only the storm's process: a pid filter set before attach
        obj.map("filter_pids").update(storm.pid, b"\x01")
        obj.map("filter_cfg").update(0, bytes(events.FilterConfigC(1, 0, 0, 0)))
        obj.attach_all()
        rb = obj.ring_buffer("events")
        dec = events.decode
        sink = []
        handler = (lambda b, o, n: sink.append(dec(b, o, n))) if decode else \
            (lambda b, o, n: None)
        delivered = 0
        storm.stdin.write("go\n")
        storm.stdin.flush()
        t0 = time.perf_counter()
        last = t0
        while storm.poll() is None:
            rb.poll(100)
            n = rb.consume(handler)
            if n:
                delivered += n
                last = time.perf_counter()
            sink.clear()
        for prog in list(obj.attached):
            obj.detach(prog)
        delivered += rb.consume(handler)
        elapsed = max(last - t0, 1e-9)
        storm_s = float(storm.stdout.read().split()[1])
        c = obj.map("counters")
        seen = c.percpu_sum(events.Counter.CTR_EVENTS)
        dropped = c.percpu_sum(events.Counter.CTR_DROPPED)
        return {"seen": seen, "delivered": delivered, "dropped": dropped,
                "events_per_s": round(delivered / elapsed), "storm_writes_per_s":
                round(N_WRITES / storm_s)}
    finally:
        obj.close()


@pytest.mark.parametrize("decode", [False, True], ids=["consume", "consume+decode"])
def test_loader_drains_syscall_storm(benchmark, decode):
    require("btf", "ringbuf", "tracepoint_syscalls")
    result = benchmark.pedantic(_storm_run, args=(64, decode), rounds=3, iterations=1)
    benchmark.extra_info.update(result)
    # accounting is exact: nothing vanishes between kernel and agent
    assert result["seen"] == result["delivered"] + result["dropped"]
    assert result["delivered"] + result["dropped"] >= N_WRITES
