"""In-kernel cost of adaptive sampling (root): BPF run time per request of
the sock programs (BPF_ENABLE_STATS, bpf_prog_info run_time_ns/run_cnt)
while a child makes CONNS new loopback connections with REQS HTTP/1
exchanges each, the agent draining the ring as in a real run.

    python tests/bench/sampling_cost.py [--object OLD_sock.bpf.o] [--drop 0..65536]
                                        [--conns N] [--reqs N]

--object: another build of sock.bpf.o (e.g. from before adaptive sampling),
--drop: new connections sampled out per 65536 (65536: all, 0: none),
--comm: add the in-kernel process-name scope ([scope] processes).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import socket
import subprocess
import sys
import time

from tracer import agent, loader
from tracer.export.prometheus import PROG_INFO_LEN, PROG_INFO_RUN_CNT, PROG_INFO_RUN_TIME_NS

CHILD = r"""
import socket, sys, threading
port, conns, reqs = map(int, sys.argv[1:4])
REQ = b"GET /cost HTTP/1.1\r\nHost: b\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(128)
def serve():
    while True:
        c, _ = srv.accept()
        while c.recv(4096):
            c.send(RESP)
        c.close()
threading.Thread(target=serve, daemon=True).start()
sys.stdin.readline()
for _ in range(conns):
    c = socket.create_connection(("127.0.0.1", port))
    for _ in range(reqs):
        c.send(REQ)
        c.recv(4096)
    c.close()
print("done", flush=True)
"""


def prog_stats(tr: agent.Tracer) -> dict[str, tuple[int, int]]:
    lib = loader.libbpf()
    buf = ctypes.create_string_buffer(PROG_INFO_LEN)
    out = {}
    for prog in tr.attached:
        ctypes.memset(buf, 0, PROG_INFO_LEN)
        n = ctypes.c_uint32(PROG_INFO_LEN)
        if lib.bpf_obj_get_info_by_fd(tr.obj.prog_fd(prog), buf, ctypes.byref(n)) == 0:
            raw = buf.raw
            out[prog] = (int.from_bytes(raw[PROG_INFO_RUN_TIME_NS:PROG_INFO_RUN_TIME_NS + 8],
                                        "little"),
                         int.from_bytes(raw[PROG_INFO_RUN_CNT:PROG_INFO_RUN_CNT + 8], "little"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--object", default=None)
    ap.add_argument("--drop", type=int, default=0)
    ap.add_argument("--conns", type=int, default=500)
    ap.add_argument("--reqs", type=int, default=10)
    ap.add_argument("--comm", action="store_true",
                    help="also scope by process name in the kernel (the child's: all pass)")
    a = ap.parse_args()
    if a.object:
        real = loader.object_path
        loader.object_path = lambda name: a.object if name == "sock" else real(name)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    lib = loader.libbpf()
    lib.bpf_enable_stats.restype = ctypes.c_int
    stats_fd = lib.bpf_enable_stats(0)  # BPF_STATS_RUN_TIME, on while the fd is open
    if stats_fd < 0:
        sys.exit("bpf_enable_stats failed")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(port), str(a.conns), str(a.reqs)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    comms = [open(f"/proc/{child.pid}/comm").read().strip()] if a.comm else []
    tr = agent.Tracer(agent.Filters(ports=[port], comms=comms), tls_plaintext=False)
    tr.start()
    try:
        if a.drop:
            tr.obj.map("sampling").update(0, a.drop)
        time.sleep(0.2)
        before = prog_stats(tr)
        child.stdin.write("go\n")
        child.stdin.flush()
        t0 = time.perf_counter()
        while child.poll() is None or tr.rb.available():
            tr.poll_once(50)
        wall = time.perf_counter() - t0
        after = prog_stats(tr)
    finally:
        summary = tr.stop()
        child.kill()
        os.close(stats_fd)
    ns = sum(after[p][0] - before.get(p, (0, 0))[0] for p in after)
    runs = sum(after[p][1] - before.get(p, (0, 0))[1] for p in after)
    total = a.conns * a.reqs
    print(json.dumps({
        "object": a.object or "current", "drop": a.drop, "comm": a.comm, "requests": total,
        "bpf_ns_total": ns, "bpf_runs": runs, "bpf_ns_per_run": round(ns / max(runs, 1), 1),
        "bpf_ns_per_request": round(ns / total, 1), "wall_s": round(wall, 3),
        "spans": summary["spans_emitted"], "events": summary["events_seen"],
        "conns_sampled_out": summary["conns_sampled_out"],
        "requests_sampled_out": summary["requests_sampled_out"],
    }))


if __name__ == "__main__":
    main()
