"""`python -m tracer funcs`: argument checks, resolution, run, summary.

Exit codes as in tracer/errors.py: 0 done, 2 bad target/usage/environment
(UsageError: one line naming the cause, printed by tracer/cli.py's main),
never a traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from tracer.errors import EXIT_OK, UsageError
from tracer.resolve import resolve_cgroup, resolve_netns

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
    f.add_argument("--debug-dir", action="append", default=None, metavar="DIR",
                   help="where separate debug files are looked for by build-id and "
                        ".gnu_debuglink (repeatable; default: TRACER_DEBUG_DIRS, else "
                        "/usr/lib/debug); DEBUGINFOD_URLS adds debuginfod servers")
    f.add_argument("--no-drop-privileges", action="store_true",
                   help="keep every capability after attach (default: keep only what "
                        "--stack needs, set no_new_privs)")
    f.add_argument("-v", "--verbose", action="store_true", help="show libbpf and debug logs")


def _drop_privileges(args, counters, writer) -> tuple[list[str], dict]:
    """After attach, as `run` does (tracer/privileges.py), for user-space and
    kernel: targets alike: reading the ring and the maps held needs nothing;
    --stack symbolizes while tracing, so it keeps what reading other
    processes' maps and binaries needs. `counters` is a map we hold (the
    probe of what this kernel asks for map commands). Returns the lines to
    show and the summary entry."""
    if args.no_drop_privileges:
        return [], {"dropped": False}
    from tracer import privileges

    writer.open_summary()  # written at exit, when the directory may be out of reach
    needs = privileges.probe_runtime_needs(lambda: counters.percpu_sum(0))
    keep = privileges.runtime_caps(tls_discovery=False, span_stacks=args.stack, kernel=needs)
    res = privileges.drop(keep)
    privileges.check_threads(res)  # none is expected: funcs starts no thread before
    return res.report()


def _check_args(args, kernel: bool) -> None:
    if args.duration is not None and args.duration <= 0:
        raise UsageError("--duration must be positive")
    if kernel and args.stack:
        raise UsageError("--stack applies to user-space targets only: kernel: records "
                         "carry no stack")
    if not 1024 <= args.stack_copy <= FUNCS_STACK_COPY or args.stack_copy % 1024:
        raise UsageError(f"--stack-copy must be a multiple of 1024 within "
                         f"1024..{FUNCS_STACK_COPY}")
    for pid in args.pid:
        if pid <= 0:
            raise UsageError(f"--pid {pid}: not a process id")
        if not os.path.exists(f"/proc/{pid}"):
            raise UsageError(f"--pid {pid}: no such process")


def _user_tracer(targets: list[str], args, writer_for, netns, cgroups):
    """User-space targets -> (FuncsTracer, its writer, the ready line, the
    warnings to show once attached)."""
    from tracer import probe
    from tracer.symbols import debugfile

    from .targets import TargetError, parse_target, resolve
    from .tracer import FuncsTracer

    if args.debug_dir is not None:
        for d in args.debug_dir:
            if not os.path.isdir(d):
                raise UsageError(f"--debug-dir {d}: no such directory")
        debugfile.configure(roots=args.debug_dir)
    try:
        probes = resolve([parse_target(t) for t in targets], args.pid)
    except TargetError as e:
        raise UsageError(str(e)) from None
    try:
        probe.require_environment()
    except probe.EnvironmentProblem as e:
        raise UsageError(str(e)) from None
    writer = writer_for()
    tracer = FuncsTracer(probes, writer, pids=args.pid, netns=netns, cgroups=cgroups,
                         stack=args.stack, stack_copy_bytes=args.stack_copy)
    functions = len({p.target for p in probes})
    warnings = []
    shared = sorted({p.module for p in probes if ".so" in os.path.basename(p.module)})
    if shared and not args.pid:
        # a uretprobe rewrites return addresses in every process mapping the
        # library; stack-switching programs (greenlets) can be killed (SIGILL)
        warnings.append(f"warning: {', '.join(shared)} traced in every process that maps "
                        "it; limit it with --pid")
    return (tracer, writer,
            lambda: f"tracing {functions} functions ({tracer.attached} probes attached)",
            warnings)


def _kernel_tracer(targets: list[str], args, writer_for, netns, cgroups):
    """kernel: targets -> (KernelTracer, its writer, the ready line, no warnings)."""
    try:
        from . import kernel
    except ImportError:
        raise UsageError("kernel function tracing unavailable") from None
    from tracer import probe

    try:
        kernel.parse_targets(targets)  # malformed targets first, before any probing
        probe.require_environment()
    except (kernel.KernelFuncError, probe.EnvironmentProblem) as e:
        raise UsageError(str(e)) from None
    method, why = probe.probe_kernel_functions()
    if method is None:
        raise UsageError(f"kernel function tracing unavailable: {why}; trace a user-space "
                         "function (BINARY:SYMBOL) or a tracepoint instead")
    try:
        tracer = kernel.kernel_tracer(targets, method, why, pids=args.pid, cgroups=cgroups,
                                      netns=netns)
    except kernel.KernelFuncError as e:
        raise UsageError(str(e)) from None
    writer = writer_for()
    tracer.emit = writer.call
    n = len(tracer.funcs)
    return tracer, writer, f"tracing {n} kernel function{'s' if n != 1 else ''} with " \
                           f"{tracer.why}", []


def cmd_funcs(args) -> int:
    """Both kinds of target take the same path once their tracer is built:
    attach, drop privileges, the ready line, run, the summary."""
    kernel = [t for t in args.targets if t.startswith("kernel:")]
    user = [t for t in args.targets if not t.startswith("kernel:")]
    if kernel and user:
        raise UsageError("trace user-space and kernel: targets in separate runs")
    _check_args(args, kernel=bool(kernel))
    netns = [resolve_netns(n) for n in args.netns]
    cgroups = [resolve_cgroup(c) for c in args.cgroup]

    from tracer import loader

    from .output import FuncsWriter

    def writer_for() -> FuncsWriter:
        try:
            return FuncsWriter(args.output)
        except OSError as e:
            raise UsageError(f"cannot write {args.output}: {e.strerror}") from None

    make = _kernel_tracer if kernel else _user_tracer
    tracer, writer, ready, warnings = make(kernel or user, args, writer_for, netns, cgroups)

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        tracer.start()
    except loader.LoaderError as e:
        writer.close()
        if args.verbose and e.log:
            sys.stderr.write(e.log)
        where = f" for kernel:{tracer.current}" if kernel else ""
        raise UsageError(f"{e.stage} failed{where}: {e}" + ("" if args.verbose or not e.log
                                                           else " (run with -v for the log)")) \
            from None
    for line in warnings:
        sys.stderr.write(f"tracer: {line}\n")
    counters = tracer.counters if kernel else tracer.obj.map("funcs_counters")
    drop_lines, privileges_info = _drop_privileges(args, counters, writer)
    if callable(ready):  # the probe count is known once attached
        ready = ready()
    sys.stderr.write(f"tracer: {ready}\n")  # tests and scripts wait for this line
    for line in drop_lines:
        sys.stderr.write(f"tracer: {line}\n")
    sys.stderr.flush()
    try:
        tracer.run(duration=args.duration, stop=stop, on_tick=writer.flush)
    finally:
        summary = tracer.stop()
        summary["privileges"] = privileges_info
        writer.close(summary)
    return EXIT_OK
