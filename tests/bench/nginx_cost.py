"""Agent CPU per span with the real CLI on nginx (root): keep-alive HTTP/1 at
fixed rates with only nginx traced, then nginx at saturation with and
without the tracer.

    python tests/bench/nginx_cost.py [--rates 1000,10000,0] [--seconds 5]
                                     [--saturation-seconds 8] [--no-saturation]
                                     [--cores compiled,pure]

Per fixed-rate phase (rate 0: as fast as one connection goes):
- agent CPU: all threads of the `tracer run` process, from
  /proc/PID/task/*/schedstat (ns), over the phase;
- BPF run time: run_time_ns of the agent's programs (kernel.bpf_stats_enabled
  on for the run), read from /proc/PID/fdinfo of their fds; per program too
  (bpf_by_program: runs and ns per request, named by bpftool);
- spans: requests answered (only the server is traced: one span each); the
  whole run's spans_emitted must equal the requests sent.
Saturation: wrk -t2 -c16 against nginx (2 workers) untraced, then traced;
the ratio of req/s, and the tracer's drops (exactly counted).
Each core (compiled, and pure Python with TRACER_PURE=1) is measured in the
same run against the same nginx: the before/after of compiling the hot path.
Also per core: launch to the ready line, SIGINT to exit, peak RSS.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.saturation import NGINX_CONF  # one nginx for the harness and this bench

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PORT = 18080
STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


class BenchError(RuntimeError):
    pass


def build_client(workdir: Path) -> Path:
    """The harness's paced keep-alive client (harness/paced_client.c)."""
    from harness import paced

    try:
        return paced.binary()
    except paced.PacedError as e:
        raise BenchError(str(e)) from None


def start_nginx(workdir: Path) -> subprocess.Popen:
    if not shutil.which("nginx"):
        raise BenchError("nginx not found: apt-get install nginx-light (make bench-micro does)")
    with socket.socket() as probe:  # a leftover server would be measured instead
        try:
            probe.bind(("127.0.0.1", PORT))
        except OSError as e:
            raise BenchError(f"port {PORT} is taken ({e.strerror}): stop what listens there") from None
    (workdir / "body").mkdir(exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=workdir, listen=f"127.0.0.1:{PORT}"))
    # its own session: the workers are killed with the master at the end
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(workdir), "-e",
                             str(workdir / "error.log")], start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{PORT}/"],
                          check=False).returncode == 0:
            return proc
        time.sleep(0.05)
    stop_nginx(proc)
    raise BenchError(f"nginx did not answer on port {PORT}: {(workdir / 'error.log').read_text()}")


def stop_nginx(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def start_tracer(pid: int, out: Path, core: str = "compiled") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "TRACER_PURE"}
    if core == "pure":
        env["TRACER_PURE"] = "1"
    tr = subprocess.Popen([sys.executable, "-m", "tracer", "run", "--pid", str(pid),
                           "--output", str(out)], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                          env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = tr.stderr.readline()
        if not line:
            break
        if line.startswith("tracer: tracing"):
            return tr
    tr.kill()
    raise BenchError(f"the tracer did not start: {tr.stderr.read()[-500:]}")


def stop_tracer(tr: subprocess.Popen, out: Path) -> dict:
    tr.send_signal(signal.SIGINT)
    tr.wait(timeout=30)
    tr.stderr.close()
    return json.loads(Path(f"{out}.summary.json").read_text())


def cpu_ns(pid: int) -> int:
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass  # a thread that ended
    return total


def bpf_programs(pid: int) -> dict[int, tuple[int, int]]:
    """prog id -> (run_time_ns, run_cnt) of the BPF programs whose fds the
    process holds."""
    progs = {}
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        m = re.search(r"^prog_id:\s+(\d+)", text, re.M)
        rt = re.search(r"^run_time_ns:\s+(\d+)", text, re.M)
        rc = re.search(r"^run_cnt:\s+(\d+)", text, re.M)
        if m and rt and rc:  # a program's fd (a link's names its program too)
            progs[int(m.group(1))] = (int(rt.group(1)), int(rc.group(1)))
    return progs


def per_program(before: dict, after: dict, requests: int) -> dict[str, dict]:
    """Each program's runs and ns per request between two bpf_programs()
    readings, named by bpftool; the costliest first."""
    names = {}
    with contextlib.suppress(OSError, ValueError):
        out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True,
                             timeout=30).stdout
        names = {p["id"]: p.get("name", "?") for p in json.loads(out)}
    rows = []
    for pid_, (rt, rc) in after.items():
        rt0, rc0 = before.get(pid_, (0, 0))
        if rc > rc0:
            rows.append((rt - rt0, names.get(pid_, str(pid_)), rc - rc0))
    return {name: {"runs_per_request": round(rc / requests, 2), "ns_per_run": round(rt / rc),
                   "ns_per_request": round(rt / requests)}
            for rt, name, rc in sorted(rows, reverse=True)}


def paced(client: Path, rate: int, seconds: float, conns: int = 1) -> dict:
    """rate 0: as fast as the connections go (a rate no client reaches)."""
    p = subprocess.run([str(client), "127.0.0.1", str(PORT), "/", str(rate or 10**9), str(seconds),
                        str(conns), "nc", os.devnull], capture_output=True, text=True,
                       timeout=seconds + 30)
    try:
        r = json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        r = None
    if p.returncode != 0 or r is None:
        raise BenchError(f"load client failed: {p.stdout} {p.stderr}")
    return {"requests": r["requests"], "errors": r["failures"], "client_cpu_s": r["cpu_s"],
            "seconds": r["end_unix"] - r["start_unix"]}


def wrk(seconds: float) -> float:
    if not shutil.which("wrk"):
        raise BenchError("wrk not found: apt-get install wrk (make bench-micro does)")
    p = subprocess.run(["wrk", "-t2", "-c16", f"-d{int(seconds)}s", f"http://127.0.0.1:{PORT}/"],
                       capture_output=True, text=True, timeout=seconds + 30, check=True)
    m = re.search(r"Requests/sec:\s+([\d.]+)", p.stdout)
    if not m:
        raise BenchError(f"no rate in wrk's output: {p.stdout[-300:]}")
    return float(m.group(1))


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _fixed_rates(client: Path, nginx_pid: int, workdir: Path, core: str, rates: list[int],
                 seconds: float) -> dict:
    out = workdir / f"spans-{core}.jsonl"
    t0 = time.monotonic()
    tr = start_tracer(nginx_pid, out, core)
    ready_s = time.monotonic() - t0
    phases = []
    sent = 0
    try:
        paced(client, 200, 1.0)  # warm-up: connections, caches, TLS discovery settles
        sent = 0
        for rate in rates:
            p0 = bpf_programs(tr.pid)
            c0 = cpu_ns(tr.pid)
            r = paced(client, rate, seconds)
            time.sleep(0.3)  # the agent's batched wake-up and last spans
            c1 = cpu_ns(tr.pid)
            p1 = bpf_programs(tr.pid)
            b0 = sum(rt for rt, _ in p0.values())
            b1 = sum(rt for rt, _ in p1.values())
            sent += r["requests"]
            spans = r["requests"]
            rps = spans / r["seconds"]
            agent_us = (c1 - c0) / 1e3 / spans
            bpf_us = (b1 - b0) / 1e3 / spans
            phases.append({
                "rate_asked": rate, "req_per_s": round(rps), "spans": spans,
                "errors": r["errors"],
                "agent_us_per_span": round(agent_us, 2),
                "bpf_us_per_span": round(bpf_us, 2),
                # share of one core at this rate, agent + BPF
                "all_in_pct_core": round((agent_us + bpf_us) * rps / 1e4, 3),
                "bpf_by_program": per_program(p0, p1, spans),
            })
        rss = _vm_hwm_mb(tr.pid)
    finally:
        t1 = time.monotonic()
        summary = stop_tracer(tr, out)
        stop_s = time.monotonic() - t1
    return {"phases": phases, "core": summary.get("core"), "ready_s": round(ready_s, 3),
            "stop_s": round(stop_s, 3), "rss_peak_mb": rss,
            "spans_emitted": summary["spans_emitted"], "requests_sent": sent,
            "warmup_spans": summary["spans_emitted"] - sent,
            "events_seen": summary["events_seen"],
            "events_delivered": summary["events_delivered"],
            "events_dropped": summary["events_dropped"]}


def _saturation(nginx_pid: int, workdir: Path, core: str, seconds: float) -> dict:
    out = workdir / f"sat-{core}.jsonl"
    tr = start_tracer(nginx_pid, out, core)
    try:
        traced = wrk(seconds)
    finally:
        s = stop_tracer(tr, out)
    return {"traced_req_per_s": round(traced), "spans_emitted": s["spans_emitted"],
            "events_seen": s["events_seen"], "events_delivered": s["events_delivered"],
            "events_dropped": s["events_dropped"],
            "incomplete_requests": s["incomplete_requests"]}


def run(rates: list[int], seconds: float, sat_seconds: float | None,
        cores: tuple[str, ...] = ("compiled",)) -> dict:
    """Per core ("compiled", or "pure": TRACER_PURE=1), in one run against
    one nginx: the fixed-rate phases, then saturation (untraced measured
    before and after the traced runs, averaged)."""
    if os.geteuid() != 0:
        raise BenchError("needs root (BPF, bpf_stats)")
    workdir = Path(tempfile.mkdtemp(prefix="httptrace-nginx-"))
    old_stats = STATS.read_text().strip()
    nginx = None
    try:
        client = build_client(workdir)
        nginx = start_nginx(workdir)
        STATS.write_text("1")
        result = {"cores": {c: _fixed_rates(client, nginx.pid, workdir, c, rates, seconds)
                            for c in cores}}
        if sat_seconds:
            STATS.write_text(old_stats)  # saturation: no stats overhead in any run
            base = [wrk(sat_seconds)]
            for c in cores:
                sat = _saturation(nginx.pid, workdir, c, sat_seconds)
                result["cores"][c]["saturation"] = sat
            base.append(wrk(sat_seconds))
            untraced = sum(base) / len(base)
            result["untraced_req_per_s"] = [round(b) for b in base]
            for c in cores:
                sat = result["cores"][c]["saturation"]
                sat["ratio"] = round(sat["traced_req_per_s"] / untraced, 3)
        return result
    finally:
        STATS.write_text(old_stats)
        if nginx is not None:
            stop_nginx(nginx)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="1000,10000,0")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--saturation-seconds", type=float, default=8.0)
    ap.add_argument("--no-saturation", action="store_true")
    ap.add_argument("--cores", default="compiled,pure",
                    help="compiled and/or pure (TRACER_PURE=1), measured in the same run")
    a = ap.parse_args()
    try:
        r = run([int(x) for x in a.rates.split(",")], a.seconds,
                None if a.no_saturation else a.saturation_seconds,
                tuple(a.cores.split(",")))
    except BenchError as e:
        print(f"nginx_cost: {e}", file=sys.stderr)
        return 2
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
