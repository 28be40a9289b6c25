"""Context propagation by injection (`tracer run --inject`, off by default).

inject.bpf.o writes a W3C `traceparent` into outgoing HTTP/1 requests with
cgroup sockops + sk_msg (no bpf_probe_write_user), continuing the trace of
the request the sending thread is handling. Each injection is reported on the
ring "inject_events"; the correlator asks `take()` for the ids of a client
request when it sees its head, so the client span carries exactly the ids its
downstream server received.

    inj = Injector.load(sock_obj, self_tgid=os.getpid())   # shares the filter maps
    inj.start()                                            # AttachError, nothing attached
    ids = inj.take(pid, tid, lport, rport, start_ts)       # Injected | None
    inj.close()

The layout mirrors tracer/bpf/inject.h; tests/unit/test_inject_btf.py checks it.
"""

from __future__ import annotations

import ctypes
import enum
import logging
import os
import re
from collections import deque
from dataclasses import dataclass

from . import loader
from .addons import Addon

log = logging.getLogger("tracer.inject")

BPF_SK_MSG_VERDICT = 7  # enum bpf_attach_type (uapi)
TRACEPARENT_LEN = 70
INJECT_SCAN = 1024
CTX_SCAN = 512
SHARED_MAPS = ("filter_cfg", "filter_pids", "filter_netns", "filter_cgroups",
               "filter_ports", "filter_comms")  # owned by sock.bpf.o
CGROUP2_ROOTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")
# sk_msg helpers a kernel may refuse (verifier: "unknown func <name>#<id>"):
# rodata knob cleared, then what is lost in sk_msg (inject.bpf.c msg_wanted)
MSG_HELPERS = {"bpf_get_current_comm": ("msg_comm", "--comm"),
               "bpf_get_current_task": ("msg_task", "--netns")}
MAX_WAITING = 4096  # injected requests remembered, all keys together
STALE_NS = 10_000_000_000


class InjectEventType(enum.IntEnum):
    INJECT_EV_INJECTED = 1


class InjectCounter(enum.IntEnum):
    INJ_DONE = 0
    INJ_NOT_HTTP1 = 1
    INJ_PRESENT = 2
    INJ_TOO_BIG = 3
    INJ_PUSH_FAIL = 4
    INJ_LOST = 5
    INJ_CTX_SET = 6
    INJ_CTX_HEADER = 7
    INJ_SOCKS = 8
    INJ_UNFILTERED = 9
    INJ_CTR_MAX = 10


class InjectEventC(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint8), ("flags", ctypes.c_uint8),
                ("has_parent", ctypes.c_uint8), ("pad0", ctypes.c_uint8),
                ("pid", ctypes.c_uint32), ("tid", ctypes.c_uint32),
                ("lport", ctypes.c_uint16), ("rport", ctypes.c_uint16),
                ("ts", ctypes.c_uint64), ("trace_id", ctypes.c_uint8 * 16),
                ("span_id", ctypes.c_uint8 * 8), ("parent_id", ctypes.c_uint8 * 8)]


class ThreadCtxC(ctypes.Structure):
    _fields_ = [("trace_id", ctypes.c_uint8 * 16), ("span_id", ctypes.c_uint8 * 8),
                ("ts", ctypes.c_uint64), ("flags", ctypes.c_uint8),
                ("from_header", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 6)]


STRUCTS = {"inject_event": InjectEventC, "thread_ctx": ThreadCtxC}
ENUMS = {"inject_event_type": InjectEventType, "inject_counter": InjectCounter}
EVENT_SIZE = ctypes.sizeof(InjectEventC)


@dataclass(frozen=True)
class Injected:
    """The ids written into one request's traceparent (lowercase hex)."""

    pid: int
    tid: int
    lport: int
    rport: int
    ts: int
    trace_id: str
    span_id: str
    parent_id: str | None  # the sending thread's server span, chosen in the kernel
    sampled: bool

    @property
    def key(self) -> tuple[int, int, int, int]:
        return (self.pid, self.tid, self.lport, self.rport)

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


class DecodeError(ValueError):
    pass


def decode(buf, off: int = 0, size: int | None = None) -> Injected:
    size = len(buf) - off if size is None else size
    if size < EVENT_SIZE:
        raise DecodeError(f"inject event of {size} bytes, expected {EVENT_SIZE}")
    ev = InjectEventC.from_buffer_copy(bytes(buf[off:off + EVENT_SIZE]))
    if ev.type != InjectEventType.INJECT_EV_INJECTED:
        raise DecodeError(f"unknown inject event type {ev.type}")
    return Injected(ev.pid, ev.tid, ev.lport, ev.rport, ev.ts, bytes(ev.trace_id).hex(),
                    bytes(ev.span_id).hex(),
                    bytes(ev.parent_id).hex() if ev.has_parent else None, bool(ev.flags & 1))


def encode(inj: Injected) -> bytes:
    """The kernel's record for `inj` (tests)."""
    ev = InjectEventC(type=InjectEventType.INJECT_EV_INJECTED, flags=int(inj.sampled),
                      has_parent=inj.parent_id is not None, pid=inj.pid, tid=inj.tid,
                      lport=inj.lport, rport=inj.rport, ts=inj.ts)
    ev.trace_id[:] = bytes.fromhex(inj.trace_id)
    ev.span_id[:] = bytes.fromhex(inj.span_id)
    ev.parent_id[:] = bytes.fromhex(inj.parent_id or "0" * 16)
    return bytes(ev)


class Waiting:
    """Injected requests not yet claimed by a client span, FIFO per
    (pid, tid, lport, rport). Pure: fed by `add`, asked by `take`."""

    def __init__(self, refill=None) -> None:
        self.by_key: dict[tuple, deque[Injected]] = {}
        self.count = 0
        self.refill = refill  # called once on a miss: the event may still be in the ring
        self.unclaimed = 0  # injected requests whose client span never asked

    def add(self, inj: Injected) -> None:
        if self.count >= MAX_WAITING:
            self.expire(inj.ts, 0)
        q = self.by_key.get(inj.key)
        if q is None:
            self.by_key[inj.key] = q = deque()
        q.append(inj)
        self.count += 1

    def take(self, pid: int, tid: int, lport: int, rport: int,
             start_ts: int = 0) -> Injected | None:
        """The ids injected into the request whose write began at start_ts:
        the oldest waiting one that is not older than the write (older ones
        belong to requests whose head user space never saw)."""
        key = (pid, tid, lport, rport)
        if key not in self.by_key and self.refill is not None:
            self.refill()
        q = self.by_key.get(key)
        while q:
            inj = q.popleft()
            self.count -= 1
            if not q:
                del self.by_key[key]
            if inj.ts >= start_ts:
                return inj
            self.unclaimed += 1
        return None

    def expire(self, now_ktime: int, max_age_ns: int = STALE_NS) -> None:
        for key in list(self.by_key):
            q = self.by_key[key]
            while q and now_ktime - q[0].ts >= max_age_ns:
                q.popleft()
                self.count -= 1
                self.unclaimed += 1
            if not q:
                del self.by_key[key]


def cgroup2_root() -> str:
    """The cgroup v2 mount: the hybrid layout's unified tree, else /sys/fs/cgroup."""
    with open("/proc/mounts") as f:
        mounts = [line.split()[1:3] for line in f]
    for path in CGROUP2_ROOTS:
        if [path, "cgroup2"] in mounts:
            return path
    for path, fstype in mounts:
        if fstype == "cgroup2":
            return path
    raise loader.AttachError("no cgroup v2 mount: mount one with "
                             "'mount -t cgroup2 none /sys/fs/cgroup/unified'",
                             program="inject_sockops")


class Injector:
    def __init__(self, obj: loader.BPFObject, lost: tuple[str, ...] = ()) -> None:
        self.obj = obj
        self.lost = lost  # sk_msg helpers this kernel refused (MSG_HELPERS keys)
        self.rb: loader.RingBuffer | None = None
        self.waiting = Waiting(self.drain)
        self.decode_errors = 0
        self.cgroup = ""

    @classmethod
    def load(cls, sock_obj: loader.BPFObject, *, self_tgid: int,
             sample_rate: float = 1.0) -> Injector:
        """Open and load inject.bpf.o on sock_obj's filter maps (LoaderError)."""
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError("sample rate must be within 0..1")
        knobs = {"self_tgid": self_tgid, "sample_per_10k": round(sample_rate * 10000)}
        lost: list[str] = []
        while True:
            try:
                obj = loader.BPFObject.load_on("inject", sock_obj, SHARED_MAPS, **knobs)
                break
            except loader.LoadError as e:
                helper = refused_helper(e.log)
                if helper not in MSG_HELPERS or helper in lost:
                    raise
                lost.append(helper)
                knobs[MSG_HELPERS[helper][0]] = 0
        return cls(obj, tuple(lost))

    def degraded(self) -> str:
        """What this kernel's sk_msg cannot check, in one line ('' : nothing)."""
        if not self.lost:
            return ""
        flags = " or ".join(MSG_HELPERS[h][1] for h in self.lost)
        return (f"sk_msg lacks {', '.join(self.lost)} on this kernel: with {flags} on, "
                "requests are sent without traceparent (counted: unfiltered)")

    def start(self) -> None:
        """Attach everything, or nothing (AttachError): a half-attached
        injector would write headers without the thread context."""
        obj = self.obj
        try:
            for prog in obj.programs:
                sec = obj.section(prog)
                if sec.startswith("tracepoint/"):
                    obj.attach(prog)
            self.rb = obj.ring_buffer("inject_events")
            self.cgroup = cgroup2_root()
            obj.attach_to_map("inject_msg", "inject_socks", BPF_SK_MSG_VERDICT)
            obj.attach_cgroup("inject_sockops", self.cgroup)  # last: nothing before is live
        except BaseException:
            self.close()
            raise

    def drain(self) -> int:
        if self.rb is None:
            return 0
        return self.rb.consume(self._on_record)

    def _on_record(self, buf, off: int, size: int) -> None:
        try:
            self.waiting.add(decode(buf, off, size))
        except DecodeError:
            self.decode_errors += 1

    def take(self, pid: int, tid: int, lport: int, rport: int,
             start_ts: int = 0) -> Injected | None:
        return self.waiting.take(pid, tid, lport, rport, start_ts)

    def tick(self, now_ktime: int) -> None:
        self.drain()
        self.waiting.expire(now_ktime)

    def counters(self) -> dict[str, int]:
        m = self.obj.map("inject_counters")
        out = {c.name.lower().removeprefix("inj_"): m.percpu_sum(c)
               for c in InjectCounter if c is not InjectCounter.INJ_CTR_MAX}
        out["unclaimed"] = self.waiting.unclaimed
        out["decode_errors"] = self.decode_errors
        return out

    def detach(self) -> None:
        """Stop writing headers; the ring can still be drained."""
        for prog in list(self.obj.attached):
            self.obj.detach(prog)

    def close(self) -> None:
        self.obj.close()
        self.rb = None


def refused_helper(log_text: str) -> str:
    """The helper the verifier did not know for this program type ('' : none)."""
    # 6.1: "unknown func bpf_x#16"; 6.12: "program of this type cannot use helper bpf_x#16"
    m = re.findall(r"^(?:unknown func|program of this type cannot use helper) (\w+)#\d+",
                   log_text or "", re.M)
    return m[-1] if m else ""


def unavailable_reason(features: dict[str, bool]) -> str:
    """Why injection cannot run, from probe results ('' when it can)."""
    missing = [name for name in ("sockops", "sk_msg") if not features.get(name)]
    return f"{' and '.join(missing)} refused by this kernel" if missing else ""


def unavailable() -> str:
    """Whether the kernel has the program types injection needs (the same
    libbpf probe as tracer/probe.py's)."""
    return unavailable_reason({
        "sockops": loader.prog_type_supported(loader.BPF_PROG_TYPE_SOCK_OPS),
        "sk_msg": loader.prog_type_supported(loader.BPF_PROG_TYPE_SK_MSG),
    })


class Injection(Addon):
    """The add-on (tracer/addons.py): an Injector on sock.bpf.o's filter maps,
    its ring drained before every read of the events ring (an injection
    precedes the write that carries it), the correlator asking it for the
    ids of client requests. Without sockops/sk_msg, or when it cannot attach,
    `unavailable` says why and spans are correlated without it."""

    name = "inject"
    drains = True

    def __init__(self, sample_rate: float = 1.0) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError("sample rate must be within 0..1")
        self.sample_rate = sample_rate
        self.injector: Injector | None = None
        self._counters: dict[str, int] = {}  # kept after close()

    def start(self, kernel, table) -> None:
        self.unavailable = unavailable()  # the probe decides before anything is loaded
        if self.unavailable:
            return
        try:
            inj = Injector.load(kernel.loaded(), self_tgid=os.getpid(),
                                sample_rate=self.sample_rate)
        except loader.LoadError as e:
            # the kernel's reason, in one line (the agent logs it, the summary keeps it)
            self.unavailable = loader.refusal(e)
            return
        inj.start()  # on failure it closed itself
        if inj.lost:  # once, at start: the probe's decision says the same
            log.warning("--inject: %s", inj.degraded())
        self.injector = inj
        table.correlator.injected = inj.take

    def drain(self) -> None:
        self.injector.drain()

    def bpf_objects(self) -> list:
        return [self.injector.obj] if self.injector is not None else []

    def tick(self, now_ns: int) -> None:
        self.injector.tick(now_ns)

    def stop(self) -> None:
        if self.injector is not None:
            self.injector.detach()  # stop writing headers; its ring is still read

    def close(self) -> None:
        if self.injector is not None:
            self._counters = self.injector.counters()
            self.injector.close()
            self.injector = None

    def counters(self) -> dict:
        return {"inject": self.injector.counters() if self.injector else self._counters,
                "inject_unavailable": self.unavailable}


__all__ = ["Injector", "Injected", "Injection", "Waiting", "decode", "encode", "cgroup2_root",
           "unavailable", "BPF_SK_MSG_VERDICT"]
