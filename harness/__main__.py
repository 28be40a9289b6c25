"""python -m harness bench|matrix. Exit codes: 0 all budgets pass, 1 a budget
failed (or is inconclusive), 2 environment or usage error (one line, no traceback)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    from harness.budgets import DEFAULT_BUDGETS
    from harness.runner import DEFAULT_TRACER_CMD
    from harness.scenarios import NAMES

    class Parser(argparse.ArgumentParser):
        def error(self, message):  # usage errors are exit 2 with one line
            print(f"{self.prog}: error: {message}", file=sys.stderr)
            raise SystemExit(2)

    ap = Parser(prog="python -m harness")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    b = sub.add_parser("bench", help="run scenarios baseline vs traced, report, judge budgets")
    b.add_argument("--scenario", action="append", choices=NAMES,
                   help=f"repeatable; default all: {', '.join(NAMES)}")
    b.add_argument("--duration", type=float, default=3.0, help="seconds of load per run (default 3)")
    b.add_argument("--rps", type=float, default=None,
                   help="offered req/s (default per scenario: stress 6000, others 100)")
    b.add_argument("--repeat", type=int, default=6, help="paired repetitions (default 6)")
    b.add_argument("--requests", type=int, default=0,
                   help="exact number of requests per run instead of --duration")
    b.add_argument("--tracer-cmd", default=DEFAULT_TRACER_CMD,
                   help="tracer command; placeholders {python} {netns_args} {netns} "
                        "{netns_inodes} {output} {pids} {duration}")
    b.add_argument("--budgets", type=Path, default=DEFAULT_BUDGETS)
    b.add_argument("--out", type=Path, default=Path("reports"))
    b.add_argument("--no-aa", action="store_true", help="skip the A/A noise pair")
    b.add_argument("--no-bpf-pass", action="store_true", help="skip the bpf_stats pass")
    b.add_argument("--no-progress", action="store_true")
    b.add_argument("-v", "--verbose", action="store_true")
    m = sub.add_parser("matrix", help="run the tracer's tests on other kernels (not yet)")
    m.add_argument("--kernels", default="")
    m.add_argument("--collect", default="")
    return ap


def _sigterm(_sig, _frame):
    # Unwind through the context managers (topology teardown) as on Ctrl-C.
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "matrix":
        print("harness matrix: not implemented yet: see issue 9", file=sys.stderr)
        return 2
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

    cfg = BenchConfig(scenarios=args.scenario or ["http-chain", "stress", "grpc", "mixed"],
                      duration=args.duration, rps=args.rps, repeat=args.repeat,
                      requests=args.requests, tracer_cmd=args.tracer_cmd, out=args.out,
                      aa=not args.no_aa, bpf_pass=not args.no_bpf_pass,
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
    print(f"harness: {result.verdict.overall.upper()}; report: {result.out}/summary.md")
    return 0 if result.verdict.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
