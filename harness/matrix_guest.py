"""Per-kernel entry point of the kernel matrix: `python -m harness.matrix_guest OUTDIR`.

Runs inside each kernel (a virtme-ng guest, a Vagrant box, or the host itself):
  1. `python -m tracer probe --json`;
  2. the `tests/kernel` tier plus `tests/e2e/test_http1.py` (junit XML, counted);
  3. `tracer funcs kernel:do_sys_openat2` on a child that opens a file 23 times
     (exact count; where the probe finds neither fentry nor kprobes, its one-line reason);
  4. a short `harness bench` smoke on the `stress` scenario.
Everything lands in OUTDIR/result.json (plus the raw files beside it), which
`python -m harness matrix` (or `--collect`) turns into one report row. A step
the kernel or guest cannot do is recorded with the reason; it never aborts the
other steps. Exit status: 0 when result.json was written.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

RESULT_SCHEMA = 1
REPO = Path(__file__).resolve().parent.parent
TEST_PATHS = ("tests/kernel", "tests/e2e/test_http1.py")


def _run(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess | str:
    """The finished process, or a one-line reason when it could not run."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              cwd=REPO, **kw)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s: {' '.join(cmd[:4])}"
    except OSError as e:
        return f"cannot run {cmd[0]}: {e.strerror}"


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join((text or "").strip().splitlines()[-lines:])


def environment() -> dict:
    """What the guest offers the tests, so a skip or failure has a visible cause."""
    env = {"bpftool": shutil.which("bpftool") is not None,
           "tracefs": os.path.isdir("/sys/kernel/tracing/events")
           or os.path.isdir("/sys/kernel/debug/tracing/events"),
           "btf": os.path.exists("/sys/kernel/btf/vmlinux"),
           "cpus": os.cpu_count()}
    name = f"matrix{os.getpid()}"
    r = _run(["ip", "netns", "add", name], 20)
    if isinstance(r, str) or r.returncode != 0:
        env["netns"] = False
        env["netns_error"] = r if isinstance(r, str) else _tail(r.stderr, 2)
    else:
        env["netns"] = True
        _run(["ip", "netns", "del", name], 20)
    return env


def step_probe(out: Path) -> dict:
    r = _run([sys.executable, "-m", "tracer", "probe", "--json"], 120)
    if isinstance(r, str):
        return {"ok": False, "error": r}
    (out / "probe.json").write_text(r.stdout)
    try:
        probe = json.loads(r.stdout)
    except ValueError:
        return {"ok": False, "exit": r.returncode,
                "error": _tail(r.stderr, 3) or "probe printed no JSON"}
    return {"ok": r.returncode == 0, "exit": r.returncode, "data": probe}


def parse_junit(path: Path) -> dict:
    """Counts and per-test outcomes from a pytest junit XML file."""
    root = ET.parse(path).getroot()
    cases = []
    for tc in root.iter("testcase"):
        outcome, message = "passed", ""
        for child in tc:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", child.get("message", "")
            elif child.tag == "skipped":
                outcome, message = "skipped", child.get("message", "")
        cases.append({"id": f"{tc.get('classname', '')}::{tc.get('name', '')}",
                      "outcome": outcome, "time_s": float(tc.get("time") or 0),
                      "message": message[:300]})
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "skipped")}
    return {**counts, "cases": cases}


def step_tests(out: Path, timeout: float, paths: tuple[str, ...] = TEST_PATHS) -> dict:
    junit = out / "junit.xml"
    # The repo is read-only in a virtme-ng guest: no cache dir, no bytecode.
    cmd = [sys.executable, "-m", "pytest", *paths, "-q", "-p", "no:cacheprovider",
           f"--junitxml={junit}", f"--basetemp={out / 'pytest-tmp'}",
           # Emulated guests run several times slower than the per-test default allows.
           "--timeout=900"]
    r = _run(cmd, timeout, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    shutil.rmtree(out / "pytest-tmp", ignore_errors=True)
    if isinstance(r, str):
        return {"ok": False, "error": r}
    (out / "pytest.txt").write_text(r.stdout + r.stderr)
    if not junit.exists():
        return {"ok": False, "exit": r.returncode, "error": _tail(r.stdout + r.stderr, 5)}
    res = parse_junit(junit)
    return {"ok": r.returncode == 0, "exit": r.returncode, **res}


def _bench_figures(run_dir: Path) -> dict:
    rows = list(csv.DictReader((run_dir / "runs.csv").open()))
    traced = [r for r in rows if r.get("variant") == "traced"]

    def med(key: str) -> float | None:
        vals = [float(r[key]) for r in traced if r.get(key) not in (None, "")]
        return statistics.median(vals) if vals else None

    return {"events_per_s": med("events_per_s"), "achieved_rps": med("achieved_rps"),
            "recall": med("recall"), "dropped_per_s": med("dropped_per_s"),
            "runs": len(rows)}


def step_bench(out: Path, duration: float, rps: float | None, timeout: float,
               env: dict) -> dict:
    if not env.get("netns"):
        return {"ok": False, "skipped": f"no network namespaces: {env.get('netns_error', '')}"}
    bench_out = out / "bench"
    cmd = [sys.executable, "-m", "harness", "bench", "--scenario", "stress",
           "--duration", str(duration), "--repeat", "1", "--no-aa", "--no-bpf-pass",
           "--no-progress", "--out", str(bench_out)]
    if rps:
        cmd += ["--rps", str(rps)]
    r = _run(cmd, timeout, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    if isinstance(r, str):
        return {"ok": False, "error": r}
    (out / "bench.txt").write_text(r.stdout + r.stderr)
    runs = sorted(bench_out.glob("*/runs.csv"))
    # Exit 1 is a budget verdict, which a smoke run does not judge; 2 is a real error.
    if r.returncode == 2 or not runs:
        return {"ok": False, "exit": r.returncode, "error": _tail(r.stderr, 3)}
    return {"ok": True, "exit": r.returncode, **_bench_figures(runs[-1].parent)}


KFUNC, KFUNC_CALLS = "do_sys_openat2", 23
# Says "ready" after its own start-up (which opens files too), then opens a file
# exactly KFUNC_CALLS times once told to (after the tracer attached).
_KFUNC_CHILD = ("import os, sys\nprint('ready', flush=True)\nsys.stdin.readline()\n"
                f"for _ in range({KFUNC_CALLS}):\n    os.close(os.open('/proc/self/stat', 0))\n")


def step_kfuncs(out: Path, timeout: float) -> dict:
    """Kernel-function tracing, where the probe allows it: `tracer funcs
    kernel:do_sys_openat2 --pid CHILD` while the child opens a file exactly 23
    times must report 23 calls, each returning an fd >= 0."""
    import queue
    import signal
    import threading

    jsonl = out / "kfuncs.jsonl"
    child = subprocess.Popen([sys.executable, "-S", "-c", _KFUNC_CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    child.stdout.readline()
    tracer = subprocess.Popen([sys.executable, "-m", "tracer", "funcs", f"kernel:{KFUNC}",
                               "--pid", str(child.pid), "--output", str(jsonl)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              cwd=REPO, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in tracer.stderr], daemon=True).start()
    try:
        first = lines.get(timeout=timeout)
    except queue.Empty:
        first = f"no output within {timeout:.0f} s"
    try:
        if not first.startswith("tracer: tracing"):
            tracer.kill()
            return {"ok": False, "exit": tracer.wait(), "error": first.strip()}
        child.stdin.write("go\n")
        child.stdin.close()
        child.wait(timeout)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f} s"}
    finally:
        for p in (child, tracer):
            if p.poll() is None:
                p.kill()
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    recs = [json.loads(x) for x in jsonl.read_text().splitlines() if x.strip()]
    calls = [r for r in recs if r.get("function") == KFUNC and r.get("pid") == child.pid]
    fds_ok = sum(isinstance(r.get("retval"), int) and r["retval"] >= 0 for r in calls)
    try:
        summary = json.loads(Path(f"{jsonl}.summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    return {"ok": tracer.returncode == 0 and len(calls) == KFUNC_CALLS == fds_ok,
            "exit": tracer.returncode, "function": KFUNC, "expected": KFUNC_CALLS,
            "calls": len(calls), "fds_ok": fds_ok, "records": len(recs),
            "method": summary.get("method"), "unmatched_exits": summary.get("unmatched_exits"),
            "events_dropped": summary.get("events_dropped"), "stderr": _tail("".join(rest), 2)}


def detect_virt() -> str:
    """'tcg' (emulated: timings not comparable), 'vm' (hardware-virtualised) or 'native'.

    The matrix passes --virt explicitly; this guess serves Vagrant and hand runs."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    if "QEMU Virtual CPU" in cpuinfo or "QEMU TCG" in cpuinfo:
        return "tcg"
    return "vm" if " hypervisor" in cpuinfo else "native"


def run(out: Path, label: str, virt: str, bench_duration: float, bench_rps: float | None,
        tests_timeout: float, steps: set[str], tests: tuple[str, ...] = TEST_PATHS) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    env = environment()
    # the steps asked for: one missing from timings_s means the guest stopped in it
    result: dict = {"schema": RESULT_SCHEMA, "label": label, "kernel": platform.release(),
                    "virt": virt, "emulated": virt == "tcg", "env": env,
                    "steps": [n for n in ("probe", "tests", "kfuncs", "bench") if n in steps]}
    timings = {}
    for name in ("probe", "tests", "kfuncs", "bench"):
        if name not in steps:
            continue
        t = time.monotonic()
        if name == "probe":
            result["probe"] = step_probe(out)
        elif name == "tests":
            result["tests"] = step_tests(out, tests_timeout, tests)
        elif name == "kfuncs":
            result["kfuncs"] = step_kfuncs(out, 120)
        else:
            result["bench"] = step_bench(out, bench_duration, bench_rps, tests_timeout, env)
        timings[name] = round(time.monotonic() - t, 1)
        # Written after every step: a guest killed by the timeout still leaves the rest.
        result["timings_s"] = {**timings, "total": round(time.monotonic() - t0, 1)}
        (out / "result.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.matrix_guest")
    ap.add_argument("out", type=Path, help="directory for result.json and raw files")
    ap.add_argument("--label", default=platform.release())
    ap.add_argument("--virt", default=None, help="tcg|kvm|vm|native (default: detect)")
    ap.add_argument("--bench-duration", type=float, default=2.0)
    ap.add_argument("--bench-rps", type=float, default=None)
    ap.add_argument("--tests-timeout", type=float, default=1500.0)
    ap.add_argument("--steps", default="probe,tests,kfuncs,bench",
                    help="comma-separated subset of probe,tests,kfuncs,bench")
    ap.add_argument("--tests", action="append", default=None,
                    help=f"pytest path or node id, repeatable (default: {' '.join(TEST_PATHS)})")
    args = ap.parse_args(argv)
    steps = {s for s in args.steps.split(",") if s}
    if not steps <= {"probe", "tests", "kfuncs", "bench"}:
        ap.error(f"unknown step in --steps {args.steps!r}")
    run(args.out, args.label, args.virt or detect_virt(), args.bench_duration,
        args.bench_rps, args.tests_timeout, steps, tuple(args.tests or TEST_PATHS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
