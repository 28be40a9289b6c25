"""Export cost: the tracer CLI's CPU and peak RSS with each exporter on vs off.

    sudo .venv/bin/python -m tests.bench.export_cost [N] [REPEAT]

Each mode runs the real `python -m tracer run --pid STORM` on the same
keep-alive storm (N exchanges = 2N spans, tests/bench/http_storm.py), with
receivers in this process (their CPU is not the tracer's). The tracer's CPU
(user+sys, psutil) is read once its exporters have flushed, just before
SIGINT; peak RSS is VmHWM. Modes alternate within each repeat, so drift hits
all alike; the median of REPEAT runs is printed.
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from harness.receivers import GrpcReceiver, HttpReceiver
from tests.e2e.tracing import free_port

STORM = Path(__file__).with_name("http_storm.py")


def _hwm_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def run_once(n: int, extra: list[str], rx=None) -> dict:
    out = Path(tempfile.mkdtemp()) / "spans.jsonl"
    storm = subprocess.Popen([sys.executable, str(STORM), str(n)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    tracer = subprocess.Popen([sys.executable, "-m", "tracer", "run", "--pid", str(storm.pid),
                               "--output", str(out), *extra], stderr=subprocess.PIPE, text=True)
    try:
        line = tracer.stderr.readline()
        if "tracer: tracing" not in line:
            raise RuntimeError(f"tracer did not start: {line}")
        proc = psutil.Process(tracer.pid)
        c0 = proc.cpu_times()
        storm.stdin.write("go\n")
        storm.stdin.flush()
        storm.wait(timeout=300)
        # let the agent drain and the pipeline send (it flushes every second)
        time.sleep(1.2)
        if rx is not None:  # the storm's last exchange may be cut: 2n - 1
            # a loaded CI VM can lag: wait for the receiver rather than leave the
            # tail to the bounded flush at exit (it counts what it cannot send)
            rx.wait_spans(2 * n - 1, timeout=30)
        c1 = proc.cpu_times()
        hwm = _hwm_kb(tracer.pid)
        tracer.send_signal(signal.SIGINT)
        tracer.communicate(timeout=60)
    finally:
        storm.kill()
        tracer.kill()
    summary = json.loads(Path(str(out) + ".summary.json").read_text())
    return {"cpu_s": (c1.user + c1.system) - (c0.user + c0.system), "rss_peak_mb": hwm / 1024,
            "spans": summary["spans_emitted"], "events_dropped": summary["events_dropped"],
            "spans_exported": summary.get("spans_exported"),
            "spans_not_exported": (summary.get("spans_export_failed", 0)
                                   + summary.get("spans_export_dropped", 0))}


def main(n: int = 2000, repeat: int = 3) -> dict:
    results: dict[str, list[dict]] = {}
    with GrpcReceiver() as grx, HttpReceiver() as hrx:
        for _ in range(repeat):
            modes = {
                "jsonl only": ([], None),
                "otlp-grpc": (["--export", f"otlp-grpc://127.0.0.1:{grx.port}"], grx),
                "otlp-http": (["--export", f"otlp-http://127.0.0.1:{hrx.port}"], hrx),
                "metrics": (["--metrics", f"127.0.0.1:{free_port()}"], None),
            }
            for name, (extra, rx) in modes.items():
                if rx is not None:
                    rx.requests.clear()
                results.setdefault(name, []).append(run_once(n, extra, rx))
    table = {}
    for name, runs in results.items():
        table[name] = {
            "cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 3),
            "rss_peak_mb": round(statistics.median(r["rss_peak_mb"] for r in runs), 1),
            "spans": runs[0]["spans"],
            "spans_not_exported": max(r["spans_not_exported"] for r in runs),
            "events_dropped": max(r["events_dropped"] for r in runs),
        }
    base = table["jsonl only"]["cpu_s"]
    for row in table.values():
        row["cpu_us_per_span_over_jsonl"] = round((row["cpu_s"] - base) / (2 * n) * 1e6, 1)
    return table


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rep = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    for mode, row in main(n, rep).items():
        print(f"{mode:12s} {row}")
