"""Runs: per scenario, build the topology, start the servers, then run the
plan: one A/A pair (baseline, baseline) for the noise floor, ``repeat`` pairs
of (baseline, traced) in alternating order, and one separate traced pass with
kernel.bpf_stats_enabled for BPF run time. Each run yields one row of figures.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import logging
import math
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from harness import measure, score
from harness.scenarios import Scenario, build
from netns.topology import Topology
from workloads.groundtruth import read_log

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
DEFAULT_TRACER_CMD = "{python} -m tracer run {netns_args} --output {output}"
TRACER_PLACEHOLDERS = ("python", "netns_args", "netns", "netns_inodes", "output", "pids",
                       "duration")


class HarnessError(RuntimeError):
    """The environment or the system under test keeps the bench from running
    (maps to exit code 2)."""


READY_LINE = b"tracer: tracing"  # what `python -m tracer run` prints once attached
PEER_SETTLE_S = 3.0

@dataclass
class BenchConfig:
    scenarios: list[str]
    duration: float | None = 3.0  # None: each scenario's default (3 s; soak 600 s)
    rps: float | None = None  # None: each scenario's default
    repeat: int = 6
    tracer_cmd: str = DEFAULT_TRACER_CMD
    out: Path = Path("reports")
    requests: int = 0  # exact request count per run (0: by duration)
    aa: bool = True
    bpf_pass: bool = True
    warmup: float = 1.0
    tracer_ready_timeout: float = 10.0
    progress: bool = True
    # "otlp-http" | "otlp-grpc": traced runs also export to a real receiver run
    # by the harness, so the report shows the tracer's CPU and RSS with it
    export: str | None = None
    export_url: str = ""  # set by bench() once the receiver listens

    def runs_per_scenario(self) -> int:
        return 2 * self.aa + 2 * self.repeat + self.bpf_pass


@dataclass
class RunSpec:
    label: str  # "aa" | "pair" | "bpf"
    variant: str  # "baseline" | "traced"
    pair: int
    position: int  # order inside the pair (0 first)


def plan(cfg: BenchConfig) -> list[RunSpec]:
    runs = []
    if cfg.aa:
        runs += [RunSpec("aa", "baseline", 0, 0), RunSpec("aa", "baseline", 0, 1)]
    for i in range(cfg.repeat):
        # Alternate the order so drift (warming caches, a growing SQLite file)
        # does not always favour the same variant.
        order = ("baseline", "traced") if i % 2 == 0 else ("traced", "baseline")
        runs += [RunSpec("pair", v, i, pos) for pos, v in enumerate(order)]
    if cfg.bpf_pass:
        runs.append(RunSpec("bpf", "traced", 0, 0))
    return runs


def format_tracer_cmd(template: str, **values) -> list[str]:
    """Expand placeholders ({python} {netns_args} {netns} {netns_inodes} {output}
    {pids} {duration}) and split into argv; {netns_args} expands to repeated
    ``--netns NAME`` options."""
    try:
        text = template.format(**{k: values.get(k, "") for k in TRACER_PLACEHOLDERS})
    except (KeyError, IndexError, ValueError) as e:
        raise HarnessError(f"bad --tracer-cmd template {template!r}: unknown placeholder {e}; "
                           f"use {', '.join('{' + p + '}' for p in TRACER_PLACEHOLDERS)}") from e
    argv = shlex.split(text)
    if not argv:
        raise HarnessError("--tracer-cmd is empty")
    return argv


def _interp(rows: list[dict], key: str, t: float) -> float:
    ts = [r["wall"] for r in rows if key in r]
    vs = [r[key] for r in rows if key in r]
    if not ts:
        return math.nan
    return float(np.interp(t, ts, vs))


def _tail(path: Path, n: int = 400) -> str:
    try:
        data = path.read_bytes()[-n:].decode(errors="replace").strip()
    except FileNotFoundError:
        return ""
    lines = [ln for ln in data.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _read_json(path: Path) -> dict:
    try:
        with open(path) as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


# Only what scoring reads is kept per span and ground-truth record: a 10-minute
# soak has millions of each, and whole dicts (attributes and all) took 24 GB.
_SPAN_FIELDS = ("netns", "kind", "method", "path", "status", "duration_ns", "trace_id",
                "span_id", "parent_span_id")
_GT_FIELDS = ("request_id", "service", "kind", "method", "path", "status", "start_unix_ns",
              "end_unix_ns")


def _slim_span(obj: dict) -> dict:
    out = {k: obj.get(k) for k in _SPAN_FIELDS}
    rid = score.span_request_id(obj)
    out["attributes"] = {"http.request.header.x-request-id": rid} if rid is not None else {}
    return out


def _read_spans(path: Path) -> list[dict]:
    spans = []
    try:
        with open(path, "rb") as fh:
            for line in fh:
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(obj, dict):
                    spans.append(_slim_span(obj))
    except FileNotFoundError:
        pass
    return spans


def _read_ground_truth(path: Path, tag: str) -> list[dict]:
    return [{k: r.get(k) for k in _GT_FIELDS}
            for r in read_log(path, contains=f'"{tag}-')]


def _wait_quiet(path: Path, quiet_s: float = 0.4, limit_s: float = 5.0) -> None:
    """Return once `path` has not grown for quiet_s (at most limit_s): a fixed
    sleep lost the last ground-truth record of a run on a busy machine."""
    deadline = time.monotonic() + limit_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        try:
            size = path.stat().st_size
        except OSError:
            size = 0
        now = time.monotonic()
        if size != last:
            last, since = size, now
        elif now - since >= quiet_s:
            return
        time.sleep(0.1)


def _wait_records(path: Path, tag: str, expected: int, limit_s: float = 10.0) -> int:
    """Wait until the ground truth holds `expected` records of run `tag` (the
    chain's records of every request that succeeded), at most limit_s: the
    quiet window alone lost a record once on a loaded machine (a worker
    descheduled for longer than the window). Returns the count seen."""
    needle = f'"{tag}-'.encode()
    deadline = time.monotonic() + limit_s
    while True:
        count = 0
        try:
            with open(path, "rb") as fh:
                tail = b""
                while chunk := fh.read(1 << 20):
                    buf = tail + chunk
                    count += buf.count(needle)
                    tail = buf[-(len(needle) - 1):]  # a needle split across chunks
        except OSError:
            pass
        if count >= expected or time.monotonic() >= deadline:
            return count
        time.sleep(0.2)


def _num(d: dict, key: str) -> float:
    v = d.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan


@dataclass
class ScenarioRunner:
    cfg: BenchConfig
    scenario: Scenario
    topo: Topology
    workdir: Path
    env: dict[str, str]
    run_id: str
    on_run_done: Callable[[dict], None] | None = None
    servers: dict[str, subprocess.Popen] = field(default_factory=dict)
    timeseries: list[dict] = field(default_factory=list)
    bpf_rows: list[dict] = field(default_factory=list)
    _tracer_silent: bool = False  # a tracer that loaded no BPF program once
    rps_override: float = 0.0  # overload: the rate set after calibration

    # --- servers -----------------------------------------------------------
    def start_servers(self) -> None:
        for s in self.scenario.servers:
            logf = open(self.workdir / f"{s.service}.log", "ab")  # noqa: SIM115 (closed by Popen owner)
            self.servers[s.service] = self.topo.spawn(
                s.role, list(s.argv), env={**self.env, **s.env}, cwd=REPO,
                stdout=logf, stderr=subprocess.STDOUT)
            logf.close()
        # Probe each server from the namespace that will call it.
        for s in self.scenario.servers:
            caller = "client" if s.role == "frontend" else "frontend"
            res = subprocess.run(
                ["ip", "netns", "exec", self.topo.ns(caller), sys.executable, "-m",
                 "harness.probe", f"{s.addr}:{s.port}", "--timeout", "30"],
                env=self.env, cwd=REPO, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise HarnessError(f"{self.scenario.name}: {s.service} did not start: "
                                   f"{_tail(self.workdir / f'{s.service}.log') or res.stderr.strip()}")
        self.check_servers()

    def restart_servers(self) -> None:
        for proc in self.servers.values():
            self.topo.stop(proc)
        self.servers.clear()
        self.start_servers()

    def check_servers(self) -> None:
        for name, proc in self.servers.items():
            if proc.poll() is not None:
                raise HarnessError(f"{self.scenario.name}: {name} exited with {proc.returncode}: "
                                   f"{_tail(self.workdir / f'{name}.log')}")

    # --- load --------------------------------------------------------------
    def rps(self) -> float:
        return self.rps_override or self.cfg.rps or self.scenario.default_rps

    def run_load(self, tag: str, duration: float, requests: int = 0,
                 sampler: measure.Sampler | None = None) -> tuple[dict, Path]:
        lat = self.workdir / f"{tag}.latencies.csv"
        summ = self.workdir / f"{tag}.load.json"
        argv = [sys.executable, "-m", "harness.load", "--scenario", self.scenario.name,
                "--host", self.scenario.load_host, "--rps", f"{self.rps():g}",
                "--duration", f"{duration:g}", "--tag", tag, "--latencies", str(lat),
                "--summary", str(summ), "--requests", str(requests)]
        if self.scenario.reconnect_every:
            argv += ["--reconnect-every", str(self.scenario.reconnect_every)]
        with open(self.workdir / f"{tag}.load.log", "wb") as logf:
            proc = self.topo.spawn("client", argv, env=self.env, cwd=REPO, stdout=logf,
                                   stderr=subprocess.STDOUT)
        if sampler is not None:
            sampler.add_group("loadgen", [proc.pid])
        try:
            proc.wait(timeout=duration + 60)
        except subprocess.TimeoutExpired as e:
            self.topo.stop(proc)
            raise HarnessError(f"load generator did not finish within {duration + 60:g}s") from e
        self.topo.stop(proc)
        result = _read_json(summ)
        if proc.returncode != 0 or not result:
            raise HarnessError(f"load generator failed ({proc.returncode}): "
                               f"{_tail(self.workdir / f'{tag}.load.log')}")
        return result, lat

    def warm_up(self) -> None:
        if self.cfg.warmup > 0:
            self.run_load(f"{self.scenario.short}wu{secrets.token_hex(2)}", self.cfg.warmup)

    # --- tracer ------------------------------------------------------------
    def start_tracer(self, output: Path) -> tuple[subprocess.Popen, set[int]]:
        try:
            before = set(measure.bpf_progs())
        except measure.BpfToolError:
            before = set()
        names = [self.topo.ns(r) for r in self.scenario.traced_roles]
        argv = format_tracer_cmd(
            self.cfg.tracer_cmd, python=shlex.quote(sys.executable),
            netns_args=" ".join(f"--netns {n}" for n in names), netns=",".join(names),
            netns_inodes=",".join(str(self.topo.inode(r)) for r in self.scenario.traced_roles),
            output=shlex.quote(str(output)),
            pids=",".join(str(p.pid) for p in self.servers.values()),
            duration=f"{self.cfg.duration + 60:g}")
        if self.cfg.export_url:
            argv += ["--export", self.cfg.export_url]
        if self.scenario.tracer_config and self.cfg.tracer_cmd == DEFAULT_TRACER_CMD:
            conf = output.with_suffix(".toml")
            conf.write_text(self.scenario.tracer_config)
            argv += ["--config", str(conf)]
        errf = open(output.with_suffix(".stderr"), "wb")  # noqa: SIM115
        try:
            proc = subprocess.Popen(argv, cwd=REPO, env=self.env, stdout=subprocess.DEVNULL,
                                    stderr=errf, start_new_session=True)
        except OSError as e:
            raise HarnessError(f"cannot start tracer {argv[0]!r}: {e.strerror}") from e
        finally:
            errf.close()
        return proc, before

    def wait_tracer_ready(self, proc: subprocess.Popen, before: set[int],
                          stderr: Path) -> dict[int, dict]:
        """Ready = our tracer printed its "tracing" line (printed after every
        program is attached: loaded is not enough, and attaching uprobes takes
        a while), or, for a peer that prints nothing, its BPF programs are
        loaded and their count has been stable for PEER_SETTLE_S.
        A stand-in that loads nothing costs the timeout once, then 1 s."""
        timeout = 1.0 if self._tracer_silent else self.cfg.tracer_ready_timeout
        start = time.monotonic()
        deadline = start + timeout
        last: dict[int, dict] = {}
        stable = 0
        while time.monotonic() < deadline:
            try:
                said_ready = READY_LINE in stderr.read_bytes()
            except OSError:
                said_ready = False
            if proc.poll() is not None:
                raise HarnessError(f"tracer exited with {proc.returncode} at start: "
                                   f"{_tail(stderr) or 'no message'}")
            try:
                progs = measure.owned_progs(measure.bpf_progs(), before,
                                            measure.tree_pids(proc.pid))
            except measure.BpfToolError:
                progs = {}
            if said_ready:
                return progs
            if progs and len(progs) == len(last):
                stable += 1
                if stable >= 2 and time.monotonic() - start >= PEER_SETTLE_S:
                    time.sleep(0.2)  # let the consumer reach its poll loop
                    return progs
            else:
                stable = 0
            last = progs
            time.sleep(0.15)
        if not last:
            self._tracer_silent = True
            log.warning("tracer loaded no BPF program within %.0fs; going on", timeout)
        return last

    def stop_tracer(self, proc: subprocess.Popen) -> tuple[float | None, int | None]:
        """SIGINT (the tracer flushes and exits 0); SIGKILL after 20 s.
        Returns (user+sys seconds of the whole life, exit code)."""
        if proc.poll() is not None:
            return None, proc.returncode
        try:
            os.kill(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        cpu = measure.wait_with_rusage(proc, 20.0)
        if cpu is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            cpu = measure.wait_with_rusage(proc, 5.0)
            return cpu, None
        # The tracer's own children, if any, go with it.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return cpu, proc.returncode

    # --- one run -----------------------------------------------------------
    def run_once(self, spec: RunSpec, index: int) -> dict:
        sc = self.scenario
        tag = f"{sc.short}{index:02d}{secrets.token_hex(2)}"
        traced = spec.variant == "traced"
        row: dict = {"run_id": self.run_id, "scenario": sc.name, "run": index, "tag": tag,
                     "label": spec.label, "variant": spec.variant, "pair": spec.pair,
                     "position": spec.position, "offered_rps": self.rps(),
                     "duration_s": self.cfg.duration}
        self.check_servers()
        tracer = None
        before: set[int] = set()
        output = self.workdir / f"{tag}.spans.jsonl"
        progs: dict[int, dict] = {}
        quota = None
        groups = {"workload": [p.pid for p in self.servers.values()]}
        sampler = measure.Sampler(groups, interval=0.2)
        try:
            if traced:
                tracer, before = self.start_tracer(output)
                progs = self.wait_tracer_ready(tracer, before, output.with_suffix(".stderr"))
                sampler.add_group("tracer", [tracer.pid])
                row["tracer_started_unix"] = time.time()
                if sc.tracer_cpu_quota:  # overload: the tracer held to its CPU budget
                    from harness.overload import QUOTA_AFTER_S, CpuQuota

                    time.sleep(QUOTA_AFTER_S)  # start-up (privilege drop) runs unthrottled
                    try:
                        quota = CpuQuota(f"httptrace-{tag}", sc.tracer_cpu_quota)
                        quota.add(tracer.pid)
                    except OSError as e:
                        raise HarnessError(f"cannot hold the tracer to {sc.tracer_cpu_quota:g} "
                                           f"core with a cgroup CPU quota: {e}") from e
            row["tracer_bpf_programs"] = len(progs)
            sampler.start()
            bpf_start = self._bpf_snapshot(tracer, before) if spec.label == "bpf" else None
            load, lat_path = self.run_load(tag, self.cfg.duration, self.cfg.requests, sampler)
            bpf_end = self._bpf_snapshot(tracer, before) if spec.label == "bpf" else None
            # servers finish logging (a slow handler may still be writing its
            # record); the tracer drains its buffers meanwhile
            _wait_quiet(self.workdir / "ground_truth.jsonl")
            ok = int(load.get("requests") or 0) - int(load.get("failures") or 0)
            if ok > 0:
                want = ok * len(sc.chain)
                got = _wait_records(self.workdir / "ground_truth.jsonl", tag, want)
                if got < want:
                    log.warning("run %s: %d of %d ground-truth records after waiting",
                                tag, got, want)
            sampler.mark("end")
            tracer_cpu_total = exit_code = None
            if tracer is not None:
                if quota is not None:
                    quota.release(tracer.pid)
                tracer_cpu_total, exit_code = self.stop_tracer(tracer)
            sampler.stop()
        finally:
            sampler.stop()
            if tracer is not None and tracer.poll() is None:
                self.stop_tracer(tracer)
            if quota is not None:
                row["tracer_throttled_s"] = quota.throttled_s()
                quota.close()

        t0, t1 = load.get("start_unix", math.nan), load.get("end_unix", math.nan)
        wall = max(t1 - t0, 1e-9)
        row["load_start"], row["load_end"] = t0, t1
        row.update(self._load_figures(load, lat_path, wall))
        row.update(self._resource_figures(sampler.rows, t0, t1, wall, tracer_cpu_total))
        # Invalid: the load generator was CPU-bound, so it, not the servers, set
        # the latency. Locust samples every few seconds; psutil covers the run.
        row["valid"] = not row["locust_cpu_warning"] and not row["loadgen_cpu_cores"] > 0.9
        ctx = self._load_context(lat_path)
        gt = _read_ground_truth(self.workdir / "ground_truth.jsonl", tag)
        row["gt_requests"] = score.count_ground_truth(gt, tag, (sc.chain[0].service,
                                                                sc.chain[0].kind))
        if traced:
            row["tracer_exit"] = exit_code
            row.update(self._tracer_summary(output, wall))
            spans = _read_spans(output)
            netns_services = {self.topo.inode(s.role): s.service for s in sc.servers}
            row.update(score.score_spans(gt, spans, tag=tag, netns_services=netns_services,
                                         chain=sc.chain, load_context=ctx))
            self._compress(output)
        if bpf_start is not None and bpf_end is not None:
            deltas = measure.bpf_delta(bpf_start, bpf_end)
            for d in deltas:
                self.bpf_rows.append({"run_id": self.run_id, "scenario": sc.name, "tag": tag,
                                      **d})
            total_ns = sum(d["run_time_ns"] for d in deltas)
            total_cnt = sum(d["run_cnt"] for d in deltas)
            n = max(row.get("requests") or 0, 1)
            row["bpf_ns_per_request"] = total_ns / n
            row["bpf_runs_per_request"] = total_cnt / n
            row["bpf_ns_per_run"] = total_ns / total_cnt if total_cnt else math.nan
        for r in sampler.rows:
            self.timeseries.append({"scenario": sc.name, "tag": tag, "variant": spec.variant,
                                    "label": spec.label, **r})
        if self.on_run_done:
            self.on_run_done(row)
        return row

    def _bpf_snapshot(self, tracer, before) -> dict[int, dict] | None:
        if tracer is None:
            return None
        try:
            return measure.owned_progs(measure.bpf_progs(), before, measure.tree_pids(tracer.pid))
        except measure.BpfToolError as e:
            log.warning("BPF pass: %s", e)
            return None

    def _load_figures(self, load: dict, lat_path: Path, wall: float) -> dict:
        lats = []
        with open(lat_path, newline="") as fh:
            for r in csv.DictReader(fh):
                if r["ok"] == "1":
                    lats.append(float(r["latency_us"]))
        out = {"requests": load.get("requests"), "failures": load.get("failures"),
               "load_wall_s": wall, "achieved_rps": (load.get("requests") or 0) / wall,
               "locust_users": load.get("users"),
               "locust_cpu_warning": bool(load.get("cpu_warning"))}
        out.update(score.latency_percentiles(lats))
        return out

    def _load_context(self, lat_path: Path) -> dict[str, tuple[str, str]]:
        with open(lat_path, newline="") as fh:
            return {r["request_id"]: (r["trace_id"], r["span_id"]) for r in csv.DictReader(fh)}

    def _resource_figures(self, rows: list[dict], t0: float, t1: float, wall: float,
                          tracer_cpu_total: float | None) -> dict:
        out: dict = {}
        ncpu = os.cpu_count() or 1
        for group in ("workload", "loadgen", "tracer"):
            key = f"{group}_cpu_s"
            a, b = _interp(rows, key, t0), _interp(rows, key, t1)
            out[f"{group}_cpu_cores"] = (b - a) / wall
        busy = _interp(rows, "sys_busy", t1) - _interp(rows, "sys_busy", t0)
        total = _interp(rows, "sys_total", t1) - _interp(rows, "sys_total", t0)
        out["system_cpu_cores"] = busy / total * ncpu if total > 0 else math.nan
        if tracer_cpu_total is not None:
            # Whole life from wait4 minus what it used before the load started:
            # includes draining after the load, excludes start-up.
            out["tracer_cpu_cores"] = (tracer_cpu_total - _interp(rows, "tracer_cpu_s", t0)) / wall
        rss = [(r["wall"], r["tracer_rss"]) for r in rows if "tracer_rss" in r]
        if rss:
            out["tracer_rss_peak_mb"] = max(v for _, v in rss) / 1e6
            steady = [v for t, v in rss if t0 + wall / 2 <= t <= t1]
            out["tracer_rss_steady_mb"] = (float(np.median(steady)) / 1e6 if steady
                                           else out["tracer_rss_peak_mb"])
        return out

    def _tracer_summary(self, output: Path, wall: float) -> dict:
        s = _read_json(Path(f"{output}.summary.json"))
        out = {f"tracer_{k}": _num(s, k) for k in (
            "events_seen", "events_delivered", "events_dropped", "decode_errors",
            "unparsed_bytes", "unparsed_connections", "spans_emitted", "duration_s",
            "spans_exported", "spans_export_failed", "spans_export_dropped")}
        out["tracer_summary_found"] = bool(s)
        from harness.overload import summary_extra

        out.update(summary_extra(s))  # sampling, stalls, exact accounting
        seen, dropped = out["tracer_events_seen"], out["tracer_events_dropped"]
        out["events_per_s"] = seen / wall
        out["delivered_per_s"] = out["tracer_events_delivered"] / wall
        out["dropped_per_s"] = dropped / wall
        out["drop_rate"] = dropped / seen if seen and seen > 0 else (0.0 if seen == 0 else
                                                                     math.nan)
        return out

    def _compress(self, path: Path) -> None:
        if path.exists():
            with open(path, "rb") as src, gzip.open(f"{path}.gz", "wb", compresslevel=1) as dst:
                shutil.copyfileobj(src, dst)
            path.unlink()


def preflight(cfg: BenchConfig) -> None:
    """Checks whose failure is an environment error (exit 2), before any work."""
    if os.geteuid() != 0:
        raise HarnessError("bench needs root (network namespaces, BPF): run it with sudo")
    if shutil.which("ip") is None:
        raise HarnessError("the 'ip' command is missing: apt-get install iproute2")
    for name in cfg.scenarios:
        try:
            build(name, Path("/nonexistent"))
        except KeyError as e:
            raise HarnessError(f"unknown scenario {name!r}") from e
    if (cfg.duration is not None and cfg.duration <= 0) or cfg.repeat < 0 or (cfg.rps is not None and cfg.rps <= 0):
        raise HarnessError("--duration and --rps must be > 0, --repeat >= 0")
    format_tracer_cmd(cfg.tracer_cmd, python="python", output="x")


def run_scenario(cfg: BenchConfig, name: str, workdir: Path, run_id: str,
                 progress=None) -> tuple[list[dict], list[dict], list[dict], dict]:
    """All runs of one scenario; returns (rows, timeseries, bpf_rows, scenario_info)."""
    workdir.mkdir(parents=True, exist_ok=True)
    sc = build(name, workdir)
    if cfg.duration is None:  # --duration not given: the scenario's own default
        cfg = dataclasses.replace(cfg, duration=sc.default_duration or 3.0)
    if name in ("grpc", "mixed"):
        from workloads.grpc_service.stubs import ensure_stubs

        ensure_stubs()  # once here, not racing in several server processes
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    rows: list[dict] = []
    with Topology() as topo:
        runner = ScenarioRunner(cfg, sc, topo, workdir, env, run_id,
                                on_run_done=(lambda _r: progress.update(1)) if progress else None)
        runner.start_servers()
        runner.warm_up()
        if sc.plan != "pairs":  # overload, soak: harness/overload.py
            from harness.overload import run_plan

            rows = run_plan(runner, cfg, progress)
        for i, spec in enumerate(plan(cfg) if sc.plan == "pairs" else ()):
            if progress is not None:
                progress.set_postfix_str(f"{name} {spec.label}/{spec.variant}")
            if sc.fresh_servers and i:
                runner.restart_servers()
            if spec.label == "bpf":
                try:
                    with measure.bpf_stats_enabled():
                        rows.append(runner.run_once(spec, i))
                except measure.BpfToolError as e:
                    log.warning("BPF pass skipped: %s", e)
            else:
                rows.append(runner.run_once(spec, i))
        info = {"scenario": name, "config": sc.config, "netns": topo.names,
                "traced_roles": list(sc.traced_roles), "load_host": sc.load_host,
                "offered_rps": runner.rps(),
                "tracer_loaded_bpf": not runner._tracer_silent}
        leftovers = topo  # torn down on exit below
    info["leftovers"] = leftovers.leftovers()
    return rows, runner.timeseries, runner.bpf_rows, info
