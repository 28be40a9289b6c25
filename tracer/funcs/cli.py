"""`python -m tracer funcs`: argument checks, resolution, run, summary.

Exit codes as in tracer/cli.py: 0 done, 2 bad target/usage/environment (one
line naming the cause), never a traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from .events import FUNCS_STACK_COPY


def add_parser(sub) -> None:
    f = sub.add_parser("funcs", help="trace function calls: arguments, latency, return value, "
                                     "stack (uprobes; kernel:NAME for kernel functions)")
    f.add_argument("targets", nargs="+", metavar="TARGET",
                   help="BINARY:SYMBOL, BINARY:0xADDR, BINARY:GLOB, optionally with an "
                        "argument spec: 'libc.so.6:write(int fd, ptr buf, u64 count)'; "
                        "kernel:NAME for a kernel function")
    f.add_argument("--stack", action="store_true",
                   help="record the user stack at entry (frame pointers, DWARF fallback)")
    f.add_argument("--stack-copy", type=int, default=FUNCS_STACK_COPY, metavar="BYTES",
                   help=f"bytes of stack copied for DWARF unwinding (1024..{FUNCS_STACK_COPY}, "
                        "a multiple of 1024)")
    f.add_argument("--pid", type=int, action="append", default=[],
                   help="only this process (repeatable)")
    f.add_argument("--netns", action="append", default=[], metavar="NAME|INODE",
                   help="only processes in this network namespace (repeatable)")
    f.add_argument("--cgroup", action="append", default=[], metavar="PATH",
                   help="only processes in this cgroup v2 (repeatable)")
    f.add_argument("--duration", type=float, default=None, metavar="S",
                   help="stop after S seconds (default: until SIGINT/SIGTERM)")
    f.add_argument("--output", default="-", metavar="FILE|-",
                   help="JSON lines, one per call (default stdout); FILE.summary.json too")
    f.add_argument("--no-drop-privileges", action="store_true",
                   help="keep every capability after attach (default: keep only what "
                        "--stack needs, set no_new_privs)")
    f.add_argument("-v", "--verbose", action="store_true", help="show libbpf and debug logs")


def _drop_privileges(args, tracer, writer) -> tuple[list[str], dict]:
    """After attach, as `run` does (tracer/privileges.py): reading the ring
    and the maps held needs nothing; --stack symbolizes while tracing, so it
    keeps what reading other processes' maps and binaries needs. Returns the
    lines to show and the summary entry."""
    if args.no_drop_privileges:
        return [], {"dropped": False}
    from tracer import privileges

    writer.open_summary()  # written at exit, when the directory may be out of reach
    counters = tracer.obj.map("funcs_counters")
    needs = privileges.probe_runtime_needs(lambda: counters.percpu_sum(0))
    keep = privileges.runtime_caps(tls_discovery=False, span_stacks=args.stack, kernel=needs)
    res = privileges.drop(keep)
    privileges.check_threads(res)  # none is expected: funcs starts no thread before
    return res.report()


def cmd_funcs(args) -> int:
    from tracer.cli import EXIT_OK, UsageError, resolve_cgroup, resolve_netns

    kernel = [t for t in args.targets if t.startswith("kernel:")]
    user = [t for t in args.targets if not t.startswith("kernel:")]
    if kernel and user:
        raise UsageError("trace user-space and kernel: targets in separate runs")
    if kernel:
        try:
            from . import kernel as kmod
        except ImportError:
            raise UsageError("kernel function tracing unavailable") from None
        return kmod.run(kernel, args)
    if args.duration is not None and args.duration <= 0:
        raise UsageError("--duration must be positive")
    if not 1024 <= args.stack_copy <= FUNCS_STACK_COPY or args.stack_copy % 1024:
        raise UsageError(f"--stack-copy must be a multiple of 1024 within "
                         f"1024..{FUNCS_STACK_COPY}")
    for pid in args.pid:
        if pid <= 0:
            raise UsageError(f"--pid {pid}: not a process id")
        if not os.path.exists(f"/proc/{pid}"):
            raise UsageError(f"--pid {pid}: no such process")
    netns = [resolve_netns(n) for n in args.netns]
    cgroups = [resolve_cgroup(c) for c in args.cgroup]

    from tracer import loader, probe

    from .output import FuncsWriter
    from .targets import TargetError, parse_target, resolve
    from .tracer import FuncsTracer

    try:
        probes = resolve([parse_target(t) for t in user], args.pid)
    except TargetError as e:
        raise UsageError(str(e)) from None
    try:
        probe.require_environment()
    except probe.EnvironmentProblem as e:
        raise UsageError(str(e)) from None
    try:
        writer = FuncsWriter(args.output)
    except OSError as e:
        raise UsageError(f"cannot write {args.output}: {e.strerror}") from None

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    tracer = FuncsTracer(probes, writer, pids=args.pid, netns=netns, cgroups=cgroups,
                         stack=args.stack, stack_copy_bytes=args.stack_copy)
    try:
        tracer.start()
    except loader.LoaderError as e:
        writer.close()
        if args.verbose and e.log:
            sys.stderr.write(e.log)
        raise UsageError(f"{e.stage} failed: {e}" + ("" if args.verbose or not e.log
                                                     else " (run with -v for the log)")) from None
    functions = len({p.target for p in probes})
    shared = sorted({p.module for p in probes if ".so" in os.path.basename(p.module)})
    if shared and not args.pid:
        # a uretprobe rewrites return addresses in every process mapping the
        # library; stack-switching programs (greenlets) can be killed (SIGILL)
        sys.stderr.write(f"tracer: warning: {', '.join(shared)} traced in every process that "
                         "maps it; limit it with --pid\n")
    drop_lines, privileges_info = _drop_privileges(args, tracer, writer)
    # tests and scripts wait for this line
    sys.stderr.write(f"tracer: tracing {functions} functions ({tracer.attached} probes "
                     "attached)\n")
    for line in drop_lines:
        sys.stderr.write(f"tracer: {line}\n")
    sys.stderr.flush()
    try:
        tracer.run(duration=args.duration, stop=stop, on_tick=writer.flush)
    finally:
        counters = tracer.stop()
        counters["privileges"] = privileges_info
        writer.close(counters)
    return EXIT_OK
