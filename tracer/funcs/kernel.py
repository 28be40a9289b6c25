"""Kernel-function targets of `python -m tracer funcs kernel:NAME ...`.

The feature probe picks the mechanism (tracer.probe.kernel_functions):
fentry/fexit where the kernel loads BPF trampolines, kprobe/kretprobe where it
only has kprobes, and otherwise KernelFuncError naming why neither works
(the CLI's one line, exit 2). The run itself (attach, privilege drop, the
summary) is tracer/funcs/cli.py's, the same as for user-space targets.
Argument names, count and signedness come from the kernel's BTF
(/sys/kernel/btf/vmlinux); values are the raw argument registers (no memory
behind pointers is read). Records follow the user-space `funcs` JSON lines
schema with "module": "kernel".
"""

from __future__ import annotations

import ctypes
import enum
import os
import threading
import time
from dataclasses import dataclass, field

from .. import loader
from .output import call_record

KERNEL_PREFIX = "kernel:"
TASK_COMM_LEN = 16
MAX_ARGS = 6
MAX_DEPTH = 8
MAX_TARGETS = 64  # fentry needs one object copy per function
SHARED_MAPS = ("kf_events", "kf_counters", "kf_threads", "kf_scratch", "kf_pids",
               "kf_cgroups", "kf_netns")


class KfCounter(enum.IntEnum):
    KF_CTR_EVENTS = 0
    KF_CTR_DROPPED = 1
    KF_CTR_UNMATCHED_EXIT = 2
    KF_CTR_UNMATCHED_ENTRY = 3
    KF_CTR_DEPTH_OVERFLOW = 4
    KF_CTR_THREAD_FULL = 5
    KF_CTR_MAX = 6


class KfEventC(ctypes.Structure):
    """Mirror of struct kf_event (tracer/bpf/kfuncs.h), checked against BTF."""
    _fields_ = [
        ("start_ns", ctypes.c_uint64),
        ("duration_ns", ctypes.c_uint64),
        ("args", ctypes.c_uint64 * MAX_ARGS),
        ("retval", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("target", ctypes.c_uint32),
        ("depth", ctypes.c_uint16),
        ("method", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("comm", ctypes.c_char * TASK_COMM_LEN),
    ]


class KfFrameC(ctypes.Structure):
    _fields_ = [("ts", ctypes.c_uint64), ("args", ctypes.c_uint64 * MAX_ARGS),
                ("target", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class KfThreadC(ctypes.Structure):
    _fields_ = [("frames", KfFrameC * MAX_DEPTH), ("depth", ctypes.c_uint32),
                ("overflow", ctypes.c_uint32)]


STRUCTS = {"kf_event": KfEventC, "kf_frame": KfFrameC, "kf_thread": KfThreadC}
ENUMS = {"kf_counter": KfCounter}
EVENT_SIZE = ctypes.sizeof(KfEventC)


class KernelFuncError(Exception):
    """A kernel target cannot be traced; str() is one actionable line (exit 2)."""


# ---- kernel BTF: names and kinds of a function's parameters ------------------------

BTF_KIND_INT, BTF_KIND_PTR, BTF_KIND_ENUM = 1, 2, 6
BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE, BTF_KIND_CONST, BTF_KIND_RESTRICT = 8, 9, 10, 11
BTF_KIND_FUNC, BTF_KIND_FUNC_PROTO, BTF_KIND_ENUM64 = 12, 13, 19
BTF_KIND_TYPE_TAG = 18
BTF_INT_SIGNED = 1


class _BtfParam(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32)]


@dataclass
class Param:
    name: str
    kind: str  # "int" (signed), "uint", "ptr"
    size: int


@dataclass
class KFunc:
    name: str
    params: list[Param] = field(default_factory=list)
    ret: Param | None = None  # None: void
    address: int = 0


class KernelBTF:
    """The running kernel's BTF through libbpf (btf__load_vmlinux_btf)."""

    def __init__(self):
        self._lib = loader.libbpf()
        self._btf = self._lib.btf__load_vmlinux_btf()
        if not self._btf:
            raise KernelFuncError("cannot read the kernel's BTF (/sys/kernel/btf/vmlinux): "
                                  "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y")

    def close(self) -> None:
        if self._btf:
            self._lib.btf__free(self._btf)
            self._btf = None

    def _t(self, tid: int):
        return self._lib.btf__type_by_id(self._btf, tid).contents

    def _name(self, off: int) -> str:
        return (self._lib.btf__name_by_offset(self._btf, off) or b"").decode()

    def _kind_of(self, tid: int) -> Param:
        for _ in range(16):  # typedef/const chains are short
            if tid == 0:
                return Param("", "int", 0)
            t = self._t(tid)
            kind = (t.info >> 24) & 0x1F
            if kind in (BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE, BTF_KIND_CONST, BTF_KIND_RESTRICT,
                        BTF_KIND_TYPE_TAG):
                tid = t.size_or_type
                continue
            if kind == BTF_KIND_PTR:
                return Param("", "ptr", 8)
            if kind == BTF_KIND_INT:
                enc = ctypes.c_uint32.from_address(ctypes.addressof(t) + 12).value
                signed = (enc >> 24) & 0xF & BTF_INT_SIGNED
                return Param("", "int" if signed else "uint", t.size_or_type)
            if kind in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
                return Param("", "int", t.size_or_type)
            break
        return Param("", "uint", 8)  # structs by value, floats: raw register

    def function(self, name: str) -> KFunc | None:
        tid = self._lib.btf__find_by_name_kind(self._btf, name.encode(), BTF_KIND_FUNC)
        if tid < 0:
            return None
        proto = self._t(self._t(tid).size_or_type)
        vlen = proto.info & 0xFFFF
        base = ctypes.addressof(proto) + ctypes.sizeof(loader._BtfType)
        params = []
        for i in range(vlen):
            p = _BtfParam.from_address(base + i * ctypes.sizeof(_BtfParam))
            if p.type == 0:  # "..." (varargs)
                break
            k = self._kind_of(p.type)
            params.append(Param(self._name(p.name_off) or f"arg{i}", k.kind, k.size))
        ret = None if proto.size_or_type == 0 else self._kind_of(proto.size_or_type)
        return KFunc(name, params[:MAX_ARGS], ret)


def kallsyms_address(name: str) -> int:
    """The function's address from /proc/kallsyms (0 when hidden by kptr_restrict)."""
    try:
        with open("/proc/kallsyms") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == name and parts[1] in "tT":
                    return int(parts[0], 16)
    except OSError:
        pass
    return 0


def convert(raw: int, p: Param | None) -> int | str:
    """A raw 64-bit register as the parameter's C type: sign and width from
    BTF; pointers as hex strings."""
    if p is None:
        return raw
    if p.kind == "ptr":
        return f"{raw:#x}"
    bits = (p.size or 8) * 8
    v = raw & ((1 << bits) - 1)
    if p.kind == "int" and v >> (bits - 1):
        v -= 1 << bits
    return v


def parse_targets(targets: list[str]) -> list[str]:
    names = []
    for t in targets:
        name = t[len(KERNEL_PREFIX):] if t.startswith(KERNEL_PREFIX) else t
        if not name or not all(c.isalnum() or c in "_." for c in name):
            raise KernelFuncError(f"'{t}': expected kernel:FUNCTION (a kernel function name, "
                                  "e.g. kernel:do_sys_openat2)")
        if name not in names:
            names.append(name)
    if len(names) > MAX_TARGETS:
        raise KernelFuncError(f"{len(names)} kernel functions: at most {MAX_TARGETS} at once")
    return names


# ---- tracing -----------------------------------------------------------------------

class KernelTracer:
    """Loads kfuncs.bpf.o for a set of kernel functions and turns its events
    into `funcs` records, handed to `emit` (e.g. FuncsWriter.call) by run()
    and stop(); poll() takes its own."""

    def __init__(self, funcs: list[KFunc], method: str, pids=(), cgroups=(), netns=(),
                 emit=None):
        self.funcs = funcs
        self.method = method
        self.why = method  # how the probe described the mechanism (the ready line)
        self.emit = emit
        self.pids, self.cgroups, self.netns = list(pids), list(cgroups), list(netns)
        self.objs: list[loader.BPFObject] = []
        self.current = ""  # the function being loaded or attached (for error lines)
        self.rb = None
        self.counters = None
        self.events_seen = 0
        self.decode_errors = 0
        self.skew = time.time_ns() - time.monotonic_ns()  # ktime (monotonic) -> unix

    def _open(self, index: int, progs: tuple[str, ...]) -> loader.BPFObject:
        obj = loader.BPFObject.open(loader.object_path("kfuncs"))
        self.objs.append(obj)
        for p in obj.programs:
            obj.set_autoload(p, p in progs)
        obj.set_rodata(self_tgid=os.getpid(), target_id=index, by_pid=int(bool(self.pids)),
                       by_cgroup=int(bool(self.cgroups)), by_netns=int(bool(self.netns)))
        if self.objs[0] is not obj:
            for m in SHARED_MAPS:
                obj.reuse_map(m, self.objs[0].map(m))
        return obj

    def _fill_filters(self, obj: loader.BPFObject) -> None:
        for name, keys, size in (("kf_pids", self.pids, 4), ("kf_cgroups", self.cgroups, 8),
                                 ("kf_netns", self.netns, 4)):
            m = obj.map(name)
            for k in keys:
                m.update(int(k).to_bytes(size, "little"), b"\x01")

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        if self.method == "fentry":
            for i, f in enumerate(self.funcs):
                self.current = f.name
                obj = self._open(i, ("kf_fentry", "kf_fexit"))
                obj.set_attach_target("kf_fentry", f.name)
                obj.set_attach_target("kf_fexit", f.name)
                obj.load()
                if i == 0:
                    self._fill_filters(obj)
                # Exit first: a call already running when entry attaches is then
                # never half-seen (its exit finds no frame and is just counted).
                obj.attach("kf_fexit")
                obj.attach("kf_fentry")
        else:
            obj = self._open(0, ("kf_kprobe", "kf_kretprobe"))
            obj.load()
            self._fill_filters(obj)
            for i, f in enumerate(self.funcs):
                self.current = f.name
                obj.attach_kprobe("kf_kretprobe", f.name, retprobe=True, cookie=i)
                obj.attach_kprobe("kf_kprobe", f.name, cookie=i)
        self.rb = self.objs[0].ring_buffer("kf_events")
        self.counters = self.objs[0].map("kf_counters")

    def record(self, buf, off: int, size: int) -> dict | None:
        self.events_seen += 1
        if size < EVENT_SIZE:
            self.decode_errors += 1
            return None
        ev = KfEventC.from_buffer_copy(buf[off:off + EVENT_SIZE])
        if ev.target >= len(self.funcs):
            self.decode_errors += 1
            return None
        f = self.funcs[ev.target]
        return call_record(
            target=KERNEL_PREFIX + f.name, function=f.name, module="kernel", address=f.address,
            pid=ev.pid, tid=ev.tid, comm=ev.comm.decode("utf-8", "replace"),
            start_time_unix_nano=ev.start_ns + self.skew, duration_ns=ev.duration_ns,
            depth=ev.depth, args={p.name: convert(ev.args[i], p) for i, p in enumerate(f.params)},
            retval=None if f.ret is None else convert(ev.retval, f.ret))

    def poll(self, emit, timeout_ms: int = 100) -> int:
        self.rb.poll(timeout_ms)

        def handler(buf, off, size):
            rec = self.record(buf, off, size)
            if rec is not None:
                emit(rec)

        return self.rb.consume(handler)

    def run(self, duration: float | None = None, stop: threading.Event | None = None,
            on_tick=None) -> None:
        """Poll until `stop` is set or `duration` seconds have passed."""
        stop = stop or threading.Event()
        deadline = time.monotonic() + duration if duration else None
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            self.poll(self.emit, 100)
            if on_tick:
                on_tick()

    def stop(self) -> dict:
        """Detach, drain what the ring still holds, close; the counters."""
        for obj in self.objs:
            obj.detach_all()
        out = {}
        if self.rb is not None:
            while self.poll(self.emit, 0):
                pass
            out = self.counters_dict()
        self.close()
        return out

    def counter(self, c: KfCounter) -> int:
        return self.counters.percpu_sum(int(c)) if self.counters else 0

    def counters_dict(self) -> dict:
        return {
            "method": self.method,
            "events_seen": self.events_seen,
            "events_dropped": self.counter(KfCounter.KF_CTR_DROPPED),
            "decode_errors": self.decode_errors,
            "unmatched_exits": self.counter(KfCounter.KF_CTR_UNMATCHED_EXIT),
            "unmatched_entries": self.counter(KfCounter.KF_CTR_UNMATCHED_ENTRY),
            "depth_overflow": self.counter(KfCounter.KF_CTR_DEPTH_OVERFLOW),
            "thread_table_full": self.counter(KfCounter.KF_CTR_THREAD_FULL),
        }

    def close(self) -> None:
        for obj in reversed(self.objs):
            obj.detach_all()
        for obj in reversed(self.objs):
            obj.close()
        self.objs.clear()
        self.rb = None


def resolve(names: list[str]) -> list[KFunc]:
    btf = KernelBTF()
    try:
        funcs = []
        for n in names:
            f = btf.function(n)
            if f is None:
                raise KernelFuncError(
                    f"kernel function '{n}' not found in the kernel's BTF: check the name in "
                    "/proc/kallsyms (static or inlined functions cannot be traced)")
            f.address = kallsyms_address(n)
            funcs.append(f)
        return funcs
    finally:
        btf.close()


def kernel_tracer(targets: list[str], method: str, why: str, *, pids=(), cgroups=(),
                  netns=(), emit=None) -> KernelTracer:
    """'kernel:NAME' targets -> a KernelTracer ready to start with `method`
    (the feature probe's pick, tracer.probe.probe_kernel_functions: the
    caller asks it, so that the probe may load this module's objects).
    Raises KernelFuncError (one line) when the targets are malformed or
    unknown; the `funcs` CLI turns it into exit 2."""
    tracer = KernelTracer(resolve(parse_targets(targets)), method, pids=pids, cgroups=cgroups,
                          netns=netns, emit=emit)
    tracer.why = why
    return tracer
