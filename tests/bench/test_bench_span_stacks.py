"""Cost of `tracer run --span-stacks` in the kernel: ns per stack taken.

The C client of tests/e2e/test_span_stacks.py sends N keep-alive requests to
the Python test server with the tracer running, with and without
--span-stacks. The client writes each request with writev(2) and the server
reads with recvfrom(2), syscalls nearly nothing else on a test machine makes,
so with kernel.bpf_stats_enabled the run time per run of tp_exit_writev
(client side: one stack per request) and tp_exit_recvfrom (server side) on vs
off is the cost of taking the stack (bpf_get_stackid, frame-pointer walk, hash
and compare in the stack map). The assertion is about accounting only: every
request became two spans, each with a stack when asked.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

from harness.measure import bpf_delta, bpf_progs, bpf_stats_enabled, owned_progs
from tests.cprogs import build
from tests.e2e.tracing import TracerRun, free_port, py_server
from tests.kernel.conftest import require

N = 1000
PROGS = ("tp_exit_writev", "tp_exit_recvfrom")


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    try:
        return build.build("fp", tmp_path_factory.mktemp("cprogs"), source="span_client.c")
    except build.BuildError as e:
        pytest.skip(str(e))


def _run(tmp_path: Path, client: Path, stacks: bool) -> dict:
    tmp_path.mkdir()
    port = free_port()
    flags = ["--port", str(port)] + (["--span-stacks"] if stacks else [])
    with py_server(port, 0), TracerRun(tmp_path, *flags) as tr:
        before = bpf_progs()
        ours = owned_progs(before, set(), {tr.proc.pid})
        subprocess.run([str(client), str(port), str(N)], check=True, timeout=120)
        after = bpf_progs()
        delta = bpf_delta({i: before[i] for i in ours}, {i: after[i] for i in ours if i in after})
    res = {"stacks": stacks, "spans": len(tr.spans),
           "with_stack": sum("stack" in s for s in tr.spans)}
    for d in delta:
        if d["name"] in PROGS:
            res[d["name"]] = {"runs": d["run_cnt"], "ns_per_run": round(d["ns_per_run"] or 0, 1)}
    return res


@pytest.mark.bench
@pytest.mark.timeout(300)
def test_span_stacks_bpf_cost(benchmark, client, tmp_path):
    require("btf", "ringbuf", "tracepoint_syscalls", "bpf_stats")
    runs = []
    with bpf_stats_enabled():
        def once():
            for stacks in (False, True):
                runs.append(_run(tmp_path / str(len(runs)), client, stacks))
        benchmark.pedantic(once, rounds=1, iterations=1)
    info = {"requests": N, "cpus": os.cpu_count(), "runs": runs}
    for p in PROGS:
        off = [r[p]["ns_per_run"] for r in runs if not r["stacks"] and p in r]
        on = [r[p]["ns_per_run"] for r in runs if r["stacks"] and p in r]
        if off and on:
            info[f"{p}_added_ns"] = round(min(on) - min(off), 1)
    benchmark.extra_info.update(info)
    print(json.dumps(info))
    for r in runs:
        assert r["spans"] == 2 * N, r
        assert r["with_stack"] == (2 * N if r["stacks"] else 0), r
