#!/usr/bin/python3
"""bcc_http: the bcc reference peer. Captures HTTP/1 request lines from
socket syscalls (read/recvfrom received, write/sendto sent), as small as a
bcc tool.

    BCC_KERNEL_SOURCE=DIR /usr/bin/python3 harness/peers/bcc_http.py \
        [--pid PID[,PID...]] [--output FILE] [--print]

Runs under the system interpreter (python3-bpfcc), not the project's venv,
and imports nothing from the project. Behaves like `tracer run` for the
harness: one stderr line containing "tracer: tracing" once every tracepoint
is attached; SIGINT or SIGTERM stops it; FILE gets one request line per line,
FILE.summary.json the counts (kernel counters are exact: ring-buffer
reservations that failed are events_dropped). Exit 2 with one line when it
cannot start.

--pid: only these processes and their descendants at start (tgids);
default every process but this one.
"""

from __future__ import annotations

import argparse
import ctypes as ct
import json
import os
import resource
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE / "bcc_http.bpf.c"
LINE_MAX = 64  # bytes of the request copied per event
CTR_SEEN, CTR_LINES, CTR_RING_FULL = range(3)  # enum in bcc_http.h
TRACEPOINTS = ("sys_enter_read", "sys_exit_read", "sys_enter_recvfrom", "sys_exit_recvfrom",
               "sys_enter_write", "sys_enter_sendto")
PROG = "bcc_http"


class Event(ct.Structure):  # struct event_t in bcc_http.h (layout test: tests/unit/test_peers.py)
    _fields_ = [("tgid", ct.c_uint32), ("tid", ct.c_uint32), ("fd", ct.c_int32),
                ("len", ct.c_uint32), ("dir", ct.c_uint8), ("pad", ct.c_uint8 * 3),
                ("line", ct.c_char * LINE_MAX)]


def fail(msg: str) -> int:
    sys.stderr.write(f"{PROG}: {msg}\n")
    return 2


def descendants(roots: set[int]) -> set[int]:
    """The roots and every process below them now (one /proc scan)."""
    parent = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                # comm may hold spaces and parentheses: ppid follows the last ')'
                parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found = set(roots)
    grew = True
    while grew:
        new = {p for p, pp in parent.items() if pp in found and p not in found}
        found |= new
        grew = bool(new)
    return found


def parse_pids(values: list[str]) -> set[int]:
    pids = set()
    for v in values:
        for tok in v.split(","):
            if tok.strip():
                pids.add(int(tok))
    return pids


def _vm_hwm_mb() -> float | None:
    """Own peak RSS. Not ru_maxrss: exec records the replaced address space,
    so a child of a big harness reports the harness's memory."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("--pid", action="append", default=[], metavar="PID[,PID...]")
    ap.add_argument("--output", help="request lines, one per line; FILE.summary.json counts")
    ap.add_argument("--print", action="store_true", help="print each request line")
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    try:
        roots = parse_pids(a.pid)
    except ValueError as e:
        return fail(f"bad --pid: {e}")
    pids = descendants(roots) if roots else set()
    if roots and not pids & roots:
        return fail(f"no such process: {sorted(roots)}")
    try:
        from bcc import BPF
    except ImportError as e:
        return fail(f"cannot import bcc with {sys.executable} ({e}): "
                    "apt-get install python3-bpfcc")
    ksrc = os.environ.get("BCC_KERNEL_SOURCE") or f"/lib/modules/{os.uname().release}/build"
    if not Path(ksrc, "include/linux/kconfig.h").is_file():
        return fail(f"no kernel headers at {ksrc}: set BCC_KERNEL_SOURCE "
                    "(python -m harness.peers.setup prepares a tree)")
    cflags = [f"-I{HERE}", f"-DFILTER_PIDS={int(bool(pids))}", f"-DSELF_TGID={os.getpid()}",
              f"-DLINE_MAX={LINE_MAX}"]
    try:
        b = BPF(src_file=str(SRC).encode(), cflags=cflags)  # compiles and attaches
    except Exception as e:  # noqa: BLE001 - bcc raises bare Exception for compile/load errors
        first = str(e).strip().strip('"').splitlines()
        return fail(f"compile or load failed: {first[0] if first else repr(e)}")
    compile_s = time.monotonic() - t0
    table = b["pids"]
    for p in pids:
        table[ct.c_uint32(p)] = ct.c_uint8(1)

    out = open(a.output, "wb", buffering=1 << 18) if a.output else None  # noqa: SIM115
    lines = [0, 0]  # received, sent
    delivered = 0

    def on_event(_ctx, data, size):
        nonlocal delivered
        delivered += 1
        if size < ct.sizeof(Event):
            return
        e = ct.cast(data, ct.POINTER(Event)).contents
        lines[e.dir & 1] += 1
        if out or a.print:
            line = e.line.split(b"\r\n", 1)[0]
            if out:
                out.write(line + b"\n")
            if a.print:
                print(f"{e.tgid} {e.fd} {'<' if e.dir == 0 else '>'} "
                      f"{line.decode(errors='replace')}", flush=True)

    b["events"].open_ring_buffer(on_event)
    stop = False

    def on_signal(_sig, _frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    ready_s = time.monotonic() - t0
    scope = f"{len(pids)} processes" if pids else "all processes"
    sys.stderr.write(f"{PROG} tracer: tracing ({len(TRACEPOINTS)} tracepoints, {scope}, "
                     f"compiled in {compile_s:.2f} s)\n")
    sys.stderr.flush()
    started = time.time()
    while not stop:
        b.ring_buffer_poll(100)
    b.ring_buffer_consume()  # what is left in the ring
    counters = b["counters"]
    kern = [int(sum(counters[ct.c_int(i)])) for i in range(3)]
    ru = resource.getrusage(resource.RUSAGE_SELF)
    summary = {
        "peer": PROG, "bcc_version": getattr(sys.modules["bcc"], "__version__", "?"),
        "kernel_source": ksrc, "pids": sorted(pids),
        "events_seen": kern[CTR_SEEN],  # syscalls with data in scope
        "request_lines_kernel": kern[CTR_LINES],
        "events_dropped": kern[CTR_RING_FULL],
        "events_delivered": delivered,
        "request_lines": lines[0] + lines[1],
        "request_lines_received": lines[0], "request_lines_sent": lines[1],
        "compile_s": round(compile_s, 3), "ready_s": round(ready_s, 3),
        "duration_s": round(time.time() - started, 3),
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
        "rss_peak_mb": _vm_hwm_mb(),
    }
    if out:
        out.close()
        Path(f"{a.output}.summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    sys.stderr.write(f"{PROG}: {summary['request_lines']} request lines "
                     f"({lines[0]} received, {lines[1]} sent), {kern[CTR_SEEN]} syscalls seen, "
                     f"{kern[CTR_RING_FULL]} dropped\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
