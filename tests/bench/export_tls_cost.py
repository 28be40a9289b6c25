"""Export cost over TLS with an auth header: the tracer CLI's peak RSS and CPU
with each OTLP transport, plaintext and TLS (+ bearer token, gzip), beside
JSONL only. The same storm and measurement as tests/bench/export_cost.py
(its run_once), receivers in this process, modes alternating per repeat.

    sudo .venv/bin/python -m tests.bench.export_tls_cost [N] [REPEAT]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from harness.receivers import GrpcReceiver, HttpReceiver
from tests.bench.export_cost import run_once
from tests.unit.otlp_tls import TlsGrpcReceiver, TlsHttpReceiver, make_pki

TOKEN = "Bearer bench-token-0123456789"  # noqa: S105 - a test secret


def main(n: int = 2000, repeat: int = 3) -> dict:
    pki = make_pki(Path(tempfile.mkdtemp()) / "pki")
    tls = ["--export-ca", pki.ca, "--export-header", f"authorization={TOKEN}",
           "--export-compression", "gzip"]
    results: dict[str, list[dict]] = {}
    with GrpcReceiver() as grx, HttpReceiver() as hrx, \
            TlsGrpcReceiver(pki, TOKEN) as sgrx, TlsHttpReceiver(pki, TOKEN) as shrx:
        for _ in range(repeat):
            modes = {
                "jsonl only": ([], None),
                "otlp-http": (["--export", f"otlp-http://127.0.0.1:{hrx.port}"], hrx),
                "otlp-https": (["--export", f"otlp-https://127.0.0.1:{shrx.port}", *tls], shrx),
                "otlp-grpc": (["--export", f"otlp-grpc://127.0.0.1:{grx.port}"], grx),
                "otlp-grpcs": (["--export", f"otlp-grpcs://127.0.0.1:{sgrx.port}", *tls], sgrx),
            }
            for name, (extra, rx) in modes.items():
                if rx is not None:
                    rx.requests.clear()
                results.setdefault(name, []).append(run_once(n, extra, rx))
    table = {}
    for name, runs in results.items():
        table[name] = {
            "rss_peak_mb": round(statistics.median(r["rss_peak_mb"] for r in runs), 1),
            "rss_peak_mb_range": (round(min(r["rss_peak_mb"] for r in runs), 1),
                                  round(max(r["rss_peak_mb"] for r in runs), 1)),
            "cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 3),
            "spans": runs[0]["spans"],
            "spans_not_exported": max(r["spans_not_exported"] for r in runs),
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
