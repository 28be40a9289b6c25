"""Load funcs.bpf.o, attach one uprobe + uretprobe per function, turn events
into records.

    t = FuncsTracer(probes, writer, pids=[...], stack=True)
    t.start()          # loader errors (typed per stage) propagate
    t.run(duration, stop)
    counters = t.stop()

Record building (args, retval, stacks) is pure and unit-tested on synthetic
events; only start/run/stop need root.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from tracer import loader

from . import events as fev
from .events import ArgKind, CallEvent, Counter, StackEvent
from .output import FuncsWriter, call_record, frame_dict
from .targets import Probe

log = logging.getLogger("tracer.funcs")

# An FP walk shorter than this, or with an address outside any executable
# mapping, is treated as broken and the DWARF unwinder is tried.
MIN_FP_FRAMES = 3
# stacks waiting for their call's event; more means those calls were lost
MAX_PENDING_STACKS = 1 << 16


def spec_bytes(probe: Probe) -> bytes:
    s = fev.ProbeSpecC()
    s.nargs = len(probe.args)
    for i, a in enumerate(probe.args):
        s.kind[i] = int(a.kind)
        s.size[i] = a.size
    return bytes(s)


def _signed(v: int, size: int) -> int:
    bits = size * 8
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def format_args(probe: Probe, ev: CallEvent) -> dict:
    out = {}
    for i, a in enumerate(probe.args):
        raw = ev.args[i]
        if a.kind == ArgKind.FUNCS_ARG_INT:
            out[a.name] = _signed(raw, a.size)
        elif a.kind == ArgKind.FUNCS_ARG_UINT:
            out[a.name] = raw & ((1 << (a.size * 8)) - 1)
        elif a.kind == ArgKind.FUNCS_ARG_PTR:
            out[a.name] = f"{raw:#x}"
        elif a.kind == ArgKind.FUNCS_ARG_STR:
            # null: the pointer could not be read (NULL, unmapped)
            out[a.name] = (None if ev.str_faults >> i & 1
                           else ev.strs[i].decode("utf-8", "backslashreplace"))
    return out


class StackResolver:
    """Stack events -> symbolised frames, FP walk first, DWARF when it is short."""

    def __init__(self, symbolizer=None):
        if symbolizer is None:
            from tracer.symbols import Symbolizer

            symbolizer = Symbolizer()
        self.sym = symbolizer
        self.methods = {"fp": 0, "dwarf": 0}
        self.errors = 0

    def _frames(self, pid: int, addrs: list[int]) -> list:
        try:
            return self.sym.frames(pid, addrs)
        except Exception as e:  # noqa: BLE001 - a vanished process: addresses only
            self.errors += 1
            log.debug("symbolize pid %d: %s", pid, e)
            return []

    def resolve(self, ev: StackEvent) -> tuple[list[dict], str]:
        fp = [a for a in ev.fp_ips if a]
        fp_frames = self._frames(ev.pid, fp) if fp else []
        good = (len(fp) >= MIN_FP_FRAMES and len(fp_frames) == len(fp)
                and all(f.module and f.symbol for f in fp_frames))
        method, frames, addrs = "fp", fp_frames, fp
        if not good and ev.stack:
            try:
                from tracer.symbols import unwind

                dw = unwind(self.sym.maps(ev.pid), ev.regs, ev.stack, ev.regs["rsp"])
            except Exception as e:  # noqa: BLE001 - unwinder failure: keep the FP walk
                self.errors += 1
                log.debug("unwind pid %d: %s", ev.pid, e)
                dw = []
            if len(dw) > len(fp):
                method, addrs, frames = "dwarf", dw, self._frames(ev.pid, dw)
        self.methods[method] += 1
        if len(frames) != len(addrs):
            return [frame_dict(a, None, None, None) for a in addrs], method
        return [frame_dict(f.addr, f.symbol, f.offset if f.symbol else None, f.module)
                for f in frames], method


class FuncsTracer:
    def __init__(self, probes: list[Probe], writer: FuncsWriter, *, pids=(), netns=(),
                 cgroups=(), stack: bool = False, stack_copy_bytes: int = fev.FUNCS_STACK_COPY,
                 resolver: StackResolver | None = None):
        self.probes = probes
        self.writer = writer
        # duplicates would attach twice per process and record each call twice
        self.pids = list(dict.fromkeys(pids))
        self.netns, self.cgroups = list(netns), list(cgroups)
        self.stack = stack
        self.stack_copy_bytes = stack_copy_bytes
        self.resolver = resolver if resolver is not None else (StackResolver() if stack else None)
        self.obj: loader.BPFObject | None = None
        self.rb: loader.RingBuffer | None = None
        self._uprobes = 0  # uprobes and uretprobes attached
        self.pending_stacks: dict[tuple[int, int], tuple[list[dict], str]] = {}
        self.decode_errors = 0
        self.stacks_missing = 0
        self.stacks_evicted = 0
        self.events_seen = 0
        self.clock_offset_ns = loader.clock_offset_ns()

    # -- events -> records ---------------------------------------------------------
    def handle(self, ev: CallEvent | StackEvent) -> None:
        if isinstance(ev, StackEvent):
            # symbolised now, while the process (and its maps) most likely lives
            self.pending_stacks[(ev.tid, ev.start_ns)] = self.resolver.resolve(ev)
            if len(self.pending_stacks) > MAX_PENDING_STACKS:
                # their calls' events were dropped: forget the oldest
                del self.pending_stacks[next(iter(self.pending_stacks))]
                self.stacks_evicted += 1
            return
        if ev.probe >= len(self.probes):
            self.decode_errors += 1
            return
        p = self.probes[ev.probe]
        stack = method = None
        if self.stack:
            got = self.pending_stacks.pop((ev.tid, ev.start_ns), None)
            if got is None:
                self.stacks_missing += 1
                stack, method = [], "none"
            else:
                stack, method = got
        self.writer.call(call_record(
            target=p.target, function=p.function, module=p.module, address=p.vaddr,
            pid=ev.pid, tid=ev.tid, comm=ev.comm,
            start_time_unix_nano=ev.start_ns + self.clock_offset_ns,
            duration_ns=ev.duration_ns, depth=ev.depth, args=format_args(p, ev),
            retval=_signed(ev.retval, 8), stack=stack, stack_method=method))

    def _on_record(self, buf, off, size) -> None:
        self.events_seen += 1
        try:
            ev = fev.decode(buf, off, size)
        except fev.DecodeError as e:
            self.decode_errors += 1
            log.debug("decode: %s", e)
            return
        self.handle(ev)

    # -- kernel side -----------------------------------------------------------------
    def start(self) -> None:
        obj = loader.BPFObject.open(loader.object_path("funcs"))
        self.obj = obj
        try:
            obj.set_rodata(self_tgid=os.getpid(), by_pid=int(bool(self.pids)),
                           by_netns=int(bool(self.netns)), by_cgroup=int(bool(self.cgroups)),
                           capture_stack=int(self.stack), stack_copy_bytes=self.stack_copy_bytes)
            loader.ensure_tracefs()
            obj.load()
            specs = obj.map("probe_specs")
            for p in self.probes:
                specs.update(p.index, spec_bytes(p))
            for pid in self.pids:
                obj.map("filter_pids").update(pid, b"\x01")
            for ino in self.netns:
                obj.map("filter_netns").update(ino, b"\x01")
            for cg in self.cgroups:
                obj.map("filter_cgroups").update(cg.to_bytes(8, "little"), b"\x01")
            obj.attach("funcs_thread_exit")
            self.rb = obj.ring_buffer("funcs_events")
            # Return probes first: a call entered before its return probe
            # exists would leave an entry that never pops. With --pid the
            # kernel installs the breakpoints in those processes only, so
            # others do not pay the trap (the BPF filter stays, for threads).
            for retprobe in (True, False):
                for pid in self.pids or [-1]:
                    for p in self.probes:
                        self._attach(p, retprobe, pid)
        except BaseException:
            self.close()
            raise

    def _attach(self, p: Probe, retprobe: bool, pid: int) -> None:
        """The probe's index is the attach cookie: it selects its spec in probe_specs."""
        prog = "func_exit" if retprobe else "func_entry"
        try:
            self.obj.attach_uprobe(prog, p.module, p.file_offset, pid=pid, retprobe=retprobe,
                                   cookie=p.index)
        except loader.AttachError as e:
            raise loader.AttachError(f"{p.target}: {e}", program=prog, err=e.err) from None
        self._uprobes += 1

    @property
    def attached(self) -> int:
        """Uprobes and uretprobes attached."""
        return self._uprobes

    def run(self, duration: float | None = None, stop: threading.Event | None = None,
            on_tick=None) -> None:
        stop = stop or threading.Event()
        deadline = time.monotonic() + duration if duration else None
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            self.rb.poll(100)
            self.rb.consume(self._on_record)
            if on_tick:
                on_tick()

    def _detach(self) -> None:
        """Detach every probe (concurrently: loader.detach_all); the maps and
        the ring stay readable until close()."""
        if self.obj is not None:
            self.obj.detach_all()
        self._uprobes = 0

    def counters(self) -> dict:
        from tracer.symbols import debugfile

        c = self.obj.map("funcs_counters")

        def get(k):
            return c.percpu_sum(k)

        open_now = 0
        threads = self.obj.map("threads")
        for key in threads.keys():
            raw = threads.lookup(key)  # the kernel writes the whole value
            if raw:
                open_now += min(int.from_bytes(raw[:4], "little"), 1 << 20)
        dropped = get(Counter.FCTR_DROPPED)
        out = {
            "events_seen": self.events_seen,
            "events_dropped": dropped + get(Counter.FCTR_STACK_DROPPED),
            "calls_recorded": get(Counter.FCTR_CALLS),
            "calls_dropped": dropped,
            "entries_seen": get(Counter.FCTR_ENTRIES),
            "unmatched_exits": get(Counter.FCTR_UNMATCHED_EXIT),
            "unmatched_entries": open_now + get(Counter.FCTR_OPEN_AT_EXIT),
            "depth_overflow": get(Counter.FCTR_DEPTH_OVERFLOW),
            "threads_full": get(Counter.FCTR_THREADS_FULL),
            "string_faults": get(Counter.FCTR_STR_FAULT),
            "decode_errors": self.decode_errors,
            "probes_attached": len(self.probes) * 2 * max(1, len(self.pids)),
            # distinct symbols named (targets, frames) per source, and the
            # debug-file lookups behind them (tracer/symbols/debugfile.py)
            "symbol_sources": debugfile.symbol_sources(),
            "debug_files": debugfile.counters(),
        }
        if self.stack:
            out.update({
                "stacks_seen": get(Counter.FCTR_STACKS),
                "stacks_dropped": get(Counter.FCTR_STACK_DROPPED),
                "stack_copy_faults": get(Counter.FCTR_STACK_FAULT),
                "stacks_missing": self.stacks_missing,
                "stacks_unmatched": len(self.pending_stacks) + self.stacks_evicted,
                "stack_methods": dict(self.resolver.methods),
                "symbolize_errors": self.resolver.errors,
            })
        return out

    def stop(self) -> dict:
        """Detach, drain what is left, and return the counters."""
        self._detach()
        if self.rb is not None:
            self.rb.consume(self._on_record)
        out = self.counters() if self.obj else {}
        self.close()
        return out

    def close(self) -> None:
        self._detach()
        if self.obj is not None:
            self.obj.close()
            self.obj = None
            self.rb = None
