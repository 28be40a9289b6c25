"""Instructions per span of the per-event core, counted by callgrind: the same
workload as tests/bench/test_bench_core.py (ring records -> decode -> table ->
parse -> correlate -> span -> JSON line), counted inside the ring's consume
call only. A count does not move with the machine's load or timer jitter, so
a change of a few percent is visible where the VM's timings are not (the
timings of test_bench_core.py vary by 30% or more on a busy 2-core VM).

Run: .venv/bin/python -m tests.bench.instructions [--json FILE]
(make bench-micro runs it). Needs valgrind (apt-get install valgrind).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# the ring's consume call, as the compiled ring names it (the number is the
# method's index in the class): everything below it counts
TOGGLE = "__pyx_pw_6tracer_4ring_10RingBuffer_*consume_events"
RUNS = 2  # counted workloads after the first one (which is counted too, see count())

_CHILD = """
import sys
from tests.bench import test_bench_core as b
recs = b._http1_records() if sys.argv[1] == "http1" else b._grpc_records()
b._run(recs)
print("spans", sum(b._run(recs) for _ in range({runs})))
"""


class BenchError(Exception):
    pass


def count(protocol: str) -> dict:
    """{"protocol", "spans", "instructions", "per_span"} for one workload."""
    if not shutil.which("valgrind"):
        raise BenchError("valgrind not found: apt-get install valgrind (make bench-micro does)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        # toggle-collect counts inside every consume call: the first workload's
        # too (its one-time costs, free lists filling, are a small part of three)
        p = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             f"--toggle-collect={TOGGLE}", sys.executable, "-c", _CHILD.format(runs=RUNS),
             protocol],
            cwd=ROOT, capture_output=True, text=True, timeout=900,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        m = re.search(r"^spans (\d+)$", p.stdout, re.M)
        c = re.search(r"Collected : (\d+)", p.stderr)
        if p.returncode != 0 or not m or not c:
            raise BenchError(f"callgrind run failed: {p.stderr[-400:]}")
    spans = int(m.group(1))
    total = int(c.group(1))
    if not total:
        raise BenchError(f"nothing counted: no function matches {TOGGLE} (is the ring compiled?)")
    # RUNS + 1 workloads were counted, each of spans / RUNS spans
    per_span = total / (spans * (RUNS + 1) / RUNS)
    return {"protocol": protocol, "spans": spans, "instructions": total,
            "per_span": round(per_span)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    try:
        rows = [count(p) for p in ("http1", "grpc")]
    except BenchError as e:
        print(f"instructions: {e}", file=sys.stderr)
        return 2
    from tracer import core

    info = core.info()
    for r in rows:
        print(f"{r['protocol']:6s} {r['per_span']:>7,} instructions per span "
              f"({r['spans']} spans counted, core {info['core']})")
    if args.json:
        Path(args.json).write_text(json.dumps({"core": info["core"], "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
