"""The tracing agent: loads sock.bpf.o (and tls.bpf.o on its maps), applies filters, drains the ring buffer
into the connection table, and hands spans to a sink.

    tracer = Tracer(Filters(ports=[8080]), sink=writer)
    tracer.start()                  # LoaderError subclasses on failure
    tracer.run(duration=10, stop=event)
    summary = tracer.stop()         # drains, closes, reads kernel counters

One thread does everything: poll, decode, reassemble, parse, export. The BPF
side batches wake-ups, so a poll returns many records at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import core, events, inject, loader, probe, tls
from .conn import ConnectionTable, kernel_capture_hook
from .sampling import AdaptiveController
from .stats import Stats

log = logging.getLogger("tracer.agent")

IDLE_EXPIRY_NS = 300 * 1_000_000_000  # connections with no event for 5 min are dropped
HOUSEKEEPING_S = 1.0
# Records per consume call: under sustained overload the ring never empties, and
# an unbounded drain would starve housekeeping (expiry, counters, sampling).
# Small enough that a turn of the loop stays short even when the agent is held
# to a CPU quota (overload scenario: 8192 records took seconds of wall time).
CONSUME_BATCH = 1024


@dataclass
class Filters:
    """In-kernel filters; empty lists mean "everything"."""

    pids: list[int] = field(default_factory=list)
    netns: list[int] = field(default_factory=list)  # netns inodes
    cgroups: list[int] = field(default_factory=list)  # cgroup v2 ids
    ports: list[int] = field(default_factory=list)
    comms: list[str] = field(default_factory=list)  # exact process (thread) names


def comm_key(comm: str) -> bytes:
    """A filter_comms key: the name as the kernel stores it (at most 15 bytes, NUL-padded)."""
    return comm.encode()[:events.TASK_COMM_LEN - 1].ljust(events.TASK_COMM_LEN, b"\0")


def clock_offset_ns() -> int:
    """Offset from bpf_ktime_get_ns (CLOCK_MONOTONIC) to the wall clock.

    Bracket a monotonic read with two wall-clock reads and keep the tightest
    of a few tries, so the offset error is a few hundred ns at most.
    """
    best = None
    for _ in range(16):
        w0 = time.time_ns()
        m = time.monotonic_ns()
        w1 = time.time_ns()
        if best is None or w1 - w0 < best[0]:
            best = (w1 - w0, (w0 + w1) // 2 - m)
    return best[1]


def descendants(pid: int) -> list[int]:
    """Living descendants of pid, from /proc (new ones are followed in the kernel)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), ()):
            out.append(c)
            todo.append(c)
    return out


EXIT_PROGRAMS = ("io_exit", "io_exit_bounded")  # sock.bpf.c: with bpf_loop, without


def load_sock(obj: loader.BPFObject, exit_prog: str | None = None) -> str:
    """Load an opened sock.bpf.o: the exit program this kernel verifies
    cheapest (or `exit_prog`), put where the sys_exit stubs tail-call it.
    Returns its name."""
    if exit_prog is None:
        exit_prog = EXIT_PROGRAMS[0] if probe.bpf_loop() else EXIT_PROGRAMS[1]
    for prog in EXIT_PROGRAMS:
        obj.set_autoload(prog, prog == exit_prog)
    obj.load()
    obj.map("exit_tail").update(0, obj.prog_fd(exit_prog))
    return exit_prog


class Tracer:
    def __init__(self, filters: Filters | None = None, *, sink: Callable | None = None,
                 capture_bytes: int = 512, ring_bytes: int = 8 << 20,
                 stats: Stats | None = None, tls_plaintext: bool = True,
                 inject_headers: bool = False, inject_sample_rate: float = 1.0,
                 policy: Callable | None = None, adaptive: AdaptiveController | None = None,
                 on_sampling: Callable[[AdaptiveController], None] | None = None,
                 span_stacks: bool = False):
        if not 16 <= capture_bytes <= events.MAX_PAYLOAD:
            raise ValueError(f"capture size must be 16..{events.MAX_PAYLOAD} bytes")
        self.filters = filters or Filters()
        self.sink = sink or (lambda span: None)
        # --span-stacks (tracer/span_stacks.py): frames filled in just before the sink
        self.span_stacks = None
        if span_stacks:
            from .span_stacks import SpanStacks

            self.span_stacks = SpanStacks()
            self.sink = self.span_stacks.wrap(self.sink)
        self.capture_bytes = capture_bytes
        self.ring_bytes = ring_bytes
        # the BPF side wakes the agent only when this much is unread (and at
        # twice it); below that the poll timeout drains the ring
        self.wakeup_bytes = ring_bytes // 4
        self.stats = stats or Stats()
        self.clock_offset_ns = clock_offset_ns()
        self.table = ConnectionTable(self.sink, self.stats, clock_offset_ns=self.clock_offset_ns,
                                     capture_bytes=capture_bytes)
        self.obj: loader.BPFObject | None = None
        self.tls_plaintext = tls_plaintext
        self.tls: tls.TlsProbes | None = None
        self.tls_unavailable = ""  # why TLS plaintext is not traced, if it is not
        self.tls_libraries: list[str] = []  # files attached to, kept after stop()
        self.tls_unreadable = 0  # processes TLS discovery could not inspect, kept after stop()
        self.rb: loader.RingBuffer | None = None
        self.attached: list[str] = []
        self.skipped: dict[str, str] = {}  # program -> why it could not attach
        self.started_at = 0.0
        self.stopped_at = 0.0
        self._kernel = {}
        self._handler = self._make_handler()
        self._last_poll = 0.0
        self.max_poll_gap = 0.0  # longest time between two consume calls (s): stalls
        # --inject (tracer/inject.py): opt-in traceparent injection
        self.inject_headers = inject_headers
        self.inject_sample_rate = inject_sample_rate
        self.injector: inject.Injector | None = None
        self.inject_unavailable = ""  # why injection is off although asked for
        self._inject_counters: dict[str, int] = {}
        # filters and head sampling (tracer/sampling.py), swapped on reload
        self.table.correlator.policy = policy
        # adaptive sampling: the kernel samples new connections under pressure
        self.adaptive = adaptive
        self.on_sampling = on_sampling  # told of every change of the keep share
        self._fill_max = 0  # largest ring fill (bytes) seen at a poll since the last tick
        self._adapt_at = self._adapt_cpu = 0.0
        self._adapt_drops = 0
        self.core = core.info()
        if self.core["stale"] or (self.core["core"] != "compiled"
                                  and not core.pure_requested()):
            log.warning("per-event core: %s", self.core["reason"])  # not built, or stale
        elif self.core["core"] != "compiled":
            log.info("per-event core: %s", self.core["reason"])  # asked for

    def _make_handler(self):
        """What each decoded event goes to (RingBuffer.consume_events decodes
        in place and counts decode errors in self.stats)."""
        return self.table.handle

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        loader.ensure_tracefs()
        obj = loader.BPFObject.open(loader.object_path("sock"))
        try:
            obj.set_rodata(capture_bytes=self.capture_bytes, self_tgid=os.getpid(),
                           wakeup_bytes=self.wakeup_bytes)
            obj.set_max_entries("events", self.ring_bytes)
            if self.span_stacks:
                obj.set_rodata(span_stacks=1)
            else:  # off: no stack map memory either
                obj.set_max_entries("user_stacks", 1)
            self.exit_program = load_sock(obj)
            if self.span_stacks:
                self.span_stacks.attach(obj.map("user_stacks"))
            self._apply_filters(obj)
            for prog in obj.programs:
                if not obj.attachable(prog):
                    continue
                try:
                    obj.attach(prog)
                except loader.AttachError as e:
                    # e.g. a syscall this kernel lacks: trace the rest, say what is missing
                    self.skipped[prog] = str(e)
                    log.warning("%s; continuing without it", e)
            self.attached = obj.attached
            if not self.attached:
                raise loader.AttachError("no program could be attached", program="*")
            self.rb = obj.ring_buffer("events")
            self._adapt_at, self._adapt_cpu = time.monotonic(), time.process_time()
            # an h2 connection found mid-stream gets the larger capture too
            self.table.h2_capture = kernel_capture_hook(obj.map("conns"))
            if self.tls_plaintext:
                self._start_tls(obj)
            if self.inject_headers:
                self._start_inject(obj)
        except BaseException:
            if self.injector:
                self.injector.close()
                self.injector = None
            if self.tls:
                self.tls.close()
                self.tls = None
            obj.close()
            raise
        self.obj = obj
        self.started_at = time.time()
        self._last_poll = time.monotonic()

    def _start_tls(self, obj: loader.BPFObject) -> None:
        """TLS plaintext is an extra: without uprobes (or tls.bpf.o) say so in
        one line and trace the rest; ciphertext is then parsed like any bytes."""
        try:
            self.tls = tls.TlsProbes.load(obj, capture_bytes=self.capture_bytes,
                                          wakeup_bytes=self.wakeup_bytes,
                                          self_tgid=os.getpid())
            self.tls.start()
        except loader.LoaderError as e:
            if self.tls:
                self.tls.close()
                self.tls = None
            self.tls_unavailable = str(e)
            log.warning("TLS plaintext not traced (%s); tracing the rest", e)

    def _start_inject(self, obj: loader.BPFObject) -> None:
        """Injection is an extra: without sockops/sk_msg (or when it cannot
        attach) say why in one line and correlate without it."""
        self.inject_unavailable = inject.unavailable()
        if self.inject_unavailable:
            return
        try:
            self.injector = inject.Injector.load(obj, self_tgid=os.getpid(),
                                                 sample_rate=self.inject_sample_rate)
            self.injector.start()
        except loader.LoaderError as e:
            self.injector = None  # start() closed it
            self.inject_unavailable = str(e)
            return
        self.table.correlator.injected = self.injector.take

    def _apply_filters(self, obj: loader.BPFObject) -> None:
        """Fill the filter maps; on reload also remove what is no longer
        wanted (the maps are updated in place, the probes stay attached)."""
        f = self.filters
        cfg = events.FilterConfigC(bool(f.pids), bool(f.netns), bool(f.cgroups), bool(f.ports),
                                   bool(f.comms))
        one = b"\x01"
        pids = set(f.pids)
        for pid in f.pids:
            pids.update(descendants(pid))
        for name, wanted in (("filter_pids", pids), ("filter_netns", set(f.netns)),
                             ("filter_cgroups", set(f.cgroups)), ("filter_ports", set(f.ports)),
                             ("filter_comms", {comm_key(c) for c in f.comms})):
            m = obj.map(name)
            for key in list(m.keys()):
                if (key if name == "filter_comms" else int.from_bytes(key, "little")) not in wanted:
                    m.delete(key)
            for k in wanted:
                m.update(k, one)
        obj.map("filter_cfg").update(0, bytes(cfg))

    def reconfigure(self, filters: Filters, policy: Callable | None,
                    adaptive: AdaptiveController | None) -> None:
        """SIGHUP: new filters and sampling without detaching anything. The
        adaptive controller keeps its state when its settings are unchanged."""
        self.filters = filters
        if self.obj:
            self._apply_filters(self.obj)
        self.table.correlator.policy = policy
        old = self.adaptive
        if adaptive is not None and old is not None:
            if adaptive.spec == old.spec:
                return
            adaptive.carry_over(old)
        self.adaptive = adaptive
        if self.obj:
            self.obj.map("sampling").update(0, adaptive.drop_per_scale() if adaptive else 0)

    def poll_once(self, timeout_ms: int = 100) -> int:
        rb = self.rb
        rb.poll(timeout_ms)
        fill = rb.available()  # pressure, for adaptive sampling: two loads from the mmap
        if fill > self._fill_max:
            self._fill_max = fill
        if self.injector:
            self.injector.drain()  # injections precede the writes that carry them
        n = rb.consume_events(self._handler, self.stats, CONSUME_BATCH)
        self.stats.events_delivered += n
        self._polled()
        return n

    def _polled(self) -> None:
        # from the end of start() on: what runs between start() and run() counts too
        now = time.monotonic()
        if self._last_poll and now - self._last_poll > self.max_poll_gap:
            self.max_poll_gap = now - self._last_poll
        self._last_poll = now

    def run(self, duration: float | None = None, stop: threading.Event | None = None,
            on_tick: Callable[[], None] | None = None) -> None:
        """Poll until `duration` seconds pass or `stop` is set."""
        deadline = time.monotonic() + duration if duration else None
        next_house = time.monotonic() + HOUSEKEEPING_S
        # the CPU of start-up (TLS discovery, exporters, privilege drop) is not
        # load: the first adaptive tick measures from here
        self._adapt_at, self._adapt_cpu = time.monotonic(), time.process_time()
        while not (stop and stop.is_set()):
            now = time.monotonic()
            if deadline and now >= deadline:
                break
            self.poll_once(100)
            if now >= next_house:
                next_house = now + HOUSEKEEPING_S
                now_ns = time.monotonic_ns()
                self.table.expire(now_ns, IDLE_EXPIRY_NS)
                self.table.correlator.flush(now_ns)
                self.read_kernel_counters()
                self._adapt(now)
                if self.tls:
                    self.tls.tick()
                if self.injector:
                    self.injector.tick(now_ns)
                if on_tick:
                    on_tick()

    def _adapt(self, now: float) -> None:
        """One adaptive-sampling tick: the agent's CPU (all its threads), the
        fullest the ring was at a poll, and new ring drops since the last one."""
        fill, self._fill_max = self._fill_max, 0
        cpu_now = time.process_time()
        dt = now - self._adapt_at
        cpu = (cpu_now - self._adapt_cpu) / dt if dt > 0 else 0.0
        self._adapt_at, self._adapt_cpu = now, cpu_now
        drops = self.stats.events_dropped
        new_drops, self._adapt_drops = drops - self._adapt_drops, drops
        ctl = self.adaptive
        if ctl is None or not self.obj:
            return
        if ctl.tick(time.time() - self.started_at, cpu, fill / self.ring_bytes, new_drops):
            self.obj.map("sampling").update(0, ctl.drop_per_scale())
            if self.on_sampling:
                self.on_sampling(ctl)

    def read_kernel_counters(self) -> dict[str, int]:
        if not self.obj:
            return self._kernel
        m = self.obj.map("counters")
        C = events.Counter
        k = {
            "events": m.percpu_sum(C.CTR_EVENTS),
            "dropped": m.percpu_sum(C.CTR_DROPPED),
            "read_faults": m.percpu_sum(C.CTR_READ_FAULT),
            "conn_table_full": m.percpu_sum(C.CTR_CONN_FULL),
            "tls_skipped_bytes": m.percpu_sum(C.CTR_TLS_SKIPPED),
            "tls_no_fd": m.percpu_sum(C.CTR_TLS_NO_FD),
            "tls_events": m.percpu_sum(C.CTR_TLS_EVENTS),
            "tls_hello": m.percpu_sum(C.CTR_TLS_HELLO),
            "conns_sampled_out": m.percpu_sum(C.CTR_CONNS_SAMPLED),
            "requests_sampled_out": m.percpu_sum(C.CTR_REQS_SAMPLED),
            "span_stack_failed": m.percpu_sum(C.CTR_STACK_FAILED),
            "exit_unreached": m.percpu_sum(C.CTR_EXIT_UNREACHED),
        }
        self._kernel = k
        self.stats.events_seen = k["events"]
        self.stats.events_dropped = k["dropped"]
        return k

    def stop(self) -> dict:
        """Detach, drain what is left, close connections, return the summary."""
        self._polled()  # a run loop that never polled shows here
        if self.tls:
            self.tls.detach()  # before the syscall side: no SSL call left half-seen
        if self.injector:
            self.injector.detach()  # stop writing headers; its ring is still read
        if self.obj:
            self.obj.detach_all()
            # the kernel side is quiet now: everything submitted is in the ring
            n = self.rb.consume_events(self._handler, self.stats)
            self.stats.events_delivered += n
            self.read_kernel_counters()
            if self.injector:
                self.injector.drain()
            self.table.close_all()
            self.table.correlator.close()
            if self.tls:
                self.tls_libraries = sorted(self.tls.libraries.values())
                self.tls_unreadable = self.tls.unreadable
                self.tls.close()
                self.tls = None
            if self.injector:
                self._inject_counters = self.injector.counters()
                self.injector.close()
                self.injector = None
            self.obj.close()
            self.obj = None
            self.rb = None
        self.stopped_at = self.stopped_at or time.time()
        return self.summary()

    def summary(self) -> dict:
        s = self.stats.as_dict()
        dur = max((self.stopped_at or time.time()) - self.started_at, 1e-9)
        s.update({
            "duration_s": round(dur, 3),
            "events_per_s": round(s["events_delivered"] / dur, 1),
            "max_poll_gap_ms": round(self.max_poll_gap * 1000, 1),
            "read_faults": self._kernel.get("read_faults", 0),
            "conn_table_full": self._kernel.get("conn_table_full", 0),
            "exit_unreached": self._kernel.get("exit_unreached", 0),
            "capture_bytes": self.capture_bytes,
            "core": self.core["core"],
            "clock_offset_ns": self.clock_offset_ns,
            "programs_attached": len(self.attached),
            "programs_skipped": self.skipped,
            "tls_skipped_bytes": self._kernel.get("tls_skipped_bytes", 0),
            "tls_no_fd": self._kernel.get("tls_no_fd", 0),
            "tls_events": self._kernel.get("tls_events", 0),
            "tls_hello": self._kernel.get("tls_hello", 0),
            "tls_libraries": (sorted(self.tls.libraries.values()) if self.tls
                              else self.tls_libraries),
            "tls_unavailable": self.tls_unavailable,
            "tls_unreadable_processes": (self.tls.unreadable if self.tls
                                         else self.tls_unreadable),
            # adaptive sampling (kernel counters: exact)
            "conns_sampled_out": self._kernel.get("conns_sampled_out", 0),
            "requests_sampled_out": self._kernel.get("requests_sampled_out", 0),
            "adaptive_sampling_engaged": self.adaptive.engaged if self.adaptive else 0,
            "adaptive_keep": self.adaptive.keep if self.adaptive else 1.0,
            "adaptive_transitions": list(self.adaptive.transitions) if self.adaptive else [],
        })
        if self.span_stacks:
            s.update(self.span_stacks.counters(),
                     span_stack_failed=self._kernel.get("span_stack_failed", 0))
        if self.inject_headers:
            s["inject"] = (self.injector.counters() if self.injector
                           else self._inject_counters)
            s["inject_unavailable"] = self.inject_unavailable
        return s

    def __enter__(self) -> Tracer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
