"""What is kept: per-request filters, parent-based head sampling, and the
adaptive controller that makes the kernel sample new connections under
pressure. Configured by tracer/config.py; every skip is counted.

Per span (user space, after parsing, in Correlator._emit): `SpanPolicy`
- route filters: include/exclude globs on the path, a method list;
- service filters: process name (comm) globs, executable path globs, cgroup
  v2 path globs or ids, looked up once per (pid, comm) and cached;
- head sampling, parent-based: a traceparent's sampled flag (or B3's) is
  honoured (01 keep, 00 drop); a span with a local parent (thread or
  connection link) follows its parent's decision; a root is kept when the
  low 56 bits of its trace id fall below ratio * 2**56 (the W3C level-2
  random part), so every process of a trace decides the same way.
Each span lands in exactly one of: emitted, spans_filtered (first failing
filter, with a per-reason counter), spans_sampled_out.

Per connection (kernel, sock.bpf.c): `AdaptiveController` turns the ring
fill, the agent's own CPU and new ring drops into the share of new
connections the kernel samples out (map "sampling"); the kernel counts those
connections and their requests (CTR_CONNS_SAMPLED, CTR_REQS_SAMPLED).
`AdaptiveSampling` is the agent's add-on that ticks it (tracer/addons.py).
"""

from __future__ import annotations

import fnmatch
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .addons import Addon
from .events import SAMPLE_SCALE, Counter

_RANDOM_BITS = 56  # W3C trace context level 2: the rightmost 7 bytes are random
_MAX_DEPTH = 64  # parents looked at for an inherited decision (chains are short)


# ---- head sampling -----------------------------------------------------------------

def ratio_threshold(ratio: float) -> int:
    return round(ratio * (1 << _RANDOM_BITS))


def trace_id_kept(trace_id: str, threshold: int) -> bool:
    """The deterministic root decision: the same in every process of a trace."""
    try:
        return int(trace_id[-14:], 16) < threshold
    except ValueError:
        return threshold > 0


# ---- filters -----------------------------------------------------------------------

def _globs(patterns: list[str]) -> re.Pattern | None:
    """One compiled regex for a list of fnmatch globs (case-sensitive)."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


@dataclass
class FilterSpec:
    """Per-request filters; empty lists mean "everything"."""

    include_paths: list[str] = field(default_factory=list)
    exclude_paths: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    processes: list[str] = field(default_factory=list)  # comm globs
    executables: list[str] = field(default_factory=list)  # exe path globs
    cgroups: list[str | int] = field(default_factory=list)  # cgroup v2 path globs or ids

    def active(self) -> bool:
        return any((self.include_paths, self.exclude_paths, self.methods, self.processes,
                    self.executables, self.cgroups))


def _read_exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def _read_cgroup(pid: int) -> str:
    """The cgroup v2 path ("0::/system.slice/x.service" -> "/system.slice/x.service")."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return ""


CGROUP_ROOTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")


def _cgroup2_root() -> str:
    for root in CGROUP_ROOTS:
        if os.path.exists(root + "/cgroup.procs"):
            return root
    return ""


def _cgroup_id(path: str) -> int:
    root = _cgroup2_root()
    try:
        return os.stat(root + path).st_ino if root else 0
    except OSError:
        return 0


def _cgroup_path(cg_id: int, limit: int = 100_000) -> str:
    """The path of the cgroup v2 whose id (inode) is cg_id: a bounded walk."""
    root = _cgroup2_root()
    if not root:
        return ""
    seen = 0
    for d, _, _ in os.walk(root):
        seen += 1
        if seen > limit:
            break
        try:
            if os.stat(d).st_ino == cg_id:
                return d[len(root):] or "/"
        except OSError:
            continue
    return ""


class ProcInfo:
    """Executable and cgroup per (pid, comm), read from /proc once and cached
    (an exec changes comm, so the key follows it; bounded)."""

    MAX = 4096

    def __init__(self, read_exe: Callable[[int], str] = _read_exe,
                 read_cgroup: Callable[[int], str] = _read_cgroup,
                 cgroup_id: Callable[[str], int] = _cgroup_id,
                 cgroup_path: Callable[[int], str] = _cgroup_path) -> None:
        self._read_exe = read_exe
        self._read_cgroup = read_cgroup
        self._cgroup_id = cgroup_id
        self._cgroup_path = cgroup_path
        self._cache: dict[tuple[int, str], tuple[str, str, int]] = {}
        self._paths: dict[int, str] = {}  # cgroup id -> path (walks are not cheap)
        self.lookups = 0  # /proc reads (cache misses)

    def get(self, pid: int, comm: str) -> tuple[str, str, int]:
        key = (pid, comm)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        self.lookups += 1
        cg = self._read_cgroup(pid)
        val = (self._read_exe(pid), cg, self._cgroup_id(cg) if cg else 0)
        if len(self._cache) >= self.MAX:
            self._cache.clear()
        self._cache[key] = val
        return val

    def cgroup_path(self, cg_id: int) -> str:
        """For a process gone from /proc: the path of the cgroup id the kernel
        reported with its connection."""
        path = self._paths.get(cg_id)
        if path is None:
            self.lookups += 1
            path = self._cgroup_path(cg_id)
            if len(self._paths) >= self.MAX:
                self._paths.clear()
            self._paths[cg_id] = path
        return path


# reason -> Stats counter
REASONS = {
    "path": "spans_filtered_path",
    "method": "spans_filtered_method",
    "process": "spans_filtered_process",
    "exe": "spans_filtered_exe",
    "cgroup": "spans_filtered_cgroup",
}


class SpanPolicy:
    """Filters, then head sampling, for each finished span (see module doc).
    Called by Correlator._emit with the span's context; False: not emitted
    (counted here)."""

    def __init__(self, spec: FilterSpec | None, ratio: float | None, stats,
                 proc: ProcInfo | None = None) -> None:
        spec = spec or FilterSpec()
        self.spec = spec
        self.stats = stats
        self.proc = proc or ProcInfo()
        self._incl = _globs(spec.include_paths)
        self._excl = _globs(spec.exclude_paths)
        self._methods = frozenset(m.upper() for m in spec.methods) or None
        self._comm = _globs(spec.processes)
        self._exe = _globs(spec.executables)
        cg_ids = {c for c in spec.cgroups if isinstance(c, int)}
        cg_globs = [c for c in spec.cgroups if isinstance(c, str)]
        self._cg = (cg_ids, _globs(cg_globs)) if spec.cgroups else None
        self._filters = spec.active()
        self.ratio = ratio
        # None: no head sampling at all (every span kept, flags ignored)
        self._threshold = None if ratio is None else ratio_threshold(ratio)
        # the service verdict per (pid, comm): /proc is read once per process
        self._service: dict[tuple[int, str], str] = {}
        # sees the spans head sampling drops (the RED metrics: rates stay whole)
        self.on_sampled_out: Callable | None = None

    # -- filters --
    def _service_reason(self, pid: int, comm: str, span_cg: int) -> str:
        key = (pid, comm)
        r = self._service.get(key)
        if r is not None:
            return r
        r = ""
        if self._comm is not None and not self._comm.match(comm):
            r = "process"
        elif self._exe is not None or self._cg is not None:
            exe, cg_path, cg_id = self.proc.get(pid, comm)
            if self._exe is not None and not self._exe.match(exe):
                r = "exe"
            elif self._cg is not None:
                ids, globs = self._cg
                if not cg_id and span_cg:  # exited already: the kernel's id of its cgroup
                    cg_id = span_cg
                    cg_path = self.proc.cgroup_path(span_cg) if globs is not None else ""
                if not (cg_id in ids or (globs is not None and cg_path and globs.match(cg_path))):
                    r = "cgroup"
        if len(self._service) >= ProcInfo.MAX:
            self._service.clear()
        self._service[key] = r
        return r

    def reason(self, span) -> str:
        """The first filter the span fails, or ''."""
        path = span.path
        if self._incl is not None and not self._incl.match(path):
            return "path"
        if self._excl is not None and self._excl.match(path):
            return "path"
        if self._methods is not None and span.method.upper() not in self._methods:
            return "method"
        if self._comm is not None or self._exe is not None or self._cg is not None:
            return self._service_reason(span.pid, span.comm, span.cgroup_id)
        return ""

    # -- head sampling --
    def sampled(self, ctx) -> bool:
        """Parent-based: the header's flag, else the local parent's decision,
        else the trace id ratio. Cached on each context on the way."""
        if ctx.sampled is not None:
            return ctx.sampled
        if ctx.parent is None:  # the common case: a root, or a header decides
            flag = ctx.flag
            ctx.sampled = decision = (flag if flag is not None
                                      else trace_id_kept(ctx.trace_id, self._threshold))
            return decision
        chain = []
        c = ctx
        decision = None
        for _ in range(_MAX_DEPTH):
            if c is None:
                break
            if c.sampled is not None:
                decision = c.sampled
                break
            chain.append(c)
            if c.flag is not None:
                decision = c.flag
                break
            c = c.parent
        if decision is None:
            decision = trace_id_kept(ctx.trace_id, self._threshold)
        for c in chain:
            c.sampled = decision
        return decision

    def __call__(self, ctx, span) -> bool:
        stats = self.stats
        r = self.reason(span) if self._filters else ""
        if r:
            stats.spans_filtered += 1
            name = REASONS[r]
            setattr(stats, name, getattr(stats, name) + 1)
            return False
        if self._threshold is not None and not self.sampled(ctx):
            stats.spans_sampled_out += 1
            if ctx.sampled is False and ctx.flag is False:
                stats.spans_sampled_out_by_parent += 1
            if self.on_sampled_out is not None:
                self.on_sampled_out(span)
            return False
        return True


# ---- adaptive sampling ---------------------------------------------------------------

@dataclass
class AdaptiveSpec:
    enabled: bool = False
    ring_fill: float = 0.5  # pressure: the ring fuller than this share at a poll
    cpu_budget: float = 0.25  # pressure: the agent's CPU above this share of one core
    min_keep: float = 0.01  # the share of new connections always kept
    relax_after: int = 3  # ticks without pressure before the keep share doubles


class AdaptiveController:
    """keep: the share of new connections traced (1.0: all). Under pressure it
    shrinks at once, in proportion to the excess (at least halved on ring
    drops), down to min_keep; it doubles back only after `relax_after`
    quiet ticks, where quiet means well under both thresholds (CPU under 80%
    of the budget, ring under half the threshold): the hysteresis that keeps
    it from flapping."""

    MAX_TRANSITIONS = 1000

    def __init__(self, spec: AdaptiveSpec) -> None:
        self.spec = spec
        self.keep = 1.0
        self.engaged = 0  # times it left keep == 1.0
        self.transitions: list[tuple[float, float]] = []  # (t since start, keep)
        self.last_reason = ""
        self._quiet = 0

    def carry_over(self, old: AdaptiveController) -> None:
        """A reload with new settings: the history and the current share go on."""
        self.engaged = old.engaged
        self.transitions = old.transitions
        self.keep = max(self.spec.min_keep, old.keep)

    def drop_per_scale(self) -> int:
        """The kernel's value: connections sampled out per SAMPLE_SCALE."""
        return SAMPLE_SCALE - min(SAMPLE_SCALE, round(self.keep * SAMPLE_SCALE))

    def tick(self, t: float, cpu: float, fill: float, new_drops: int) -> bool:
        """One observation per housekeeping tick: cpu in cores, fill the
        largest ring fill seen (0..1), new_drops ring reservations failed
        since the last tick. Returns True if keep changed."""
        s = self.spec
        factor = 1.0
        why = []
        if cpu > s.cpu_budget:
            factor = min(factor, s.cpu_budget / cpu)
            why.append(f"cpu {cpu:.3f} > budget {s.cpu_budget:g}")
        if fill > s.ring_fill:
            factor = min(factor, s.ring_fill / fill)
            why.append(f"ring fill {fill:.3g} > {s.ring_fill:g}")
        if new_drops:
            factor = min(factor, 0.5)
            why.append(f"{new_drops} ring drops")
        old = self.keep
        if why:
            self._quiet = 0
            self.keep = max(s.min_keep, old * min(factor, 0.9))
            self.last_reason = ", ".join(why)
        elif cpu < 0.8 * s.cpu_budget and fill < 0.5 * s.ring_fill and old < 1.0:
            self._quiet += 1
            if self._quiet >= s.relax_after:
                self._quiet = 0
                self.keep = min(1.0, old * 2)
                self.last_reason = "pressure fell"
        else:
            self._quiet = 0
        if self.keep == old:
            return False
        if old == 1.0:
            self.engaged += 1
        if len(self.transitions) < self.MAX_TRANSITIONS:
            self.transitions.append((round(t, 3), round(self.keep, 6)))
        return True


class AdaptiveSampling(Addon):
    """The add-on (tracer/addons.py), always present: each housekeeping tick
    gives the controller the agent's CPU (all its threads), the fullest the
    ring was at a poll, and new ring drops since the last tick, and writes a
    new share to the kernel. The controller may come or go on reload."""

    name = "adaptive"

    def __init__(self, controller: AdaptiveController | None = None,
                 on_change: Callable[[AdaptiveController], None] | None = None) -> None:
        self.controller = controller
        self.on_change = on_change  # told of every change of the keep share
        self.kernel = None
        self._at = self._cpu = 0.0
        self._drops = 0

    def start(self, kernel, table) -> None:
        self.kernel = kernel
        self.begin()

    def begin(self) -> None:
        # the CPU of start-up (TLS discovery, exporters, privilege drop) is
        # not load: the first tick measures from the start of the run loop
        self._at, self._cpu = time.monotonic(), time.process_time()

    def tick(self, now_ns: int) -> None:
        k = self.kernel
        now = now_ns / 1e9
        fill = k.take_fill_max()
        cpu_now = time.process_time()
        dt = now - self._at
        cpu = (cpu_now - self._cpu) / dt if dt > 0 else 0.0
        self._at, self._cpu = now, cpu_now
        drops = k.value(Counter.CTR_DROPPED)
        new_drops, self._drops = drops - self._drops, drops
        ctl = self.controller
        if ctl is None:
            return
        if ctl.tick(time.time() - k.started_at, cpu, fill / k.ring_bytes, new_drops):
            k.set_sampling(ctl.drop_per_scale())
            if self.on_change:
                self.on_change(ctl)

    def reconfigure(self, controller: AdaptiveController | None) -> None:
        """SIGHUP: the controller keeps its state when its settings are unchanged."""
        old = self.controller
        if controller is not None and old is not None:
            if controller.spec == old.spec:
                return
            controller.carry_over(old)
        self.controller = controller
        if self.kernel is not None:
            self.kernel.set_sampling(controller.drop_per_scale() if controller else 0)

    def counters(self) -> dict:
        ctl = self.controller
        return {"adaptive_sampling_engaged": ctl.engaged if ctl else 0,
                "adaptive_keep": ctl.keep if ctl else 1.0,
                "adaptive_transitions": list(ctl.transitions) if ctl else []}
