"""Cost of the goroutine links (docs/golang.md#cost): a Go front (built
here: net/http, or grpc-go with --grpc) calls a Python backend once per
request, 8 in flight, under `python -m tracer run`; prints the agent's CPU
per front request and per span (schedstat of its threads, load only), the
links, and the BPF run time of the Go programs per probe hit and per front
request (bpf_stats, turned on for the run and restored after).

    python -m workloads.go.bench [--requests 2000] [--stripped] [--grpc] [-- TRACER ARGS...]

Run it with and without `-- --no-go`. Root; not a test (timings are not
pass/fail).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.e2e.tracing import HERE as E2E
from tests.e2e.tracing import free_port, server
from workloads.go import build


def agent_cpu_ns(pid: int) -> int:
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass  # a thread that just ended
    return total


def load(port: int, n: int, in_flight: int = 8) -> None:
    def one(i: int) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/front/{i}", timeout=10) as r:
            r.read()

    with ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(one, range(n)))


def grpc_load(port: int, n: int, in_flight: int = 8) -> None:
    import grpc
    from google.protobuf import wrappers_pb2

    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary("/front.Front/Call",
                              request_serializer=wrappers_pb2.StringValue.SerializeToString,
                              response_deserializer=wrappers_pb2.StringValue.FromString)
        grpc.channel_ready_future(ch).result(timeout=10)
        with ThreadPoolExecutor(in_flight) as pool:
            list(pool.map(lambda i: call(wrappers_pb2.StringValue(value=str(i)), timeout=10),
                          range(n)))


BPF_STATS = "/proc/sys/kernel/bpf_stats_enabled"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--stripped", action="store_true")
    ap.add_argument("--client", default="shared", choices=("shared", "new"))
    ap.add_argument("--grpc", action="store_true", help="the grpc-go front (workloads/go_grpc)")
    ap.add_argument("tracer_args", nargs="*")
    args = ap.parse_args(argv)
    warm = 50
    with open(BPF_STATS) as f:
        stats_before = f.read().strip()
    with tempfile.TemporaryDirectory() as tmp:
        if args.grpc:
            from workloads.go_grpc import build as grpc_build

            exe = grpc_build.build(tmp, stripped=args.stripped)
            extra, drive = [], grpc_load
        else:
            exe = build.build(tmp, "front", stripped=args.stripped)
            extra, drive = ["-client", args.client], load
        out = Path(tmp) / "spans.jsonl"
        fport, bport = free_port(), free_port()
        with server([sys.executable, str(E2E / "servers" / "py_server.py"), str(bport), "0"]), \
                server([str(exe), "-listen", f"127.0.0.1:{fport}", "-backend",
                        f"http://127.0.0.1:{bport}", *extra]):
            with open(BPF_STATS, "w") as f:
                f.write("1")
            tr = subprocess.Popen([sys.executable, "-m", "tracer", "run", "--output", str(out),
                                   "--port", str(fport), "--port", str(bport),
                                   *args.tracer_args], stderr=subprocess.PIPE, text=True)
            try:
                while "tracing" not in tr.stderr.readline():  # past any warning line
                    pass
                drive(fport, warm)  # warm-up: connections, pools
                time.sleep(1.2)
                c0 = agent_cpu_ns(tr.pid)
                drive(fport, args.requests)
                time.sleep(1.2)  # the agent catches up
                c1 = agent_cpu_ns(tr.pid)
            finally:
                tr.send_signal(signal.SIGINT)
                tr.communicate(timeout=60)
                with open(BPF_STATS, "w") as f:
                    f.write(stats_before)
        s = json.loads(Path(str(out) + ".summary.json").read_text())
    spans = s.get("spans_emitted") or 0
    hits = {k: v for k, v in (s.get("go_kernel") or {}).items() if k.startswith("hits")}
    # run time of the Go programs over the whole run (warm-up included), per request
    prog_hits = {"go_serve": "hits_serve", "go_serve_ret": "hits_serve_ret",
                 "go_grpc_serve": "hits_grpc_serve", "go_grpc_serve_ret": "hits_grpc_serve_ret",
                 "go_newproc": "hits_newproc", "go_newproc_ret": "hits_newproc_ret",
                 "go_exit": "hits_goexit", "go_roundtrip": "hits_roundtrip"}
    bpf_ns = sum(ns * hits.get(prog_hits.get(p, ""), 0)
                 for p, ns in (s.get("go_probe_ns") or {}).items())
    print(json.dumps({
        "tracer_args": args.tracer_args, "front": "grpc-go" if args.grpc else "net/http",
        "stripped": args.stripped, "requests": args.requests, "go": build.version(),
        "agent_us_per_front_request": round((c1 - c0) / args.requests / 1000, 1),
        "spans_per_front_request": round(spans / (args.requests + warm), 2),
        "agent_us_per_span": round((c1 - c0) / args.requests / 1000
                                   / max(spans / (args.requests + warm), 1e-9), 1),
        "go_bpf_ns_per_front_request": round(bpf_ns / (args.requests + warm)),
        "go_links": s.get("go_links"), "go_link_misses": s.get("go_link_misses"),
        "go_probe_ns": s.get("go_probe_ns"),
        "go_hits": {k: v for k, v in (s.get("go_kernel") or {}).items() if k.startswith("hits")},
        "events_dropped": s["events_dropped"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
