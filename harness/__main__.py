"""python -m harness bench|matrix. Exit codes: 0 all gated budgets pass, 1 a
gated budget failed (or has no measurement), 2 environment or usage error
(one line, no traceback), 3 inconclusive: no failure, but a gated figure's
noise floor stayed above a third of its budget (the figure is named)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    from harness.budgets import DEFAULT_BUDGETS
    from harness.runner import DEFAULT_TRACER_CMD
    from harness.scenarios import DEFAULT_SCENARIOS, NAMES

    class Parser(argparse.ArgumentParser):
        def error(self, message):  # usage errors are exit 2 with one line
            print(f"{self.prog}: error: {message}", file=sys.stderr)
            raise SystemExit(2)

    ap = Parser(prog="python -m harness")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    b = sub.add_parser("bench", help="run scenarios baseline vs traced, report, judge budgets")
    b.add_argument("--scenario", action="append", choices=NAMES,
                   help=f"repeatable; default {', '.join(DEFAULT_SCENARIOS)}; "
                        f"all: {', '.join(NAMES)}")
    b.add_argument("--duration", type=float, default=None,
                   help="seconds of load per run (default per scenario: stress 8, overload 20, "
                        "soak 600, others 3)")
    b.add_argument("--rps", type=float, default=None,
                   help="offered req/s (default per scenario: stress 1000, soak 5000, overload "
                        "5x the rate the tracer sustains under its CPU quota, others 100)")
    b.add_argument("--repeat", type=int, default=None,
                   help="paired repetitions (default per scenario: stress 5, others 2; "
                        "given, no extra pairs are added)")
    b.add_argument("--no-extra", action="store_true",
                   help="no extra pairs for gated figures that are still too noisy")
    b.add_argument("--requests", type=int, default=0,
                   help="exact number of requests per run instead of --duration")
    b.add_argument("--tracer-cmd", default=DEFAULT_TRACER_CMD,
                   help="tracer command; placeholders {python} {netns_args} {netns} "
                        "{netns_inodes} {output} {pids} {duration}")
    b.add_argument("--export", choices=["otlp-http", "otlp-grpc"], default=None,
                   help="traced runs also export to a real OTLP receiver run by the harness "
                        "(measures export cost)")
    b.add_argument("--budgets", type=Path, default=DEFAULT_BUDGETS)
    b.add_argument("--out", type=Path, default=Path("reports"))
    b.add_argument("--no-aa", action="store_true", help="skip the A/A noise pair")
    b.add_argument("--no-bpf-pass", action="store_true",
                   help="no BPF run time (kernel.bpf_stats_enabled stays as it is)")
    b.add_argument("--saturation", action=argparse.BooleanOptionalAction, default=None,
                   help="nginx at saturation, untraced / traced / each peer (default: on with "
                        "the default scenarios)")
    b.add_argument("--peer", action="append", default=None,
                   help="peer tracer beside ours in the saturation runs (default: bcc; "
                        "'none' for none)")
    b.add_argument("--no-progress", action="store_true")
    b.add_argument("-v", "--verbose", action="store_true")
    x = sub.add_parser("excerpt", help="print a report's verdict and cost tables as Markdown "
                                       "(for harness/README.md)")
    x.add_argument("report", type=Path, help="a report directory (reports/<run-id>)")
    x.add_argument("--readme", type=Path, default=None,
                   help="write it between the bench-excerpt markers of this file instead")
    m = sub.add_parser("matrix", help="probe, kernel tests and a bench smoke on several kernels")
    m.add_argument("--kernels", default=None,
                   help="comma-separated: host, debian:<package> (`*` = ABI number), "
                        "<vmlinuz>[:<modules dir>]; default: host and two Debian 6.1 "
                        "flavours (none with --collect alone)")
    m.add_argument("--collect", type=Path, default=None,
                   help="also merge the result.json files found below DIR (Vagrant boxes)")
    m.add_argument("--timeout", type=float, default=1800.0,
                   help="seconds per kernel (default 1800: a TCG guest takes ~12 min)")
    m.add_argument("--accel", choices=["tcg", "kvm"], default="tcg",
                   help="guest acceleration (default tcg: KVM hangs on the project's VMs)")
    m.add_argument("--bench-duration", type=float, default=2.0,
                   help="seconds of load in each bench smoke run (default 2)")
    m.add_argument("--out", type=Path, default=Path("reports"))
    return ap


def _sigterm(_sig, _frame):
    # Unwind through the context managers (topology teardown) as on Ctrl-C.
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "matrix":
        return _matrix(args)
    if args.cmd == "excerpt":
        return _excerpt(args)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="harness: %(levelname)s %(message)s")
    old_handler = signal.signal(signal.SIGTERM, _sigterm)
    try:
        return _bench(args)
    finally:
        signal.signal(signal.SIGTERM, old_handler)


def _bench(args) -> int:
    from harness.bench import bench
    from harness.budgets import BudgetFileError
    from harness.runner import BenchConfig, HarnessError
    from harness.scenarios import DEFAULT_SCENARIOS

    cfg = BenchConfig(scenarios=args.scenario or list(DEFAULT_SCENARIOS),
                      duration=args.duration, rps=args.rps, repeat=args.repeat,
                      requests=args.requests, tracer_cmd=args.tracer_cmd, out=args.out,
                      aa=not args.no_aa, bpf_pass=not args.no_bpf_pass, export=args.export,
                      extra=not args.no_extra, saturation=args.saturation,
                      peers=[p for p in (args.peer or ["bcc"]) if p != "none"],
                      progress=not args.no_progress and sys.stderr.isatty())
    try:
        result = bench(cfg, args.budgets)
    except (HarnessError, BudgetFileError) as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted; namespaces and processes were torn down", file=sys.stderr)
        return 2
    for r in result.verdict.results:
        print(r.line())
    short = "".join(f"; not resolved: {r.metric} [{r.scenario}]"
                    for r in result.verdict.inconclusive)
    print(f"harness: {result.verdict.overall.upper()}{short}; report: {result.out}/summary.md")
    return result.verdict.exit_code


def _excerpt(args) -> int:
    import json

    from harness.report import excerpt, replace_excerpt

    try:
        text = excerpt(args.report)
        if args.readme is None:
            print(text)
        else:
            replace_excerpt(args.readme, text)
    except (OSError, ValueError, json.JSONDecodeError, TypeError) as e:
        print(f"harness excerpt: error: {e}", file=sys.stderr)
        return 2
    return 0


def _matrix(args) -> int:
    from harness.matrix import DEFAULT_KERNELS, MatrixError, parse_specs, run_matrix

    try:
        kernels = args.kernels
        if kernels is None:
            kernels = "" if args.collect else DEFAULT_KERNELS
        specs = parse_specs(kernels) if kernels or not args.collect else []
        rows, report = run_matrix(specs, args.out, args.collect, args.timeout, args.accel,
                                  args.bench_duration,
                                  progress=lambda m: print(f"harness matrix: {m}",
                                                           file=sys.stderr, flush=True))
    except MatrixError as e:
        print(f"harness matrix: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness matrix: interrupted", file=sys.stderr)
        return 2
    failed = [r.label for r in rows if not r.ok]
    print(f"harness matrix: {len(rows) - len(failed)}/{len(rows)} kernels ok"
          + (f" (failed: {', '.join(failed)})" if failed else "") + f"; report: {report}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
