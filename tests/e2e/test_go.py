"""Go front tier end to end (issue #20): a net/http front (workloads/go/front,
built here with the system toolchain) calls a Python backend once per
request through one shared http.Client, forwarding no header, with 8
requests in flight. Each backend call must sit under the front request it
was made for: 23 exact parents, 0 wrong, from the goroutine links of
tracer/golang.py, for a stripped and an unstripped executable.

A grpc-go front (workloads/go_grpc, built from Debian's grpc-go) does the
same per RPC: 23 RPCs, 8 in flight on one HTTP/2 connection, each call under
its RPC's server span (joined by connection and stream id).

Ground truth: the front writes one record per call with the id of the
request it was made for (workloads/groundtruth.py's format); the tracer's
spans must agree with every record. Without the add-on (`--no-go`) the
thread links find about 5 of the 23 (the Go scheduler moves goroutines
between threads, and a pooled connection is written by its writeLoop).
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.tracing import HERE, TracerRun, free_port, server
from tests.kernel.conftest import require
from tracer import golang
from tracer.symbols.rawelf import RawElf, file_reader
from workloads.groundtruth import read_log

N = 23
IN_FLIGHT = 8
BACKEND_SLEEP_MS = 30


@pytest.fixture(scope="module")
def fronts(tmp_path_factory):
    from workloads.go import build

    try:
        version = build.version()
    except build.GoMissing as e:
        pytest.skip(str(e))
    out = tmp_path_factory.mktemp("gofront")
    return {"version": version, "plain": build.build(out, "front"),
            "stripped": build.build(out, "front", stripped=True)}


def _wait_probed(pid: int, exe: Path, timeout: float = 20.0) -> None:
    """Until the last probe attached (roundTrip's entry) is in the process's
    code: a uprobe is an int3 written into the mapped page."""
    with open(exe, "rb") as f:
        elf = RawElf(file_reader(f.fileno()))
        lo, _ = golang.pclntab_functions(elf, [golang.ROUNDTRIP])[golang.ROUNDTRIP]
        off = elf.vaddr_to_offset(lo)
    with open(f"/proc/{pid}/maps") as f:
        spans = [line.split() for line in f]
    addr = next(int(m[0].split("-")[0], 16) + off - int(m[2], 16) for m in spans
                if len(m) == 6 and m[5] == str(exe) and "x" in m[1]
                and int(m[2], 16) <= off < int(m[2], 16) + int(m[0].split("-")[1], 16)
                - int(m[0].split("-")[0], 16))
    deadline = time.monotonic() + timeout
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    try:
        while os.pread(fd, 1, addr) != b"\xcc":
            assert time.monotonic() < deadline, "the Go probes were not attached"
            time.sleep(0.05)
    finally:
        os.close(fd)


def _load(port: int) -> None:
    def one(i: int) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/front/{i}", timeout=10) as r:
            assert r.status == 200, r.status
            r.read()

    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        list(pool.map(one, range(N)))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("binary, client, discovery", [
    ("plain", "shared", "start"),
    ("stripped", "shared", "start"),
    ("stripped", "new", "start"),
    ("plain", "shared", "exec"),
], ids=["unstripped-keepalive", "stripped-keepalive", "stripped-conn-per-call",
        "unstripped-keepalive-found-at-exec"])
def test_go_front_calls_sit_under_their_requests(fronts, tmp_path: Path, binary: str,
                                                 client: str, discovery: str):
    require("btf", "ringbuf", "tracepoint_syscalls", "uprobe")
    fport, bport = free_port(), free_port()
    truth = tmp_path / "groundtruth.jsonl"
    exe = fronts[binary]
    front_argv = [str(exe), "-listen", f"127.0.0.1:{fport}", "-backend",
                  f"http://127.0.0.1:{bport}", "-client", client, "-groundtruth", str(truth)]
    args = ["--port", str(fport), "--port", str(bport)]
    backend = server([sys.executable, str(HERE / "servers" / "py_server.py"), str(bport),
                      str(BACKEND_SLEEP_MS)])
    with backend:
        if discovery == "start":
            with server(front_argv) as front, TracerRun(tmp_path, *args) as tr:
                _load(fport)
        else:
            with TracerRun(tmp_path, *args) as tr, server(front_argv) as front:
                _wait_probed(front.pid, exe)
                _load(fport)
    pid = front.pid
    fsrv = {s["path"]: s for s in tr.by("server", pid)}
    fcli = {s["path"]: s for s in tr.by("client", pid)}
    bsrv = {s["path"]: s for s in tr.spans if s["kind"] == "server" and s["pid"] != pid}
    assert sorted(fsrv) == sorted(f"/front/{i}" for i in range(N))
    assert len(fcli) == len(bsrv) == N
    calls = [r for r in read_log(truth) if r["kind"] == "client"]
    assert len(calls) == N and all(r["status"] == 200 for r in calls)
    right = wrong = 0
    for rec in calls:
        call, req = fcli[rec["path"]], fsrv[f"/front/{rec['request_id']}"]
        if call["parent_span_id"] == req["span_id"] and call["trace_id"] == req["trace_id"]:
            right += 1
        elif call["parent_span_id"] is not None:
            wrong += 1
        # the backend's span is the call's child, across the connection
        assert bsrv[rec["path"]]["parent_span_id"] == call["span_id"]
    assert (right, wrong) == (N, 0)  # --no-go: about (5, 0), sometimes a wrong one
    assert all(c["correlation"] == {"source": "thread", "confidence": 1.0}
               for c in fcli.values())

    s = tr.summary
    kind = "dwarf" if binary == "plain" else "table"
    assert s["go_binaries"] == [f"{exe} ({fronts['version']}, offsets from {kind})"]
    assert s["go_unsupported"] == {} and s["go_unavailable"] == ""
    assert (s["go_links"], s["go_records"]) == (N, N)
    assert s["go_link_misses"] == {"no_call": 0, "no_server": 0, "stale": 0}
    k = s["go_kernel"]
    assert (k["hits_serve"], k["hits_serve_ret"], k["hits_roundtrip"], k["calls"]) == (N,) * 4
    assert k["hits_newproc"] == k["hits_newproc_ret"] >= N  # a goroutine per connection
    for lost in ("call_outside", "call_no_conn", "call_tls", "serve_no_conn", "serve_tls",
                 "ring_full", "read_fault", "no_offsets", "depth_limit"):
        assert k[lost] == 0, lost
    assert s["events_dropped"] == 0


# -- a grpc-go front -------------------------------------------------------------------
GRPC_METHOD = "/front.Front/Call"


@pytest.fixture(scope="module")
def grpc_fronts(tmp_path_factory):
    from workloads.go_grpc import build

    try:
        version = build.go_version()
        out = tmp_path_factory.mktemp("gogrpc")
        return {"version": version, "grpc": build.requirements()[golang.GRPC_MODULE],
                "plain": build.build(out), "stripped": build.build(out, stripped=True)}
    except build.GoMissing as e:
        pytest.skip(str(e))


def _grpc_load(port: int) -> None:
    """N RPCs, IN_FLIGHT at a time, on one channel (one HTTP/2 connection:
    the RPCs are its streams); each names its id in the message and in an
    x-request-id header (which the tracer's span shows)."""
    import grpc
    from google.protobuf import wrappers_pb2

    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary(GRPC_METHOD,
                              request_serializer=wrappers_pb2.StringValue.SerializeToString,
                              response_deserializer=wrappers_pb2.StringValue.FromString)
        grpc.channel_ready_future(ch).result(timeout=10)

        def one(i: int) -> None:
            reply = call(wrappers_pb2.StringValue(value=str(i)), timeout=10,
                         metadata=(("x-request-id", str(i)),))
            assert reply.value == f"front {i}: backend 200", reply.value

        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            list(pool.map(one, range(N)))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("binary", ["plain", "stripped"], ids=["unstripped", "stripped"])
def test_grpc_go_front_calls_sit_under_their_rpcs(grpc_fronts, tmp_path: Path, binary: str):
    """A grpc-go server front: the RPCs are streams of one HTTP/2 connection,
    each handled on its own goroutine (grpc (*Server).handleStream); each
    makes one HTTP call through a shared keep-alive client. Every call must
    sit under its own RPC's server span (connection and stream id), 0 wrong."""
    require("btf", "ringbuf", "tracepoint_syscalls", "uprobe")
    fport, bport = free_port(), free_port()
    truth = tmp_path / "groundtruth.jsonl"
    exe = grpc_fronts[binary]
    backend = server([sys.executable, str(HERE / "servers" / "py_server.py"), str(bport),
                      str(BACKEND_SLEEP_MS)])
    with backend, server([str(exe), "-listen", f"127.0.0.1:{fport}", "-backend",
                          f"http://127.0.0.1:{bport}", "-groundtruth", str(truth)]) as front, \
            TracerRun(tmp_path, "--port", str(fport), "--port", str(bport)) as tr:
        _grpc_load(fport)
    pid = front.pid
    rpcs = {s["attributes"].get("http.request.header.x-request-id"): s
            for s in tr.by("server", pid)}
    fcli = {s["path"]: s for s in tr.by("client", pid)}
    bsrv = {s["path"]: s for s in tr.spans if s["kind"] == "server" and s["pid"] != pid}
    assert sorted(rpcs) == sorted(str(i) for i in range(N))
    assert {(s["protocol"], s["path"]) for s in rpcs.values()} == {("grpc", GRPC_METHOD)}
    assert len(fcli) == len(bsrv) == N
    calls = [r for r in read_log(truth) if r["kind"] == "client"]
    assert len(calls) == N and all(r["status"] == 200 for r in calls)
    right = wrong = 0
    for rec in calls:
        call, rpc = fcli[rec["path"]], rpcs[rec["request_id"]]
        if call["parent_span_id"] == rpc["span_id"] and call["trace_id"] == rpc["trace_id"]:
            right += 1
        elif call["parent_span_id"] is not None:
            wrong += 1
        assert bsrv[rec["path"]]["parent_span_id"] == call["span_id"]
    assert (right, wrong) == (N, 0)  # --no-go: none right (the threads serve many RPCs)
    assert all(c["correlation"] == {"source": "thread", "confidence": 1.0}
               for c in fcli.values())

    s = tr.summary
    kind = "dwarf" if binary == "plain" else "table"
    assert s["go_binaries"] == [f"{exe} ({grpc_fronts['version']}, grpc-go "
                                f"{grpc_fronts['grpc']}, offsets from {kind})"]
    assert s["go_unsupported"] == {} and s["go_unavailable"] == ""
    assert (s["go_links"], s["go_records"]) == (N, N)
    assert s["go_link_misses"] == {"no_call": 0, "no_server": 0, "stale": 0}
    k = s["go_kernel"]
    assert (k["hits_grpc_serve"], k["hits_grpc_serve_ret"], k["hits_roundtrip"],
            k["calls"]) == (N,) * 4
    assert (k["hits_serve"], k["hits_serve_ret"]) == (0, 0)  # no net/http server linked
    for lost in ("call_outside", "call_no_conn", "call_tls", "serve_no_conn", "serve_tls",
                 "ring_full", "read_fault", "no_offsets", "depth_limit"):
        assert k[lost] == 0, lost
    assert s["events_dropped"] == 0
