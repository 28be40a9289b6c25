"""Cost of the goroutine links (docs/golang.md#cost): a Go front (built
here) calls a Python backend once per request, 8 in flight, under
`python -m tracer run`; prints the agent's CPU per front request (schedstat
of its threads, load only), the links and the BPF ns per probe hit.

    python -m workloads.go.bench [--requests 2000] [--stripped] [-- TRACER ARGS...]

Run it with and without `-- --no-go`. BPF run times need
kernel.bpf_stats_enabled=1. Root; not a test (timings are not pass/fail).
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--stripped", action="store_true")
    ap.add_argument("--client", default="shared", choices=("shared", "new"))
    ap.add_argument("tracer_args", nargs="*")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        exe = build.build(tmp, "front", stripped=args.stripped)
        out = Path(tmp) / "spans.jsonl"
        fport, bport = free_port(), free_port()
        with server([sys.executable, str(E2E / "servers" / "py_server.py"), str(bport), "0"]), \
                server([str(exe), "-listen", f"127.0.0.1:{fport}", "-backend",
                        f"http://127.0.0.1:{bport}", "-client", args.client]):
            tr = subprocess.Popen([sys.executable, "-m", "tracer", "run", "--output", str(out),
                                   "--port", str(fport), "--port", str(bport),
                                   *args.tracer_args], stderr=subprocess.PIPE, text=True)
            try:
                tr.stderr.readline()  # tracing
                load(fport, 50)  # warm-up: connections, pools
                time.sleep(1.2)
                c0 = agent_cpu_ns(tr.pid)
                load(fport, args.requests)
                time.sleep(1.2)  # the agent catches up
                c1 = agent_cpu_ns(tr.pid)
            finally:
                tr.send_signal(signal.SIGINT)
                tr.communicate(timeout=60)
        s = json.loads(Path(str(out) + ".summary.json").read_text())
    print(json.dumps({
        "tracer_args": args.tracer_args, "requests": args.requests, "go": build.version(),
        "agent_us_per_front_request": round((c1 - c0) / args.requests / 1000, 1),
        "go_links": s.get("go_links"), "go_link_misses": s.get("go_link_misses"),
        "go_probe_ns": s.get("go_probe_ns"),
        "go_hits": {k: v for k, v in (s.get("go_kernel") or {}).items() if k.startswith("hits")},
        "events_dropped": s["events_dropped"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
