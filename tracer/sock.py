"""The kernel side of the agent: sock.bpf.o loaded with the add-ons' knobs,
its filters, its programs attached, its maps, its ring and its counters.

    kernel = SockKernel(Filters(ports=[8080]), capture_bytes=512, ring_bytes=8 << 20)
    kernel.start({"span_stacks": 1})    # LoaderError subclasses on failure
    kernel.rb.consume_events(handle, stats, 1024)
    kernel.read_counters()              # {"events_seen": ..., "read_faults": ...}
    kernel.detach(); kernel.close()

With `source` nothing is loaded: the records come from it instead of the ring
(recorded records: tests/unit/test_agent_replay.py), and so do the counters,
if it has them. A source has the ring's consumer methods, poll(timeout_ms),
available() and consume_events(handle, stats, limit), and optionally
counters() -> {events.Counter: value}; its owner closes it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from . import events, loader
from .conn import kernel_capture_hook

# a default `run`: the payload prefix copied per syscall, the events ring
DEFAULT_CAPTURE_BYTES = 512
DEFAULT_RING_BYTES = 8 << 20

log = logging.getLogger("tracer.sock")
C = events.Counter

# Every kernel counter (enum counter in sock.h), named once: its summary key,
# and the add-on it belongs to (None: always in the summary). The keys that
# are also Stats fields (events_seen, events_dropped) are copied there.
KERNEL_COUNTERS: dict[events.Counter, tuple[str, str | None]] = {
    C.CTR_EVENTS: ("events_seen", None),
    C.CTR_DROPPED: ("events_dropped", None),
    C.CTR_READ_FAULT: ("read_faults", None),
    C.CTR_CONN_FULL: ("conn_table_full", None),
    C.CTR_TLS_SKIPPED: ("tls_skipped_bytes", None),
    C.CTR_TLS_NO_FD: ("tls_no_fd", None),
    C.CTR_TLS_EVENTS: ("tls_events", None),
    C.CTR_TLS_HELLO: ("tls_hello", None),
    C.CTR_CONNS_SAMPLED: ("conns_sampled_out", None),
    C.CTR_REQS_SAMPLED: ("requests_sampled_out", None),
    C.CTR_STACK_FAILED: ("span_stack_failed", "span_stacks"),
    C.CTR_EXIT_UNREACHED: ("exit_unreached", None),
}

EXIT_PROGRAMS = ("io_exit", "io_exit_bounded")  # sock.bpf.c: with bpf_loop, without


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


def proc_comm_key(pid: int) -> bytes:
    """/proc/<pid>/comm as a filter_comms key (its bytes as they are), b"" if gone."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            name = f.read().rstrip(b"\n")
    except OSError:
        return b""
    return name[:events.TASK_COMM_LEN - 1].ljust(events.TASK_COMM_LEN, b"\0")


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


def load_sock(obj: loader.BPFObject, exit_prog: str | None = None) -> str:
    """Load an opened sock.bpf.o: the exit program this kernel verifies
    cheapest (or `exit_prog`), put where the sys_exit stubs tail-call it.
    Returns its name."""
    if exit_prog is None:
        exit_prog = EXIT_PROGRAMS[0] if loader.bpf_loop() else EXIT_PROGRAMS[1]
    for prog in EXIT_PROGRAMS:
        obj.set_autoload(prog, prog == exit_prog)
    obj.load()
    obj.map("exit_tail").update(0, obj.prog_fd(exit_prog))
    return exit_prog


class SockKernel:
    def __init__(self, filters: Filters, *, capture_bytes: int, ring_bytes: int,
                 source=None) -> None:
        self.filters = filters
        self.capture_bytes = capture_bytes
        self.ring_bytes = ring_bytes
        # the BPF side wakes the agent only when this much is unread (and at
        # twice it); below that the poll timeout drains the ring
        self.wakeup_bytes = ring_bytes // 4
        self.source = source
        self.obj: loader.BPFObject | None = None
        self.rb = None  # the events ring (loader.RingBuffer), or the source
        self.exit_program = ""
        self.attached: list[str] = []
        self.skipped: dict[str, str] = {}  # program -> why it could not attach
        self.counters: dict[str, int] = {}  # summary key -> value, as of the last read
        self.fill_max = 0  # largest ring fill (bytes) seen at a poll; its reader resets it
        self.started_at = 0.0  # wall clock, once the agent and its add-ons are attached

    def start(self, knobs: dict[str, int]) -> None:
        """Open, configure (the add-ons' rodata `knobs` too), load, fill the
        filter maps, attach every program that can be; or take the source."""
        if self.source is not None:
            self.rb = self.source
            return
        loader.ensure_tracefs()
        obj = loader.BPFObject.open(loader.object_path("sock"))
        try:
            obj.set_rodata(capture_bytes=self.capture_bytes, self_tgid=os.getpid(),
                           wakeup_bytes=self.wakeup_bytes, **knobs)
            obj.set_max_entries("events", self.ring_bytes)
            if not knobs.get("span_stacks"):
                obj.set_max_entries("user_stacks", 1)  # not asked for: no stack map memory
            self.exit_program = load_sock(obj)
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
        except BaseException:
            obj.close()
            raise
        self.obj = obj

    def loaded(self) -> loader.BPFObject:
        """sock.bpf.o, for the add-ons that load on its maps."""
        if self.obj is None:
            raise loader.OpenError("sock.bpf.o is not loaded (records are replayed)")
        return self.obj

    def map(self, name: str) -> loader.Map:
        return self.loaded().map(name)

    def capture_hook(self):
        """How the connection table raises an h2 connection's capture in the
        kernel (conns map), or None."""
        return kernel_capture_hook(self.obj.map("conns")) if self.obj is not None else None

    def apply_filters(self, filters: Filters) -> None:
        """New filters in place (SIGHUP): the probes stay attached."""
        self.filters = filters
        if self.obj is not None:
            self._apply_filters(self.obj)

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

    def set_sampling(self, drop_per_scale: int) -> None:
        """New connections the kernel samples out, per events.SAMPLE_SCALE."""
        if self.obj is not None:
            self.obj.map("sampling").update(0, drop_per_scale)

    def take_fill_max(self) -> int:
        fill, self.fill_max = self.fill_max, 0
        return fill

    def read_counters(self) -> dict[str, int]:
        """The kernel's counters (summed over CPUs), by summary key."""
        if self.obj is not None:
            m = self.obj.map("counters")
            self.counters = {key: m.percpu_sum(c) for c, (key, _) in KERNEL_COUNTERS.items()}
        elif (recorded := getattr(self.source, "counters", None)) is not None:
            raw = recorded()
            self.counters = {key: raw.get(c, 0) for c, (key, _) in KERNEL_COUNTERS.items()}
        return self.counters

    def value(self, counter: events.Counter) -> int:
        """One counter as of the last read."""
        return self.counters.get(KERNEL_COUNTERS[counter][0], 0)

    def summary(self, addons: set[str]) -> dict[str, int]:
        """The summary entries of the counters, those of absent add-ons left out."""
        return {key: self.counters.get(key, 0) for key, owner in KERNEL_COUNTERS.values()
                if owner is None or owner in addons}

    def detach(self) -> None:
        """Stop producing: everything submitted so far is in the ring."""
        if self.obj is not None:
            self.obj.detach_all()

    def close(self) -> None:
        if self.obj is not None:
            self.obj.close()
            self.obj = None
        self.rb = None
