"""Saturation scenario: nginx driven flat out by wrk, untraced, traced by
our tracer, and traced by each peer, in alternating order.

    python -m harness.saturation --out DIR [--duration 5] [--pairs 3] [--peer bcc ...]

nginx (2 workers, keep-alive, a 17-byte static answer) runs in the
`frontend` namespace of a fresh topology; `wrk -t2 -c16` runs in `client`.
Our tracer is scoped with `--netns <frontend>`, a peer with `--pid <nginx
master>` (and its workers): both see the server side only.
One group = one run of each variant (untraced, tracer, each ready peer), the
order reversed every other group so drift does not favour one variant.

Per traced variant:
- rps: median over groups; ratio = median traced / median untraced;
  ratio_ci: 95% t-interval of the per-group ratios (on their logs), None
  with fewer than 2 groups;
- cpu_us_per_request: the traced process's CPU from its ready line to its
  exit (schedstat at ready, wait4 rusage at exit: both ns-based), per
  request wrk completed; the drain after SIGINT counts, start-up does not;
- rss_mb: peak RSS of the process's own memory (VmHWM, read until it
  exits; not ru_maxrss, which counts the harness's RSS at fork: see
  _wait4); ready_s: launch to the ready line;
- recall: server spans (tracer) or request lines received (peer) / requests
  wrk completed. wrk does not count the up to 16 requests in flight when it
  stops, so recall can exceed 1 by 16/requests;
- drops, events_seen: from the tracer's summary (exact kernel counters).
A peer that cannot run here has {"skipped": reason}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from harness import measure
from harness import peers as peers_mod
from netns.topology import Topology

REPO = Path(__file__).resolve().parents[1]
PORT = 8080
WRK_ARGS = ["-t2", "-c16"]
READY_LINE = "tracer: tracing"
TIME_BOUND_S = 180.0
NGINX_CONF = """
worker_processes 2;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_temp_path {d}/body;
    server {{
        listen {listen} backlog=1024;
        location / {{ return 200 "hello from nginx\\n"; }}
    }}
}}
"""


class SaturationError(RuntimeError):
    """The scenario cannot run here (one line; exit code 2)."""


# --- pure parts ---------------------------------------------------------------
def parse_wrk(text: str) -> dict:
    """Requests completed, seconds, req/s and errors from wrk's report."""
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s|m)\b", text)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not m or not rate:
        raise SaturationError(f"no request count in wrk's output: {text.strip()[-200:]!r}")
    secs = float(m.group(2)) * {"s": 1.0, "ms": 1e-3, "m": 60.0}[m.group(3)]
    errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if sock:
        errors += sum(int(x) for x in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non2xx:
        errors += int(non2xx.group(1))
    return {"requests": int(m.group(1)), "seconds": secs, "rps": float(rate.group(1)),
            "errors": errors}


def ratio_ci(traced: list[float], untraced: list[float],
             confidence: float = 0.95) -> tuple[float, float] | None:
    """CI of traced/untraced from paired groups: a t-interval of the mean log
    ratio, back-transformed (ratios are multiplicative). None below 2 pairs."""
    logs = [math.log(t / u) for t, u in zip(traced, untraced, strict=True) if t > 0 and u > 0]
    n = len(logs)
    if n < 2:
        return None
    mean = float(np.mean(logs))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * np.std(logs, ddof=1) / math.sqrt(n))
    return (round(math.exp(mean - half), 4), round(math.exp(mean + half), 4))


def group_order(variants: list[str], group: int) -> list[str]:
    return list(variants) if group % 2 == 0 else list(reversed(variants))


def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.median(xs)) if xs else None


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def summarize(runs: list[dict], skipped: dict[str, str]) -> dict:
    """From run rows ({"group", "variant", "rps", "requests", and for traced
    variants "cpu_s", "rss_mb", "ready_s", "captured", "drops",
    "events_seen"}) to the result. Variant "untraced" is the baseline,
    "tracer" ours, anything else a peer."""
    by: dict[str, dict[int, dict]] = {}
    for r in runs:
        by.setdefault(r["variant"], {})[r["group"]] = r
    base = by.get("untraced", {})
    untraced_rps = _median([r["rps"] for r in base.values()])

    def figures(variant: str) -> dict:
        rows = by.get(variant, {})
        groups = sorted(g for g in rows if g in base)
        rps = _median([rows[g]["rps"] for g in groups])
        requests = sum(rows[g]["requests"] for g in groups)
        cpu = sum(rows[g]["cpu_s"] for g in groups)
        captured = sum(rows[g]["captured"] for g in groups)
        return {
            "rps": _r(rps, 0),
            "ratio": _r(rps / untraced_rps if rps and untraced_rps else None, 4),
            "ratio_ci": ratio_ci([rows[g]["rps"] for g in groups],
                                 [base[g]["rps"] for g in groups]),
            "cpu_us_per_request": _r(cpu * 1e6 / requests if requests else None, 2),
            "rss_mb": _r(max((rows[g]["rss_mb"] for g in groups), default=None), 1),
            "ready_s": _r(_median([rows[g]["ready_s"] for g in groups]), 3),
            "recall": _r(captured / requests if requests else None, 4),
            "drops": int(sum(rows[g]["drops"] for g in groups)),
            "events_seen": int(sum(rows[g]["events_seen"] for g in groups)),
            "runs": len(groups),
        }

    tracer = figures("tracer")
    peer_names = sorted(v for v in by if v not in ("untraced", "tracer"))
    result_peers: dict[str, dict] = {n: figures(n) for n in peer_names}
    for name, reason in skipped.items():
        result_peers[name] = {"skipped": reason}
    return {
        "untraced_rps": _r(untraced_rps, 0),
        "traced_rps": tracer["rps"],
        "ratio": tracer["ratio"],
        "ratio_ci": tracer["ratio_ci"],
        "drops": tracer["drops"],
        "events_seen": tracer["events_seen"],
        "tracer": tracer,
        "peers": result_peers,
    }


# --- processes ----------------------------------------------------------------
def _cpu_ns(pid: int) -> int:
    """All threads of a process, from schedstat (ns)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass  # a thread that ended
    return total


def vm_hwm_mb(pid: int) -> float | None:
    """Peak RSS (MiB) of pid's current address space; None once it is gone
    (a zombie has no memory left to report)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _wait4(proc: subprocess.Popen, timeout: float,
           poll_s: float = 0.02) -> tuple[float, float] | None:
    """Reap with wait4: (user+sys seconds, peak RSS MiB), None on timeout.

    Peak RSS is VmHWM, read before each wait4 until the process is gone:
    ru_maxrss cannot serve, because exec records the RSS of the address space
    it replaces, and a child forked (or vforked) from this harness starts in
    the harness's own, with numpy and scipy in it. VmHWM is a high-water mark:
    a read misses only what grows after it, in the last poll_s before exit.
    """
    deadline = time.monotonic() + timeout
    peak = 0.0
    while True:
        hwm = vm_hwm_mb(proc.pid)
        if hwm is not None and hwm > peak:
            peak = hwm
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return ru.ru_utime + ru.ru_stime, peak
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll_s)


@dataclass
class Traced:
    """One traced variant: how to start it and read what it captured."""
    name: str
    argv: Callable[[Path], list[str]]  # output path -> argv
    env: dict[str, str]
    captured: Callable[[dict], int]  # summary -> requests seen on the server
    ready_timeout: float


def _run_traced(t: Traced, out: Path, load: Callable[[], dict]) -> dict:
    err_path = out.with_suffix(".stderr")
    t0 = time.monotonic()
    with open(err_path, "wb") as errf:
        proc = subprocess.Popen(t.argv(out), cwd=REPO, env=t.env, stdout=subprocess.DEVNULL,
                                stderr=errf, start_new_session=True)
    try:
        while True:
            if READY_LINE in err_path.read_text(errors="replace"):
                break
            if proc.poll() is not None:
                raise SaturationError(f"{t.name} exited with {proc.returncode} at start: "
                                      f"{_last_line(err_path)}")
            if time.monotonic() - t0 > t.ready_timeout:
                raise SaturationError(f"{t.name} printed no ready line in {t.ready_timeout:g} s: "
                                      f"{_last_line(err_path)}")
            time.sleep(0.02)
        ready_s = time.monotonic() - t0
        cpu_ready = _cpu_ns(proc.pid) / 1e9
        w = load()
        os.kill(proc.pid, signal.SIGINT)
        reaped = _wait4(proc, 60.0)
        if reaped is None:
            raise SaturationError(f"{t.name} did not exit within 60 s of SIGINT")
    finally:
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
    cpu_s, rss_mb = reaped
    if proc.returncode != 0:
        raise SaturationError(f"{t.name} exited with {proc.returncode}: {_last_line(err_path)}")
    try:
        summary = json.loads(Path(f"{out}.summary.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SaturationError(f"{t.name} wrote no readable {out}.summary.json: {e}") from None
    return {**w, "cpu_s": cpu_s - cpu_ready, "rss_mb": rss_mb, "ready_s": ready_s,
            "captured": int(t.captured(summary)),
            "drops": int(summary.get("events_dropped", 0)),
            "events_seen": int(summary.get("events_seen", 0)),
            "events_delivered": int(summary.get("events_delivered", 0))}


def _last_line(path: Path) -> str:
    """The program's last line, after the first compiler error if any (bcc
    prints clang's diagnostics before its own one-line failure)."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no message"
    if not lines:
        return "no message"
    first_error = next((ln.strip() for ln in lines if "error:" in ln), None)
    return lines[-1] if first_error in (None, lines[-1]) else f"{lines[-1]} ({first_error})"


class _Bench:
    def __init__(self, topo: Topology, workdir: Path):
        self.topo = topo
        self.workdir = workdir
        self.nginx: subprocess.Popen | None = None
        self.addr = topo.ADDRS["frontend"]

    def start_nginx(self) -> int:
        (self.workdir / "body").mkdir(exist_ok=True)
        conf = self.workdir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(d=self.workdir, listen=PORT))
        self.nginx = self.topo.spawn("frontend", ["nginx", "-c", str(conf), "-p",
                                                  str(self.workdir), "-e",
                                                  str(self.workdir / "error.log")])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            p = subprocess.run(["ip", "netns", "exec", self.topo.ns("client"), "curl", "-s",
                                "-o", "/dev/null", "-m", "1", f"http://{self.addr}:{PORT}/"],
                               check=False)
            if p.returncode == 0:
                return self.nginx.pid
            if self.nginx.poll() is not None:
                break
            time.sleep(0.05)
        raise SaturationError(f"nginx did not answer: {_last_line(self.workdir / 'error.log')}")

    def wrk(self, seconds: float) -> dict:
        p = subprocess.run(["ip", "netns", "exec", self.topo.ns("client"), "wrk", *WRK_ARGS,
                            f"-d{max(1, round(seconds))}s", f"http://{self.addr}:{PORT}/"],
                           capture_output=True, text=True, timeout=seconds + 30, check=False)
        if p.returncode != 0:
            raise SaturationError(f"wrk failed ({p.returncode}): {p.stderr.strip()[-200:]}")
        return parse_wrk(p.stdout)


TRACING_TYPES = {"tracepoint", "raw_tracepoint", "tracing", "kprobe", "perf_event"}


def _foreign_tracing_progs() -> int | None:
    """Tracing BPF programs loaded by others: they run on nginx's syscalls in
    every variant, untraced included, so the report says how many there were."""
    try:
        return sum(1 for p in measure.bpf_progs().values() if p.get("type") in TRACING_TYPES)
    except measure.BpfToolError:
        return None


def _check_tools() -> None:
    if os.geteuid() != 0:
        raise SaturationError("needs root (namespaces, BPF)")
    for tool, pkg in (("nginx", "nginx-light"), ("wrk", "wrk"), ("curl", "curl"),
                      ("ip", "iproute2")):
        if not shutil.which(tool):
            raise SaturationError(f"{tool} not found: apt-get install {pkg}")


def run_saturation(workdir: Path, duration: float = 5.0, pairs: int = 3,
                   peers: list[str] | None = None, *, install: bool = True,
                   time_bound_s: float = TIME_BOUND_S, progress: bool = False) -> dict:
    """Run the scenario; see the module doc for the figures. Groups stop
    being started once the next one would pass time_bound_s."""
    peers = ["bcc"] if peers is None else peers
    if duration < 1 or pairs < 1:
        raise SaturationError("duration must be >= 1 s and pairs >= 1")
    _check_tools()
    started = time.monotonic()
    env_start = {"loadavg": os.getloadavg()[0], "foreign_tracing_progs": _foreign_tracing_progs()}
    workdir = workdir.resolve()  # nginx and the tracers run elsewhere: no relative paths
    workdir.mkdir(parents=True, exist_ok=True)
    skipped: dict[str, str] = {}
    ready: dict[str, peers_mod.Peer] = {}
    for name in peers:
        try:
            ready[name] = peers_mod.prepare(name, install=install)
        except peers_mod.PeerUnavailable as e:
            skipped[name] = str(e)

    runs: list[dict] = []
    with Topology(prefix="hs") as topo:
        b = _Bench(topo, workdir)
        nginx_pid = b.start_nginx()
        frontend = topo.ns("frontend")
        tracer_env = {k: v for k, v in os.environ.items() if k != "TRACER_PURE"}
        variants: dict[str, Traced | None] = {
            "untraced": None,
            "tracer": Traced("tracer", lambda out: [sys.executable, "-m", "tracer", "run",
                                                   "--netns", frontend, "--output", str(out)],
                             tracer_env, lambda s: s["spans_emitted"], 30.0),
        }
        for name, peer in ready.items():
            variants[name] = Traced(name, lambda out, p=peer: p.command([nginx_pid], out),
                                    peer.env, lambda s: s["request_lines_received"], 90.0)
        b.wrk(1)  # warm-up: caches, nginx's first connections
        group_s = len(variants) * (duration + 3.0)  # load + start/stop, conservative
        for g in range(pairs):
            if g > 0 and time.monotonic() - started + group_s > time_bound_s:
                break
            for v in group_order(list(variants), g):
                t = variants[v]
                if t is None:
                    row = b.wrk(duration)
                else:
                    out = workdir / f"{v}-{g}.out"
                    try:
                        row = _run_traced(t, out, lambda: b.wrk(duration))
                    except SaturationError as e:
                        if v == "tracer":
                            raise
                        skipped[v] = f"failed in run: {e}"  # a peer's failure is its result
                        del variants[v]
                        runs = [r for r in runs if r["variant"] != v]
                        continue
                    finally:
                        out.unlink(missing_ok=True)  # request lines/spans: big, not needed
                runs.append({"group": g, "variant": v, **row})
                if progress:
                    print(f"  group {g} {v:9s} {row['rps']:>10.0f} req/s", file=sys.stderr)
    result = summarize(runs, skipped)
    result.update({
        "duration_s": duration, "pairs_asked": pairs,
        "pairs": len({r["group"] for r in runs if r["variant"] == "untraced"}),
        "load": f"wrk {' '.join(WRK_ARGS)} (client netns) -> nginx 2 workers (frontend netns)",
        "peer_versions": {n: p.version for n, p in ready.items() if n not in skipped},
        "runs": runs,
        # others' load and tracers: noise no pairing removes
        "environment": {"start": env_start,
                        "end": {"loadavg": os.getloadavg()[0],
                                "foreign_tracing_progs": _foreign_tracing_progs()}},
        "elapsed_s": round(time.monotonic() - started, 1),
    })
    return result


# --- report -------------------------------------------------------------------
def _fmt(x, nd: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def table(result: dict) -> str:
    """Markdown: the tracer and each peer side by side."""
    cols = ["tracer", *result["peers"]]
    figs = {"tracer": result["tracer"], **result["peers"]}
    rows = [(f"req/s (untraced {_fmt(result['untraced_rps'], 0)})", "rps", 0),
            ("saturation ratio", "ratio", 3), ("ratio 95% CI", "ratio_ci", 3),
            ("CPU µs / request", "cpu_us_per_request", 2), ("peak RSS MB", "rss_mb", 1),
            ("start-up s (to ready)", "ready_s", 2), ("recall", "recall", 4),
            ("events dropped", "drops", 0), ("events seen", "events_seen", 0)]
    lines = ["| figure | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for label, key, nd in rows:
        cells = []
        for c in cols:
            f = figs[c]
            if "skipped" in f:
                cells.append("skipped")
            elif key == "ratio_ci":
                ci = f.get(key)
                cells.append(f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "-")
            else:
                cells.append(_fmt(f.get(key), nd))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for name, f in result["peers"].items():
        if "skipped" in f:
            lines.append(f"\n{name} skipped: {f['skipped']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="writes DIR/saturation.json")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of wrk per run")
    ap.add_argument("--pairs", type=int, default=3, help="groups (untraced, tracer, peers)")
    ap.add_argument("--peer", action="append", help="peer to run (default: bcc); 'none' for none")
    ap.add_argument("--no-install", action="store_true", help="never apt-get a peer's packages")
    a = ap.parse_args(argv)
    names = ["bcc"] if a.peer is None else [p for p in a.peer if p != "none"]
    try:
        with tempfile.TemporaryDirectory(prefix="httptrace-sat-") as tmp:
            r = run_saturation(Path(tmp), a.duration, a.pairs, names,
                               install=not a.no_install, progress=True)
    except SaturationError as e:
        print(f"saturation: {e}", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "saturation.json").write_text(json.dumps(r, indent=1) + "\n")
    print(f"saturation: {r['load']}, {r['pairs']} groups of {r['duration_s']:g} s "
          f"({r['elapsed_s']:g} s)")
    print(table(r))
    for when, e in r["environment"].items():
        if e["loadavg"] > 1.0 or e["foreign_tracing_progs"]:
            print(f"noise: at {when}, load average {e['loadavg']:.1f}, "
                  f"{e['foreign_tracing_progs']} tracing BPF programs of other tools loaded")
    print(f"written: {a.out / 'saturation.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
