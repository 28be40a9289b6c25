"""JSON-lines records and the latency summary of `python -m tracer funcs`.

Shared by the user-space (tracer/funcs/tracer.py) and the kernel-function
(tracer/funcs/kernel.py) modes. The record schema is in docs/funcs.md ("Function
tracing"); one record per completed call:

    w = FuncsWriter("out.jsonl")            # or "-" for stdout
    w.call(call_record(target=..., function=..., ...))
    w.close(counters)                       # summary on stderr and out.jsonl.summary.json

Pure Python, no BPF: unit-tested without root.
"""

from __future__ import annotations

import json
import random
import sys
from array import array
from typing import IO, Any

import orjson

SCHEMA = 1
# exact percentiles up to this many calls per function, a uniform sample after
MAX_SAMPLES = 1 << 20


def call_record(*, target: str, function: str, module: str, address: int, pid: int, tid: int,
                comm: str, start_time_unix_nano: int, duration_ns: int, depth: int,
                args: dict[str, Any], retval: int | None,
                stack: list[dict] | None = None, stack_method: str | None = None) -> dict:
    """One call as a schema-1 record (field order as documented)."""
    rec = {"schema": SCHEMA, "type": "call", "target": target, "function": function,
           "module": module, "address": f"{address:#x}", "pid": pid, "tid": tid, "comm": comm,
           "start_time_unix_nano": start_time_unix_nano, "duration_ns": duration_ns,
           "depth": depth, "args": args, "retval": retval}
    if stack is not None:
        rec["stack"] = stack
        rec["stack_method"] = stack_method
    return rec


def frame_dict(addr: int, symbol: str | None, offset: int | None, module: str | None) -> dict:
    return {"addr": f"{addr:#x}", "symbol": symbol, "offset": offset, "module": module}


class LatencyStats:
    """Calls, log2 histogram and percentiles of one function's latencies."""

    def __init__(self, max_samples: int = MAX_SAMPLES, rng: random.Random | None = None):
        self.calls = 0
        self.max_ns = 0
        self.hist: dict[int, int] = {}  # bucket k holds [2^k, 2^(k+1)); k = 0 holds 0 and 1
        self.samples = array("Q")
        self.max_samples = max_samples
        self._rng = rng or random.Random(0)

    def add(self, ns: int) -> None:
        self.calls += 1
        if ns > self.max_ns:
            self.max_ns = ns
        k = max(ns.bit_length() - 1, 0)
        self.hist[k] = self.hist.get(k, 0) + 1
        if len(self.samples) < self.max_samples:
            self.samples.append(ns)
        else:  # reservoir sampling (algorithm R): each call kept with equal chance
            j = self._rng.randrange(self.calls)
            if j < self.max_samples:
                self.samples[j] = ns

    def percentile(self, p: float) -> int:
        """Nearest-rank percentile (p in 0..100) of the kept latencies."""
        if not self.samples:
            return 0
        s = sorted(self.samples)
        rank = max(1, -(-len(s) * p // 100))  # ceil
        return s[int(rank) - 1]

    def as_dict(self) -> dict:
        return {"calls": self.calls,
                "hist_log2_ns": {str(1 << k): n for k, n in sorted(self.hist.items())},
                "p50_ns": self.percentile(50), "p90_ns": self.percentile(90),
                "p99_ns": self.percentile(99), "max_ns": self.max_ns,
                "percentiles_exact": self.calls <= self.max_samples}


def _fmt_ns(ns: int) -> str:
    if ns >= 1_000_000_000:
        return f"{ns / 1e9:.2f} s"
    if ns >= 1_000_000:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1_000:
        return f"{ns / 1e3:.1f} us"
    return f"{ns} ns"


def histogram_lines(stats: LatencyStats, width: int = 40) -> list[str]:
    """bcc-style log2 table: one line per bucket from the first to the last used."""
    if not stats.hist:
        return []
    lo, hi = min(stats.hist), max(stats.hist)
    peak = max(stats.hist.values())
    out = [f"{'ns':>25} : count    distribution"]
    for k in range(lo, hi + 1):
        n = stats.hist.get(k, 0)
        a, b = (0 if k == 0 else 1 << k), (1 << (k + 1)) - 1
        bar = "*" * (n * width // peak if peak else 0)
        out.append(f"{a:>12} -> {b:<10} : {n:<8} |{bar:<{width}}|")
    return out


class FuncsWriter:
    """Writes call records as JSON lines and keeps per-target latency stats."""

    def __init__(self, output: str = "-", stderr: IO[str] | None = None):
        self.output = output
        self._f = sys.stdout.buffer if output == "-" else open(output, "wb")  # noqa: SIM115
        self._stderr = stderr or sys.stderr
        self.stats: dict[str, LatencyStats] = {}
        self.records = 0
        self._summary_f: IO[str] | None = None

    def open_summary(self) -> None:
        """Open FILE.summary.json now (before a privilege drop), written at close."""
        if self.output != "-" and self._summary_f is None:
            self._summary_f = open(self.output + ".summary.json", "w")  # noqa: SIM115

    def call(self, rec: dict) -> None:
        self._f.write(orjson.dumps(rec) + b"\n")
        self.records += 1
        st = self.stats.get(rec["target"])
        if st is None:
            st = self.stats[rec["target"]] = LatencyStats()
        st.add(rec["duration_ns"])

    def flush(self) -> None:
        self._f.flush()

    def summary(self, counters: dict[str, Any] | None = None) -> dict:
        out = {"functions": {t: s.as_dict() for t, s in sorted(self.stats.items())},
               "records": self.records}
        out.update(counters or {})
        return out

    def summary_text(self, counters: dict[str, Any] | None = None) -> str:
        lines = []
        for target, st in sorted(self.stats.items()):
            lines.append(f"tracer: {target}: calls {st.calls}, p50 {_fmt_ns(st.percentile(50))}, "
                         f"p90 {_fmt_ns(st.percentile(90))}, p99 {_fmt_ns(st.percentile(99))}, "
                         f"max {_fmt_ns(st.max_ns)}")
            lines.extend(histogram_lines(st))
        c = counters or {}
        if c:
            lines.append("tracer: " + ", ".join(f"{k.replace('_', ' ')} {v}"
                                                for k, v in c.items()
                                                if isinstance(v, int | float)))
        return "\n".join(lines)

    def close(self, counters: dict[str, Any] | None = None) -> dict:
        """Flush, print the summary on stderr, write FILE.summary.json."""
        summary = self.summary(counters)
        if self._f is not sys.stdout.buffer:
            self._f.close()
        else:
            self._f.flush()
        text = self.summary_text(counters)
        if text:
            self._stderr.write(text + "\n")
            self._stderr.flush()
        if self.output != "-":
            f = self._summary_f or open(self.output + ".summary.json", "w")  # noqa: SIM115
            self._summary_f = None
            with f:
                json.dump(summary, f, indent=2, sort_keys=True)
        return summary
