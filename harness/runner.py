"""Runs: per scenario, build the topology, start the servers, then run the
scenario's plan (harness/plan.py): by default an A/A pair (two baselines)
for the noise floor, then pairs of (baseline, traced) in alternating order,
with BPF run time from kernel.bpf_stats_enabled on every run or in one
separate traced pass; then, within the plan's time bound, extra pairs while
a gated figure is still too noisy. Each run yields one row of figures.

The tracer runs in its own cgroup from exec on (harness/cgroup.py): its CPU
is read in ns, not ticks, at load start, after it has drained the load
(before the stop signal) and after it exits, so start-up, the load with its
drain, and the stop are three separate figures.
"""

from __future__ import annotations

import contextlib
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

from harness import analysis, measure, paced, score
from harness.cgroup import CpuAccount, CpuQuota, ProcAccount, UsageRecorder
from harness.fmt import number
from harness.plan import BPF_PASS, BPF_RUNS, PACED, RunPlan, RunSpec, pair
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
# Drained: the tracer's CPU over the last DRAIN_WINDOW_S stayed under
# DRAIN_IDLE_CORES (its idle polling is well below that).
DRAIN_WINDOW_S = 0.5
DRAIN_IDLE_CORES = 0.005
DRAIN_LIMIT_S = 10.0
# BPF statistics over an idle window before the load: the background the
# system-wide tracepoints see from other processes, taken out of the load's.
BPF_IDLE_S = 2.0
# The tracer's own summary keys copied into each traced row (tracer_<key>).
SUMMARY_KEYS = (
    "events_seen", "events_delivered", "events_dropped", "decode_errors", "unparsed_bytes",
    "unparsed_connections", "spans_emitted", "duration_s", "spans_exported",
    "spans_export_failed", "spans_export_dropped", "max_poll_gap_ms", "conns_sampled_out",
    "requests_sampled_out", "adaptive_sampling_engaged", "adaptive_keep", "spans_filtered",
    "spans_sampled_out", "incomplete_requests", "unpaired_responses", "connections_total",
    "connections_expired")


@dataclass
class BenchConfig:
    """What the command line asked for. None / True: each scenario's own plan
    (harness/scenarios.py) decides; aa and bpf_pass can only switch off."""

    scenarios: list[str]
    duration: float | None = None
    rps: float | None = None
    repeat: int | None = None
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
    extra: bool = True  # extra pairs for noisy gated figures, within the plan's bound
    # nginx at saturation, untraced / traced / each peer (harness/saturation.py);
    # None: only with the default scenarios
    saturation: bool | None = None
    peers: list[str] = dataclasses.field(default_factory=lambda: ["bcc"])

    def plan_for(self, sc: Scenario) -> RunPlan:
        p = sc.plan.with_overrides(rps=self.rps, duration=self.duration, repeat=self.repeat,
                                   aa=self.aa, bpf=self.bpf_pass, requests=self.requests)
        # an explicit --repeat is the number of pairs asked for: no extra ones
        extend = self.extra and self.repeat is None
        return p if extend else dataclasses.replace(p, extra_s=0.0)


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


def tracer_summary(output: Path, wall: float) -> dict:
    """The tracer's <output>.summary.json as tracer_<key> figures, with the
    exact accounting identity and rates over the load's wall time."""
    s = _read_json(Path(f"{output}.summary.json"))
    out = {f"tracer_{k}": number(s.get(k)) for k in SUMMARY_KEYS}
    out["tracer_summary_found"] = bool(s)
    out["tracer_adaptive_transitions"] = json.dumps(s.get("adaptive_transitions", []))
    seen, dropped = out["tracer_events_seen"], out["tracer_events_dropped"]
    # exact accounting: every event the kernel saw is delivered or counted dropped
    out["events_unaccounted"] = seen - out["tracer_events_delivered"] - dropped
    out["events_per_s"] = seen / wall
    out["delivered_per_s"] = out["tracer_events_delivered"] / wall
    out["dropped_per_s"] = dropped / wall
    out["drop_rate"] = dropped / seen if seen and seen > 0 else (0.0 if seen == 0 else
                                                                 math.nan)
    return out


@dataclass
class ScenarioRunner:
    cfg: BenchConfig
    scenario: Scenario
    plan: RunPlan
    topo: Topology
    workdir: Path
    env: dict[str, str]
    run_id: str
    on_run_done: Callable[[dict], None] | None = None
    servers: dict[str, subprocess.Popen] = field(default_factory=dict)
    timeseries: list[dict] = field(default_factory=list)
    bpf_rows: list[dict] = field(default_factory=list)
    _tracer_silent: bool = False  # a tracer that loaded no BPF program once

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
    def run_load(self, tag: str, rps: float, duration: float, requests: int = 0,
                 sampler: measure.Sampler | None = None) -> tuple[dict, Path]:
        lat = self.workdir / f"{tag}.latencies.csv"
        summ = self.workdir / f"{tag}.load.json"
        if self.plan.loadgen == PACED:
            try:
                argv = paced.command(self.scenario.load_host, self.scenario.load_path, rps,
                                     duration, tag, lat, requests)
            except paced.PacedError as e:
                raise HarnessError(str(e)) from e
        else:
            argv = [sys.executable, "-m", "harness.load", "--scenario", self.scenario.name,
                    "--host", self.scenario.load_host, "--rps", f"{rps:g}",
                    "--duration", f"{duration:g}", "--tag", tag, "--latencies", str(lat),
                    "--summary", str(summ), "--requests", str(requests)]
            if self.scenario.reconnect_every:
                argv += ["--reconnect-every", str(self.scenario.reconnect_every)]
        out_path = self.workdir / f"{tag}.load.log"
        with open(out_path, "wb") as logf:
            proc = self.topo.spawn("client", argv, env=self.env, cwd=REPO, stdout=logf,
                                   stderr=subprocess.STDOUT)
        if sampler is not None:
            sampler.add_group("loadgen", [proc.pid])
        limit = (requests / rps if requests else duration) + 60
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired as e:
            self.topo.stop(proc)
            raise HarnessError(f"load generator did not finish within {limit:g}s") from e
        self.topo.stop(proc)
        if self.plan.loadgen == PACED and proc.returncode == 0:
            try:
                summ.write_text(json.dumps(paced.summary(out_path.read_text(), rps)))
            except paced.PacedError as e:
                raise HarnessError(str(e)) from e
        result = _read_json(summ)
        if proc.returncode != 0 or not result:
            raise HarnessError(f"load generator failed ({proc.returncode}): "
                               f"{_tail(out_path)}")
        return result, lat

    def warm_up(self) -> None:
        if self.cfg.warmup > 0:
            self.run_load(f"{self.scenario.short}wu{secrets.token_hex(2)}",
                          self.plan.warmup_rps or self.plan.rps, self.cfg.warmup)

    # --- tracer ------------------------------------------------------------
    def start_tracer(self, output: Path, account, config: str,
                     duration: float) -> tuple[subprocess.Popen, set[int]]:
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
            duration=f"{duration + 60:g}")
        if self.cfg.export_url:
            argv += ["--export", self.cfg.export_url]
        if config and self.cfg.tracer_cmd == DEFAULT_TRACER_CMD:
            conf = output.with_suffix(".toml")
            conf.write_text(config)
            argv += ["--config", str(conf)]
        errf = open(output.with_suffix(".stderr"), "wb")  # noqa: SIM115
        try:
            proc = subprocess.Popen(account.wrap(argv), cwd=REPO, env=self.env,
                                    stdout=subprocess.DEVNULL, stderr=errf,
                                    start_new_session=True)
        except OSError as e:
            raise HarnessError(f"cannot start tracer {argv[0]!r}: {e.strerror}") from e
        finally:
            errf.close()
        account.attach(proc.pid)
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

    @staticmethod
    def wait_drained(account) -> tuple[bool, float]:
        """Wait until the tracer has drained the load: its CPU over the last
        DRAIN_WINDOW_S below DRAIN_IDLE_CORES (at most DRAIN_LIMIT_S).
        Returns (drained, seconds waited)."""
        start = time.monotonic()
        hist: list[tuple[float, float]] = []
        while True:
            now, used = time.monotonic(), account.usage_s()
            if math.isnan(used):
                return False, now - start
            hist.append((now, used))
            old = [(t, u) for t, u in hist if now - t >= DRAIN_WINDOW_S]
            if old and used - old[-1][1] <= DRAIN_IDLE_CORES * (now - old[-1][0]):
                return True, now - start
            if now - start >= DRAIN_LIMIT_S:
                return False, now - start
            time.sleep(0.1)

    def _account(self, tag: str):
        try:
            return CpuAccount(f"httptrace-{tag}")
        except OSError as e:
            log.debug("no cgroup CPU accounting (%s): per-thread schedstat instead", e)
            return ProcAccount()

    # --- one run -----------------------------------------------------------
    def run_once(self, spec: RunSpec, index: int) -> dict:
        sc, plan = self.scenario, self.plan
        rps = spec.rps or plan.rps
        duration = spec.duration or plan.duration
        config = sc.tracer_config if spec.tracer_config is None else spec.tracer_config
        tag = f"{sc.short}{index:02d}{secrets.token_hex(2)}"
        traced = spec.variant == "traced"
        bpf_measured = traced and (plan.bpf == BPF_RUNS or
                                   (plan.bpf == BPF_PASS and spec.label == "bpf"))
        row: dict = {"run_id": self.run_id, "scenario": sc.name, "run": index, "tag": tag,
                     "label": spec.label, "variant": spec.variant, "pair": spec.pair,
                     "position": spec.position, "extra": spec.extra, "offered_rps": rps,
                     "duration_s": duration, "loadgen": plan.loadgen,
                     "bpf_stats": plan.bpf == BPF_RUNS or spec.label == "bpf"}
        self.check_servers()
        tracer = account = recorder = quota = None
        before: set[int] = set()
        output = self.workdir / f"{tag}.spans.jsonl"
        progs: dict[int, dict] = {}
        bpf_idle = bpf_start = bpf_end = None
        groups = {"workload": [p.pid for p in self.servers.values()]}
        sampler = measure.Sampler(groups, interval=0.2)
        try:
            if traced:
                account = self._account(tag)
                launched = time.monotonic()
                tracer, before = self.start_tracer(output, account, config, duration)
                progs = self.wait_tracer_ready(tracer, before, output.with_suffix(".stderr"))
                row["agent_startup_s"] = time.monotonic() - launched
                row["agent_startup_cpu_s"] = account.usage_s()
                sampler.add_group("tracer", [tracer.pid])
                row["tracer_started_unix"] = time.time()
                if sc.tracer_cpu_quota:  # overload: the tracer held to its CPU budget
                    time.sleep(sc.quota_after_s)  # start-up (privilege drop) runs unthrottled
                    try:
                        quota = CpuQuota(f"httptrace-{tag}", sc.tracer_cpu_quota,
                                         account if isinstance(account, CpuAccount) else None)
                        quota.add(tracer.pid)
                    except OSError as e:
                        raise HarnessError(f"cannot hold the tracer to {sc.tracer_cpu_quota:g} "
                                           f"core with a cgroup CPU quota: {e}") from e
                recorder = UsageRecorder(account).start()
            row["tracer_bpf_programs"] = len(progs)
            sampler.start()
            if bpf_measured:  # an idle window first: the machine's background BPF time
                bpf_idle = self._bpf_snapshot(tracer, before)
                time.sleep(BPF_IDLE_S)
                bpf_start = self._bpf_snapshot(tracer, before)
            load, lat_path = self.run_load(tag, rps, duration, plan.requests, sampler)
            bpf_end = self._bpf_snapshot(tracer, before) if bpf_measured else None
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
            exit_code = None
            if tracer is not None:
                if quota is not None:
                    quota.release(tracer.pid)
                row["agent_drained"], waited = self.wait_drained(account)
                row["agent_cpu_end_s"] = account.usage_s()  # before the stop signal
                row["agent_drain_s"] = time.time() - load.get("end_unix", time.time())
                if not row["agent_drained"]:
                    log.warning("run %s: the tracer was still busy %.1f s after the load",
                                tag, waited)
            sampler.mark("end")
            if tracer is not None:
                recorder.stop()
                stopping = time.monotonic()
                life_cpu, exit_code = self.stop_tracer(tracer)
                row["agent_stop_s"] = time.monotonic() - stopping
                after = account.usage_s()
                row["agent_wait4_cpu_s"] = number(life_cpu)
                # the group also counts the threads that exited; wait4 is the fallback
                row["agent_life_cpu_s"] = after if not math.isnan(after) else number(life_cpu)
                row["agent_stop_cpu_s"] = row["agent_life_cpu_s"] - row["agent_cpu_end_s"]
            sampler.stop()
        finally:
            sampler.stop()
            if recorder is not None:
                recorder.stop()
            if tracer is not None and tracer.poll() is None:
                self.stop_tracer(tracer)
            if quota is not None:
                row["tracer_throttled_s"] = quota.throttled_s()
                quota.close()
            if account is not None:
                account.close()

        t0, t1 = load.get("start_unix", math.nan), load.get("end_unix", math.nan)
        wall = max(t1 - t0, 1e-9)
        row["load_start"], row["load_end"] = t0, t1
        row.update(self._load_figures(load, lat_path, wall))
        row.update(self._resource_figures(sampler.rows, t0, t1, wall))
        # Invalid: the load generator was CPU-bound, so it, not the servers, set
        # the latency. Locust samples every few seconds; psutil covers the run.
        row["valid"] = not row["locust_cpu_warning"] and not row["loadgen_cpu_cores"] > 0.9
        ctx = self._load_context(lat_path)
        gt = _read_ground_truth(self.workdir / "ground_truth.jsonl", tag)
        row["gt_requests"] = score.count_ground_truth(gt, tag, (sc.chain[0].service,
                                                                sc.chain[0].kind))
        if traced:
            row["tracer_exit"] = exit_code
            row.update(tracer_summary(output, wall))
            row.update(self._agent_figures(row, recorder, t0, wall))
            spans = _read_spans(output)
            netns_services = {self.topo.inode(s.role): s.service for s in sc.servers}
            row.update(score.score_spans(gt, spans, tag=tag, netns_services=netns_services,
                                         chain=sc.chain, load_context=ctx))
            self._compress(output)
        if bpf_start is not None and bpf_end is not None:
            idle = (measure.bpf_delta(bpf_idle[0], bpf_start[0])
                    if bpf_idle is not None else None)
            deltas = analysis.load_deltas(
                measure.bpf_delta(bpf_start[0], bpf_end[0]), idle, bpf_end[1] - bpf_start[1],
                bpf_start[1] - bpf_idle[1] if bpf_idle is not None else 0.0)
            for d in deltas:
                self.bpf_rows.append({"run_id": self.run_id, "scenario": sc.name, "tag": tag,
                                      **d, **analysis.syscall_of(d["name"])})
            row.update(analysis.bpf_figures(deltas, row.get("requests"),
                                            row.get("tracer_spans_emitted")))
        for r in sampler.rows:
            self.timeseries.append({"scenario": sc.name, "tag": tag, "variant": spec.variant,
                                    "label": spec.label, **r})
        if self.on_run_done:
            self.on_run_done(row)
        return row

    def _bpf_snapshot(self, tracer, before) -> tuple[dict[int, dict], float] | None:
        """The tracer's programs with their statistics, and when (monotonic)."""
        if tracer is None:
            return None
        try:
            progs = measure.owned_progs(measure.bpf_progs(), before,
                                        measure.tree_pids(tracer.pid))
        except measure.BpfToolError as e:
            log.warning("BPF run time: %s", e)
            return None
        return progs, time.monotonic()

    def _load_figures(self, load: dict, lat_path: Path, wall: float) -> dict:
        lats, wake = [], []
        with open(lat_path, newline="") as fh:
            for r in csv.DictReader(fh):
                if r["ok"] == "1":
                    lats.append(float(r["latency_us"]))
                if r.get("wake_late_us"):  # paced client: the machine's own jitter
                    wake.append(float(r["wake_late_us"]))
        out = {"requests": load.get("requests"), "failures": load.get("failures"),
               "load_wall_s": wall, "achieved_rps": (load.get("requests") or 0) / wall,
               "locust_users": load.get("users"),
               "locust_cpu_warning": bool(load.get("cpu_warning"))}
        out.update(score.latency_percentiles(lats))
        if wake:
            out["wake_late_p50_us"], out["wake_late_p99_us"] = (
                float(v) for v in np.percentile(wake, [50, 99]))
        return out

    def _load_context(self, lat_path: Path) -> dict[str, tuple[str, str]]:
        with open(lat_path, newline="") as fh:
            return {r["request_id"]: (r["trace_id"], r["span_id"]) for r in csv.DictReader(fh)}

    def _resource_figures(self, rows: list[dict], t0: float, t1: float, wall: float) -> dict:
        out: dict = {}
        ncpu = os.cpu_count() or 1
        for group in ("workload", "loadgen"):
            key = f"{group}_cpu_s"
            a, b = _interp(rows, key, t0), _interp(rows, key, t1)
            out[f"{group}_cpu_cores"] = (b - a) / wall
        busy = _interp(rows, "sys_busy", t1) - _interp(rows, "sys_busy", t0)
        total = _interp(rows, "sys_total", t1) - _interp(rows, "sys_total", t0)
        out["system_cpu_cores"] = busy / total * ncpu if total > 0 else math.nan
        rss = [(r["wall"], r["tracer_rss"]) for r in rows if "tracer_rss" in r]
        if rss:
            out["tracer_rss_peak_mb"] = max(v for _, v in rss) / 1e6
            steady = [v for t, v in rss if t0 + wall / 2 <= t <= t1]
            out["tracer_rss_steady_mb"] = (float(np.median(steady)) / 1e6 if steady
                                           else out["tracer_rss_peak_mb"])
        return out

    @staticmethod
    def _agent_figures(row: dict, recorder: UsageRecorder | None, t0: float,
                       wall: float) -> dict:
        """The tracer's CPU from load start to drained (ns-based), per request
        and per span; start-up and stop are kept apart (one-time costs)."""
        start = recorder.at(t0) if recorder is not None else math.nan
        cpu = number(row.get("agent_cpu_end_s")) - start
        requests = number(row.get("requests"))
        spans = number(row.get("tracer_spans_emitted"))
        return {"agent_cpu_s": cpu, "tracer_cpu_cores": cpu / wall,
                "agent_cpu_us_per_request": cpu * 1e6 / requests if requests > 0 else math.nan,
                "agent_cpu_us_per_span": cpu * 1e6 / spans if spans > 0 else math.nan}

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
    if (cfg.duration is not None and cfg.duration <= 0) or (
            cfg.repeat is not None and cfg.repeat < 0) or (cfg.rps is not None and cfg.rps <= 0):
        raise HarnessError("--duration and --rps must be > 0, --repeat >= 0")
    for name in cfg.scenarios:
        try:
            sc = build(name, Path("/nonexistent"))
        except KeyError as e:
            raise HarnessError(f"unknown scenario {name!r}") from e
        if cfg.plan_for(sc).loadgen == PACED:
            try:
                paced.binary()
            except paced.PacedError as e:
                raise HarnessError(str(e)) from e
    format_tracer_cmd(cfg.tracer_cmd, python="python", output="x")


# needs_more(rows) -> [(figure, more pairs needed)] for gated figures whose
# noise floor is still above a third of their budget (harness/bench.py)
NeedsMore = Callable[[list[dict]], list[tuple[str, int]]]


def extra_pairs(run: Callable[[RunSpec, int], dict], rows: list[dict],
                needs_more: NeedsMore, bound_s: float, progress=None) -> dict:
    """Add pairs while a gated figure is short and the pairs one of them
    needs (noise ~ 1/sqrt(pairs)) fit in what is left of bound_s; a figure
    that cannot be resolved in time does not hold the others back, nor
    spend the time. Returns what was done, for the report."""
    started = time.monotonic()
    pairs = [r for r in rows if r["label"] == "pair"]
    n_pairs = len({r["pair"] for r in pairs})
    # the time of one pair: the pairs run so far (their load plus start/stop)
    per_pair = sum(r.get("_elapsed_s", 0.0) for r in pairs) / max(n_pairs, 1)
    info = {"bound_s": bound_s, "extra_pairs": 0, "short": [], "stopped": ""}
    while True:
        short = needs_more(rows)
        info["short"] = short
        if not short:
            info["stopped"] = "resolved"
            break
        left = bound_s - (time.monotonic() - started)
        # a figure that needs more than the bound allows is left to be inconclusive
        if not [n for _, n in short if n * per_pair <= left]:
            info["stopped"] = (", ".join(f"{m} needs {n} more pair(s) (~{n * per_pair:.0f} s)"
                                         for m, n in short)
                               + f"; {max(left, 0):.0f} s of the {bound_s:g} s bound left")
            break
        if progress is not None:
            progress.total += 2
        for spec in pair(n_pairs, extra=True):
            rows.append(run(spec, len(rows)))
        n_pairs += 1
        info["extra_pairs"] += 1
    info["spent_s"] = round(time.monotonic() - started, 1)
    return info


def run_scenario(cfg: BenchConfig, name: str, workdir: Path, run_id: str, progress=None,
                 needs_more: NeedsMore | None = None
                 ) -> tuple[list[dict], list[dict], list[dict], dict]:
    """All runs of one scenario; returns (rows, timeseries, bpf_rows, scenario_info)."""
    workdir.mkdir(parents=True, exist_ok=True)
    sc = build(name, workdir)
    plan = cfg.plan_for(sc)
    if name in ("grpc", "mixed"):
        from workloads.grpc_service.stubs import ensure_stubs

        ensure_stubs()  # once here, not racing in several server processes
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    rows: list[dict] = []
    extra: dict = {}

    def timed(spec: RunSpec, i: int) -> dict:
        if progress is not None:
            progress.set_postfix_str(f"{name} {spec.label}/{spec.variant}")
        if sc.fresh_servers and i:
            runner.restart_servers()
        started = time.monotonic()
        row = runner.run_once(spec, i)
        row["_elapsed_s"] = time.monotonic() - started
        return row

    with Topology() as topo:
        runner = ScenarioRunner(cfg, sc, plan, topo, workdir, env, run_id,
                                on_run_done=(lambda _r: progress.update(1)) if progress else None)
        runner.start_servers()
        runner.warm_up()
        with contextlib.ExitStack() as stack:
            if plan.bpf == BPF_RUNS:
                try:
                    stack.enter_context(measure.bpf_stats_enabled())
                except measure.BpfToolError as e:
                    log.warning("BPF run time skipped: %s", e)
            if sc.run_plan is not None:  # overload, soak: harness/overload.py
                rows = sc.run_plan(runner, plan)
            else:
                for i, spec in enumerate(plan.specs()):
                    if spec.label == "bpf":
                        try:
                            with measure.bpf_stats_enabled():
                                rows.append(timed(spec, i))
                        except measure.BpfToolError as e:
                            log.warning("BPF pass skipped: %s", e)
                    else:
                        rows.append(timed(spec, i))
                if needs_more is not None and plan.extra_s > 0:
                    extra = extra_pairs(timed, rows, needs_more, plan.extra_s, progress)
        info = {"scenario": name, "config": sc.config, "netns": topo.names,
                "traced_roles": list(sc.traced_roles), "load_host": sc.load_host,
                "plan": dataclasses.asdict(plan),
                "offered_rps": max((r["offered_rps"] for r in rows), default=plan.rps),
                "bpf_stats": plan.bpf, "extra": extra,
                "tracer_loaded_bpf": not runner._tracer_silent}
        leftovers = topo  # torn down on exit below
    info["leftovers"] = leftovers.leftovers()
    for r in rows:
        r.pop("_elapsed_s", None)
    return rows, runner.timeseries, runner.bpf_rows, info
