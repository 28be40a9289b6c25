"""Resource measurements: process-tree CPU and RSS (psutil), system CPU
(/proc/stat), and per-program BPF run time (bpftool + kernel.bpf_stats_enabled)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil

log = logging.getLogger(__name__)
BPF_STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@dataclass
class TreeSample:
    cpu_s: float  # user+sys seconds, summed over the tree
    rss: int  # bytes: the root's RSS plus each descendant's private memory


def sample_tree(pid: int) -> TreeSample:
    """A forked child (the tracer's broker, a gunicorn worker) shares its
    parent's pages until either writes them: summing RSS would count those
    twice, so a descendant adds only its private memory (USS)."""
    cpu = 0.0
    rss = 0
    for i, p in enumerate(_tree(pid)):
        try:
            with p.oneshot():
                t = p.cpu_times()
                cpu += t.user + t.system
                rss += p.memory_info().rss if i == 0 else p.memory_full_info().uss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # exited between listing and reading: its time is lost, as with ps
    return TreeSample(cpu, rss)


def sample_groups(groups: dict[str, list[int]]) -> dict[str, TreeSample]:
    out = {}
    for name, pids in groups.items():
        samples = [sample_tree(p) for p in pids]
        out[name] = TreeSample(sum(s.cpu_s for s in samples), sum(s.rss for s in samples))
    return out


def read_proc_stat() -> tuple[float, float]:
    """(busy, total) jiffies over all CPUs; iowait counts as idle."""
    with open("/proc/stat") as fh:
        fields = [float(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    total = sum(fields[:8])  # guest time is already included in user/nice
    return total - idle, total


@dataclass
class Sampler:
    """Samples groups of process trees on a thread; ``mark()`` records a
    named instant (e.g. load start/end) whose exact sample is kept."""

    groups: dict[str, list[int]]
    interval: float = 0.25
    rows: list[dict] = field(default_factory=list)
    marks: dict[str, dict] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    _t0: float = 0.0

    def add_group(self, name: str, pids: list[int]) -> None:
        with self._lock:
            self.groups = {**self.groups, name: pids}

    def _take(self) -> dict:
        with self._lock:
            groups = dict(self.groups)
        busy, total = read_proc_stat()
        row = {"t": time.monotonic() - self._t0, "wall": time.time(), "sys_busy": busy,
               "sys_total": total}
        for name, s in sample_groups(groups).items():
            row[f"{name}_cpu_s"] = s.cpu_s
            row[f"{name}_rss"] = s.rss
        return row

    def start(self) -> None:
        self._t0 = time.monotonic()
        self.rows.append(self._take())
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.rows.append(self._take())

    def mark(self, name: str) -> dict:
        row = self._take()
        row["mark"] = name
        self.marks[name] = row
        self.rows.append(row)
        return row

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


# --- BPF programs -------------------------------------------------------------

class BpfToolError(RuntimeError):
    pass


def bpf_progs() -> dict[int, dict]:
    """All loaded BPF programs by id, with run_time_ns/run_cnt when stats are on."""
    try:
        res = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True,
                             text=True, timeout=20, check=False)
    except FileNotFoundError as e:
        raise BpfToolError("bpftool not found: install it (apt-get install bpftool)") from e
    if res.returncode != 0:
        raise BpfToolError(f"bpftool prog show failed: {res.stderr.strip()[:200]}")
    try:
        progs = json.loads(res.stdout or "[]")
    except json.JSONDecodeError as e:
        raise BpfToolError(f"bpftool printed invalid JSON: {e}") from e
    return {p["id"]: p for p in progs}


def owned_progs(progs: dict[int, dict], before: set[int], pids: set[int]) -> dict[int, dict]:
    """Programs the tracer loaded: owned by one of ``pids`` when bpftool reports
    owners, else any program that appeared since ``before`` was taken."""
    owned = {}
    for pid_, p in progs.items():
        owners = {o.get("pid") for o in p.get("pids", [])}
        if owners:
            if owners & pids:
                owned[pid_] = p
        elif pid_ not in before:
            owned[pid_] = p
    return owned


def tree_pids(pid: int) -> set[int]:
    return {p.pid for p in _tree(pid)}


@contextlib.contextmanager
def bpf_stats_enabled() -> Iterator[None]:
    """Turn kernel.bpf_stats_enabled on for the block, restoring the old value.
    Stats cost a little per program run, so only the separate BPF pass uses it."""
    try:
        with open(BPF_STATS_SYSCTL) as fh:
            old = fh.read().strip()
        with open(BPF_STATS_SYSCTL, "w") as fh:
            fh.write("1")
    except OSError as e:
        raise BpfToolError(f"cannot enable {BPF_STATS_SYSCTL}: {e.strerror}") from e
    try:
        yield
    finally:
        with open(BPF_STATS_SYSCTL, "w") as fh:
            fh.write(old)


def bpf_delta(start: dict[int, dict], end: dict[int, dict]) -> list[dict]:
    """Per-program run count and run time between two snapshots."""
    out = []
    for pid_, p in end.items():
        s = start.get(pid_, {})
        cnt = p.get("run_cnt", 0) - s.get("run_cnt", 0)
        ns = p.get("run_time_ns", 0) - s.get("run_time_ns", 0)
        out.append({"prog_id": pid_, "name": p.get("name", "?"), "type": p.get("type", "?"),
                    "run_cnt": cnt, "run_time_ns": ns,
                    "ns_per_run": ns / cnt if cnt else None})
    return sorted(out, key=lambda r: -r["run_time_ns"])


def wait_with_rusage(proc: subprocess.Popen, timeout: float) -> float | None:
    """Reap ``proc`` with wait4 and return its user+sys seconds (its own and its
    reaped children's), which psutil cannot read once the process is gone.
    Returns None on timeout (the process is left running)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return ru.ru_utime + ru.ru_stime
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)
