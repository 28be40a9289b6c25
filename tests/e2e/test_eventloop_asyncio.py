"""stdlib asyncio front tier end to end (issue #21): an asyncio.start_server
front (tests/e2e/servers/asyncio_front.py) calls a Python backend once per
request with asyncio.open_connection, forwarding no header, with 8 requests
in flight on keep-alive front connections. Each backend call must sit under
the front request it was made for: 23 exact parents, 0 wrong, from the task
links of tracer/pyasync.py, run through the real CLI with `--asyncio`.

Ground truth: the front writes one record per call with the id of the
request it was made for. Without the add-on the thread links find none
(one thread, several requests in flight: ambiguous, not linked).
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.tracing import HERE, TracerRun, free_port, server
from tests.kernel.conftest import require
from tracer import pyasync

N = 23
IN_FLIGHT = 8
BACKEND_SLEEP_MS = 30


def _load(port: int) -> None:
    """IN_FLIGHT keep-alive connections, each sending its share in turn."""
    def one(ids: list[int]) -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for i in ids:
                c.request("GET", f"/front/{i}")
                r = c.getresponse()
                r.read()
                assert r.status == 200, r.status
        finally:
            c.close()

    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        list(pool.map(one, [list(range(k, N, IN_FLIGHT)) for k in range(IN_FLIGHT)]))


def _wait_probed(pid: int, timeout: float = 20.0) -> None:
    """Until the step probe is in the front's _asyncio code (an int3 written
    into the mapped page): the add-on attached after the front's exec."""
    deadline = time.monotonic() + timeout
    while True:
        with open(f"/proc/{pid}/maps") as f:
            lines = f.readlines()
        interp = pyasync.interpreter_of(lines, os.readlink(f"/proc/{pid}/exe"))
        off = pyasync.find_symbols(interp.module, ["TaskStepMethWrapper_call"]).offsets[
            "TaskStepMethWrapper_call"]
        addr = None
        for line in lines:
            m = line.split()
            lo, hi = (int(x, 16) for x in m[0].split("-"))
            if len(m) == 6 and m[5] == interp.module and int(m[2], 16) <= off < \
                    int(m[2], 16) + hi - lo:
                addr = lo + off - int(m[2], 16)
        if addr is not None:
            fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
            try:
                if os.pread(fd, 1, addr) == b"\xcc":
                    return
            finally:
                os.close(fd)
        assert time.monotonic() < deadline, "the asyncio probes were not attached"
        time.sleep(0.05)


def _run(tmp_path: Path, mode: str, delay_ms: int, discovery: str, addon: bool,
         python: str = sys.executable):
    fport, bport = free_port(), free_port()
    truth = tmp_path / "groundtruth.jsonl"
    front_argv = [python, str(HERE / "servers" / "asyncio_front.py"), str(fport),
                  str(bport), mode, str(truth), str(delay_ms)]
    tr = TracerRun(tmp_path, "--port", str(fport), "--port", str(bport),
                   *(["--asyncio"] if addon else []))
    backend = server([sys.executable, str(HERE / "servers" / "py_server.py"), str(bport),
                      str(BACKEND_SLEEP_MS)])
    with backend:
        if discovery == "start":
            with server(front_argv) as front, tr:
                _load(fport)
        else:
            with tr, server(front_argv) as front:
                _wait_probed(front.pid)
                _load(fport)
    pid = front.pid
    fsrv = {s["path"]: s for s in tr.by("server", pid)}
    fcli = {s["path"]: s for s in tr.by("client", pid)}
    bsrv = {s["path"]: s for s in tr.spans if s["kind"] == "server" and s["pid"] != pid}
    assert sorted(fsrv) == sorted(f"/front/{i}" for i in range(N))
    assert len(fcli) == len(bsrv) == N
    calls = [json.loads(line) for line in truth.read_text().splitlines()]
    assert len(calls) == N and all(r["status"] == 200 for r in calls)
    right = wrong = 0
    for rec in calls:
        call, req = fcli[rec["call_path"]], fsrv[f"/front/{rec['request_id']}"]
        if call["parent_span_id"] == req["span_id"] and call["trace_id"] == req["trace_id"]:
            right += 1
        elif call["parent_span_id"] is not None:
            wrong += 1
        # the backend's span is the call's child, across the connection
        assert bsrv[rec["call_path"]]["parent_span_id"] == call["span_id"]
    return tr, fcli, right, wrong


DEBIAN = "/usr/bin/python3.11"  # stripped, LTO; symbols from python3.11-dbg (APT_PKGS)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode, delay_ms, discovery, python", [
    ("keepalive", 0, "start", sys.executable),
    ("new", 0, "start", sys.executable),
    ("keepalive", 5, "start", sys.executable),
    ("keepalive", 0, "exec", sys.executable),
    ("keepalive", 0, "start", DEBIAN),
], ids=["pooled-backend", "conn-per-call", "timer-before-call", "found-at-exec",
        "debian-python3.11"])
def test_asyncio_front_calls_sit_under_their_requests(tmp_path: Path, mode: str, delay_ms: int,
                                                      discovery: str, python: str):
    require("btf", "ringbuf", "tracepoint_syscalls", "uprobe")
    if not os.path.exists(python):
        pytest.skip(f"{python} not installed")
    tr, fcli, right, wrong = _run(tmp_path, mode, delay_ms, discovery, addon=True,
                                  python=python)
    s = tr.summary
    assert s["pyasync_unsupported"] == {}, "Debian's python3.11 needs python3.11-dbg"
    assert (right, wrong) == (N, 0)
    assert all(c["correlation"] == {"source": "thread", "confidence": 1.0}
               for c in fcli.values())
    assert s["pyasync_unavailable"] == ""
    mine = [d for d in s["pyasync_interpreters"] if "CPython 3.11" in d
            and (python != DEBIAN or d.startswith("/usr/lib/python3.11/"))]
    assert mine, s["pyasync_interpreters"]
    if python == DEBIAN:  # the stripped module's names come from its debug file
        assert "symbols from /usr/lib/debug/.build-id/" in mine[0] or \
            "/root/usr/lib/debug/.build-id/" in mine[0], mine[0]
    assert (s["pyasync_links"], s["pyasync_records"]) == (N, N)
    assert s["pyasync_link_misses"] == {"no_call": 0, "no_server": 0}
    k = s["pyasync_kernel"]
    assert k["calls"] == N
    # each request's read woke its connection's task, which then served it
    assert k["cb_reads"] >= N and k["woken"] >= N and k["served"] >= N
    # not equal: a step that runs while the probes attach or detach shows one side only
    assert k["hits_step"] > 0 and k["hits_step_ret"] > 0
    for lost in ("ring_full", "read_fault", "no_offsets", "nest_limit", "depth_limit",
                 "call_outside"):
        assert k[lost] == 0, lost
    assert s["events_dropped"] == 0


@pytest.mark.timeout(240)
def test_without_the_addon_no_call_is_linked(tmp_path: Path):
    """The regression reference: today's correlator alone (the plain CLI)."""
    require("btf", "ringbuf", "tracepoint_syscalls", "uprobe")
    tr, _, right, wrong = _run(tmp_path, "keepalive", 0, "start", addon=False)
    assert tr.summary["pyasync_links"] == 0  # off by default: nothing attached, no link
    assert right < N and wrong == 0
