"""In-kernel cost of read() on a regular file by a traced process (root):
sock.bpf.c runs for every read of a wanted process and, for an fd it does
not know, walks task->files to see whether it is a socket. BPF run time per
call of tp_enter_read / tp_exit_read while a child makes N 64-byte reads of
a file (lseek between them: not hooked).

    python tests/bench/fileread_cost.py [N] [OTHER_sock.bpf.o]

Prints one JSON line: program -> [runs, ns per run].
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time

from tests.bench.sampling_cost import prog_stats
from tracer import agent, loader

CHILD = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
sys.stdin.readline()
for _ in range(int(sys.argv[2])):
    os.lseek(fd, 0, 0)
    os.read(fd, 64)
print("done", flush=True)
"""


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    obj = sys.argv[2] if len(sys.argv) > 2 else None
    if obj:
        real = loader.object_path
        loader.object_path = lambda name: obj if name == "sock" else real(name)
    lib = loader.libbpf()
    lib.bpf_enable_stats.restype = ctypes.c_int
    stats_fd = lib.bpf_enable_stats(0)  # BPF_STATS_RUN_TIME, on while the fd is open
    if stats_fd < 0:
        sys.exit("bpf_enable_stats failed")
    child = subprocess.Popen([sys.executable, "-c", CHILD, "/etc/hostname", str(n)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    tr = agent.Tracer(agent.Filters(pids=[child.pid]), tls_plaintext=False)
    tr.start()
    try:
        time.sleep(0.2)
        before = prog_stats(tr)
        child.stdin.write("go\n")
        child.stdin.flush()
        child.stdout.readline()
        after = prog_stats(tr)
    finally:
        tr.stop()
        child.kill()
        os.close(stats_fd)
    out = {}
    for p in ("tp_enter_read", "tp_exit_read"):
        ns = after[p][0] - before[p][0]
        runs = after[p][1] - before[p][1]
        out[p] = [runs, round(ns / max(runs, 1), 1)]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
