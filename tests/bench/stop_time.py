"""Launch -> ready line and SIGINT -> exit of the real CLI, with TLS on:

    sudo .venv/bin/python -m tests.bench.stop_time [ROUNDS] [LABEL=TREE ...]
    sudo .venv/bin/python -m tests.bench.stop_time --in-process [ROUNDS]

`tracer run --pid <openssl s_server>` (one HTTPS request while it runs), in
variants that alternate round by round: TLS with uprobe_multi links (the
default where the kernel has them), TLS with per-function links
(TRACER_UPROBE_MULTI=0) and --no-tls. Each LABEL=TREE adds the same TLS and
--no-tls runs from another checkout (e.g. `git archive HEAD` unpacked, its
BPF objects built) for a before/after in one run. TRACER_PURE=1 everywhere:
the figures are the kernel's attach and release, the same for both cores.

The stop of every variant includes sock.bpf.o's syscall tracepoint links,
whose release waits for a grace period each under the kernel's event_mutex
(about 1 s in all on the 2-core VM) unless another tracer holds the same
tracepoints: stops come in two groups, about 1 s apart. Prints one JSON object.

--in-process: tls.bpf.o alone on a loaded sock.bpf.o, the system libssl
attached and detached, each mode in turn: medians of load, attach, detach (ms).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PORT = 18443


def _server(d: Path) -> subprocess.Popen:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"),
                    "-subj", "/CN=localhost"], check=True, capture_output=True)
    srv = subprocess.Popen(["openssl", "s_server", "-accept", str(PORT), "-cert",
                            str(d / "cert.pem"), "-key", str(d / "key.pem"), "-www", "-quiet"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    time.sleep(0.5)
    return srv


def _once(tree: Path, pid: int, out: Path, extra: list[str], env: dict) -> dict:
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-m", "tracer", "run", "--pid", str(pid),
                          "--output", str(out), *extra], cwd=tree, stderr=subprocess.PIPE,
                         text=True, env={**os.environ, "TRACER_PURE": "1", **env})
    for line in p.stderr:
        if line.startswith("tracer: tracing"):
            break
    ready = time.monotonic() - t0
    subprocess.run(["curl", "-sk", "-o", "/dev/null", f"https://127.0.0.1:{PORT}/"], check=False)
    time.sleep(1.0)
    t1 = time.monotonic()
    p.send_signal(signal.SIGINT)
    p.wait(timeout=60)
    stop = time.monotonic() - t1
    p.stderr.read()
    p.stderr.close()
    summary = json.loads(Path(f"{out}.summary.json").read_text())
    return {"ready_s": round(ready, 3), "stop_s": round(stop, 3), "rc": p.returncode,
            "tls_uprobes": summary.get("tls_uprobes"),
            "tls_libraries": len(summary.get("tls_libraries", []))}


def in_process(rounds: int) -> dict:
    from tracer import loader, tls
    from tracer.agent import load_sock

    t0 = time.perf_counter()
    multi = loader.uprobe_multi()
    probe_ms = (time.perf_counter() - t0) * 1e3
    path = next(p for p in tls.SYSTEM_LIBS if os.path.exists(p))
    st = os.stat(path)
    sock = loader.BPFObject.open(loader.object_path("sock"))
    sock.set_rodata(self_tgid=os.getpid())
    load_sock(sock)
    times: dict[str, list[tuple[float, float, float]]] = {}
    try:
        for _ in range(rounds):
            for mode in (tls.MODE_MULTI, tls.MODE_PER_FUNCTION):
                t0 = time.perf_counter()
                p = tls.TlsProbes.load(sock, multi=mode == tls.MODE_MULTI, self_tgid=os.getpid())
                t1 = time.perf_counter()
                p.consider(path, st.st_dev, st.st_ino, strict=True)
                t2 = time.perf_counter()
                p.detach()
                t3 = time.perf_counter()
                p.close()
                times.setdefault(mode, []).append((t1 - t0, t2 - t1, t3 - t2))
    finally:
        sock.close()
    out = {"feature_probe_ms": round(probe_ms, 2), "feature": list(multi), "library": path}
    for mode, rows in times.items():
        out[mode] = {stage: round(statistics.median(r[i] for r in rows) * 1e3, 1)
                     for i, stage in enumerate(("load_ms", "attach_ms", "detach_ms"))}
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["--in-process"]:
        print(json.dumps(in_process(int(argv[1]) if len(argv) > 1 else 8), indent=1))
        return 0
    rounds = int(argv[0]) if argv else 5
    variants = {"tls uprobe_multi": (ROOT, [], {}),
                "tls per-function": (ROOT, [], {"TRACER_UPROBE_MULTI": "0"}),
                "no-tls": (ROOT, ["--no-tls"], {})}
    for spec in argv[1:]:
        label, tree = spec.split("=", 1)
        variants[f"{label} tls"] = (Path(tree), [], {})
        variants[f"{label} no-tls"] = (Path(tree), ["--no-tls"], {})
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as d:
        srv = _server(Path(d))
        try:
            for _ in range(rounds):
                for name, (tree, extra, env) in variants.items():
                    runs[name].append(_once(tree, srv.pid, Path(d) / "spans.jsonl", extra, env))
        finally:
            os.killpg(srv.pid, signal.SIGKILL)
            srv.wait()
    report = {}
    for name, rows in runs.items():
        stops = sorted(r["stop_s"] for r in rows)
        readies = sorted(r["ready_s"] for r in rows)
        report[name] = {"stop_s": stops, "stop_median_s": statistics.median(stops),
                        "ready_s": readies, "ready_median_s": statistics.median(readies),
                        "tls_uprobes": sorted({str(r["tls_uprobes"]) for r in rows}),
                        "exit_codes": sorted({r["rc"] for r in rows})}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
