"""Python asyncio services: the server request each client call of an event
loop is made for, exactly, from uprobes on CPython's _asyncio module and
Context.run (tracer/bpf/pyasync.bpf.c; docs/eventloop.md).

One thread runs every request of an event loop, so the correlator's thread
link ("the request the writing thread handles") is ambiguous as soon as two
requests are in flight, and it is then not made. pyasync.bpf.o follows
tasks instead: the task that a server connection's data wakes (or creates)
serves the request read there, so do the tasks it creates, and a write on a
client connection by such a task gives a record (client connection, server
connection, time of the read). The correlator asks `PyAsyncio.parent` at
each client request (one of Correlator.runtime_parents, beside the Go
add-on's): the record of the request's first write names the server
connection, and the server request in flight there that had started by that
read is the parent (source "thread": a task is the event loop's thread;
confidence 1).

Interpreters: CPython 3.11 whose _asyncio module and libpython (or the
executable, when libpython is linked in) have their function symbols, in the
file or in a separate debug file (tracer/symbols/debugfile.py: build-id,
.gnu_debuglink, debuginfod). Found at start (/proc/PID/maps) and at exec
(pa_execs ring), attached once per file (inode, pid -1). Anything else is
named in one line and keeps the correlator's other links.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import struct
from collections import deque
from dataclasses import dataclass, field

from . import events, loader
from .addons import Addon
from .correlate import conn_key

log = logging.getLogger("tracer.pyasync")

# _asyncio functions -> (program, uretprobe program or None); each return is
# attached before its entry, so no step's end is missed. All are reached
# through function pointers (type slots, method tables): never inlined, in
# any build (Debian's LTO build inlines task_step and future_set_result).
MODULE_HOOKS: dict[str, tuple[str, str | None]] = {
    "TaskStepMethWrapper_call": ("pa_step_wrapper", "pa_step_ret"),
    "task_wakeup": ("pa_wakeup", "pa_step_ret"),
    "_asyncio_Task___init__": ("pa_task_init", None),
    "_asyncio_Future_set_result": ("pa_set_result", None),
    "_asyncio_Future_set_exception": ("pa_set_exception", None),
}
# libpython (or the executable): Context.run, the boundary of loop callbacks
RUNTIME_HOOKS: dict[str, tuple[str, str | None]] = {"context_run": ("pa_callback", None)}
SUPPORTED = ((3, 11),)
# Structure offsets by CPython version: TaskStepMethWrapper.sw_task and
# FutureObj.fut_callback0 (_asyncio's own; checked against the DWARF of a 3.11
# build by tests/unit/test_pyasync.py), PyCFunctionObject.m_ml/m_self and
# PyMethodDef.ml_meth (the public object layouts of Include/).
OFFSETS = {(3, 11): {"stepwrapper_task": 16, "fut_callback0": 24, "cfunc_ml": 16,
                     "cfunc_self": 24, "ml_meth": 8}}
SHARED_MAPS = ("conns", "filter_cfg", "filter_pids", "filter_cgroups", "filter_netns",
               "filter_ports", "filter_comms")
RECORD_KEEP_NS = 30 * 1_000_000_000  # a call record older than this joins nothing
CALLS_PER_CONN = 1024  # records kept per client connection (the events ring lags)
MAX_CONNS = 65536  # client connections with records kept
# The record is written by a program on the same syscall entry as sock.bpf.o's
# (attached after it, so it runs after it): its time is at most this much
# before the request's start if the order were ever reversed. A thread's
# previous syscall is microseconds earlier.
ENTRY_SKEW_NS = 500
PA_MAX_MODULES = 64
PA_MAX_DEPTH = 8
PA_MAX_NEST = 4
PA_REC_CALL = 1
# an LTO build renames local functions (Debian's python3.11: context_run.lto_priv.0);
# other suffixes (.isra, .constprop, .part) mark changed arguments: never taken
_LTO_NAME = re.compile(r"^(.+)\.lto_priv\.\d+$")
_MODULE_NAME = re.compile(r"_asyncio\.cpython-3(\d+)[^/]*\.so$")
_LIBPYTHON = re.compile(r"/libpython3\.(\d+)[^/]*\.so[^/]*$")
_PYTHON_EXE = re.compile(r"/python3\.(\d+)$")


# -- the mirror of pyasync.h (checked against BTF: tests/unit/test_pyasync.py) -------
class PaCallC(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint8), ("depth", ctypes.c_uint8), ("pad", ctypes.c_uint16),
                ("pid", ctypes.c_uint32), ("tid", ctypes.c_uint32), ("pad2", ctypes.c_uint32),
                ("ts", ctypes.c_uint64), ("client_conn_id", ctypes.c_uint64),
                ("server_conn_id", ctypes.c_uint64), ("serve_ts", ctypes.c_uint64),
                ("task", ctypes.c_uint64)]


class PaThreadC(ctypes.Structure):
    _fields_ = [("stack", ctypes.c_uint64 * PA_MAX_NEST), ("cb_conn", ctypes.c_uint64),
                ("cb_ts", ctypes.c_uint64), ("read_fd", ctypes.c_int32),
                ("depth", ctypes.c_uint32)]


class PaKeyC(ctypes.Structure):
    _fields_ = [("tgid", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("obj", ctypes.c_uint64)]


class PaServeC(ctypes.Structure):
    _fields_ = [("conn_id", ctypes.c_uint64), ("serve_ts", ctypes.c_uint64),
                ("depth", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class PaOffsetsC(ctypes.Structure):
    _fields_ = [*((n, ctypes.c_uint16) for n in ("stepwrapper_task", "fut_callback0", "cfunc_ml",
                                                  "cfunc_self", "ml_meth", "valid")),
                ("pad", ctypes.c_uint32), ("set_result", ctypes.c_uint64),
                ("set_exception", ctypes.c_uint64), ("wakeup", ctypes.c_uint64)]


STRUCTS = {"pa_call": PaCallC, "pa_thread": PaThreadC, "pa_key": PaKeyC,
           "pa_serve": PaServeC, "pa_offsets": PaOffsetsC}
# enum pa_counter, in order: summary key of each
COUNTERS = ("hits_step", "hits_step_ret", "hits_task_init", "hits_set_result", "hits_callback", "nest_limit", "cb_reads", "task_reads", "woken", "served",
            "created", "inherited", "depth_limit", "call_outside", "calls", "ring_full",
            "read_fault", "no_offsets")
ENUMS = {"pa_counter": {f"PA_{k.upper().replace('HITS_', 'HIT_')}": i
                        for i, k in enumerate(COUNTERS)} | {"PA_CTR_MAX": len(COUNTERS)},
         "pa_record_type": {"PA_REC_CALL": PA_REC_CALL}}
_CALL = struct.Struct("<BBHIIIQQQQQ")


# -- what is read from an interpreter ------------------------------------------------
class NotPython(Exception):
    """Not a CPython process (or one without asyncio to follow)."""


class Unsupported(Exception):
    """A CPython this add-on cannot follow: the message names why."""


@dataclass(frozen=True)
class Interpreter:
    """One CPython installation as a process maps it: where its _asyncio
    module and its Context.run live (paths as this process reaches them)."""
    version: tuple[int, int]
    module: str  # the _asyncio extension (or the executable, if built in)
    runtime: str  # libpython, or the executable when it is linked in


@dataclass(frozen=True)
class Hooks:
    """File offsets and virtual addresses of the hooked functions of one
    file, and where the symbols came from ("symtab", "dynsym" or the debug
    file's path)."""
    offsets: dict[str, int]
    source: str
    vaddrs: dict[str, int] = field(default_factory=dict)


def interpreter_of(maps_lines, exe: str, root: str = "") -> Interpreter:
    """The CPython a process runs, from its /proc/PID/maps lines and its
    executable's path (both as the process sees them; root: /proc/PID/root
    to reach them from here). NotPython if it is none."""
    paths = []
    for line in maps_lines:
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/"):
            paths.append(parts[5].rstrip("\n"))
    lib = next((p for p in paths if _LIBPYTHON.search(p)), None)
    module = next((p for p in paths if _MODULE_NAME.search(p)), None)
    if lib is not None:
        minor = int(_LIBPYTHON.search(lib).group(1))
        runtime = lib
        dynload = f"{os.path.dirname(lib)}/python3.{minor}/lib-dynload"
    else:
        m = _PYTHON_EXE.search(exe)
        if m is None:
            raise NotPython(f"{exe}: not a CPython 3 executable")
        minor = int(m.group(1))
        runtime = exe
        dynload = f"{os.path.dirname(os.path.dirname(exe))}/lib/python3.{minor}/lib-dynload"
    if module is None:
        # not imported yet (found at exec): the one the interpreter would load
        try:
            names = sorted(n for n in os.listdir(root + dynload)
                           if n.startswith(f"_asyncio.cpython-3{minor}"))
        except OSError:
            names = []
        module = f"{dynload}/{names[0]}" if names else runtime  # else: built in
    return Interpreter((3, minor), root + module, root + runtime)


def find_symbols(path: str, names) -> Hooks:
    """File offsets of the functions `names` defined in the ELF file at path:
    its .symtab (or .dynsym), else its separate debug file's .symtab (the
    offsets are the binary's: the debug file has the same virtual addresses).
    Missing names are left out."""
    from .symbols import debugfile
    from .symbols.rawelf import SHT_DYNSYM, SHT_SYMTAB, RawElf, file_reader

    want = set(names)
    with open(path, "rb") as f:
        elf = RawElf(file_reader(f.fileno()))
        found, source = _lookup(elf, want, ((SHT_SYMTAB, "symtab"), (SHT_DYNSYM, "dynsym")))
        if len(found) < len(want):
            dbg = debugfile.locate(path, elf.build_id(), debugfile.read_debuglink(elf))
            if dbg is not None:
                with open(dbg.path, "rb") as g:
                    more, _ = _lookup(RawElf(file_reader(g.fileno())), want - set(found),
                                      ((SHT_SYMTAB, dbg.path),))
                if more:
                    found.update(more)
                    source = dbg.path
        offsets, vaddrs = {}, {}
        for name, vaddr in found.items():
            off = elf.vaddr_to_offset(vaddr)
            if off is not None:
                offsets[name], vaddrs[name] = off, vaddr
    return Hooks(offsets, source, vaddrs)


def _lookup(elf, want: set, tables) -> tuple[dict[str, int], str]:
    found: dict[str, int] = {}
    source = ""
    for sh_type, label in tables:
        tab = elf.function_table(sh_type)
        if tab is None:
            continue
        for i in range(len(tab.vaddr)):
            name = tab.name_at(i)
            if name not in want:
                m = _LTO_NAME.match(name)
                name = m.group(1) if m else name
            if name in want and name not in found:
                found[name] = tab.vaddr[i]
                source = source or label
        if len(found) == len(want):
            break
    return found, source


def inspect(interp: Interpreter) -> tuple[Hooks, Hooks]:
    """The offsets to attach in the module and the runtime, or Unsupported."""
    ver = ".".join(map(str, interp.version))
    if interp.version not in SUPPORTED:
        raise Unsupported(f"CPython {ver}: only "
                          f"{', '.join('.'.join(map(str, v)) for v in SUPPORTED)} is supported")
    mod = find_symbols(interp.module, MODULE_HOOKS)
    missing = [n for n in MODULE_HOOKS if n not in mod.offsets]
    if missing:
        raise Unsupported(f"CPython {ver}: no symbol for {', '.join(missing)} in "
                          f"{interp.module} (stripped: install its debug symbols)")
    rt = find_symbols(interp.runtime, RUNTIME_HOOKS)
    if "context_run" not in rt.offsets:
        raise Unsupported(f"CPython {ver}: no symbol for context_run in {interp.runtime} "
                          "(stripped: install its debug symbols)")
    return mod, rt


# -- the probes ------------------------------------------------------------------------
@dataclass
class PyProbes:
    """pyasync.bpf.o, loaded on the maps of a loaded sock.bpf.o, its syscall
    programs attached at start, its uprobes once per interpreter file."""

    obj: loader.BPFObject
    records: loader.RingBuffer | None = None
    execs: loader.RingBuffer | None = None
    attached: dict[tuple[int, int], str] = field(default_factory=dict)  # file -> description
    slots: dict[tuple[int, int], int] = field(default_factory=dict)  # module file -> slot
    interpreters: dict[str, str] = field(default_factory=dict)  # module path -> description
    unsupported: dict[str, str] = field(default_factory=dict)  # path -> why
    refused: dict[tuple[int, int], str] = field(default_factory=dict)
    pids: set[int] = field(default_factory=set)  # processes running an attached interpreter
    unreadable: int = 0

    @classmethod
    def load(cls, sock: loader.BPFObject, **rodata: int) -> PyProbes:
        obj = loader.BPFObject.load_on("pyasync", sock, SHARED_MAPS, **rodata)
        try:
            probes = cls(obj)
            probes.records = obj.ring_buffer("pa_records")
            probes.execs = obj.ring_buffer("pa_execs")
        except BaseException:
            obj.close()
            raise
        return probes

    def start(self) -> None:
        for prog in self.obj.programs:
            if self.obj.section(prog).startswith("tracepoint/"):
                self.obj.attach(prog)  # the syscalls first: no step is half seen
        for pid in self.candidates():
            if pid != os.getpid():
                self.scan_pid(pid)

    def candidates(self) -> list[int]:
        """The processes the filters let through (filters.h process_wanted)."""
        raw = self.obj.map("filter_cfg").lookup(0)
        cfg = events.FilterConfigC.from_buffer_copy(raw) if raw else events.FilterConfigC()
        if cfg.by_pid:
            return sorted(int.from_bytes(k, "little") for k in self.obj.map("filter_pids").keys())
        return sorted(int(e) for e in os.listdir("/proc") if e.isdigit())

    def scan_pid(self, pid: int) -> bool:
        """Attach to the CPython pid runs, if not attached yet; True if it is."""
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            with open(f"/proc/{pid}/maps") as f:
                lines = f.readlines()
        except PermissionError:
            self.unreadable += 1
            return False
        except OSError:
            return False  # gone, or a kernel thread
        try:
            interp = interpreter_of(lines, exe, f"/proc/{pid}/root")
        except NotPython:
            return False
        if self.consider(interp):
            self.pids.add(pid)
            return True
        return False

    def attach_pid(self, pid: int) -> dict:
        """In the privileged broker (tracer/broker.py, request attach_pyasync)."""
        ok = self.scan_pid(pid)
        return {"attached": ok, "interpreters": sorted(self.interpreters.values()),
                "unsupported": dict(self.unsupported)}

    def _key(self, path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def consider(self, interp: Interpreter) -> bool:
        mkey, rkey = self._key(interp.module), self._key(interp.runtime)
        if mkey is None or rkey is None:
            return False
        if mkey in self.slots:
            return True
        if mkey in self.refused:
            return False
        name = _host_path(interp.module)
        try:
            mod, rt = inspect(interp)
        except Unsupported as e:
            return self._refuse(name, mkey, str(e))
        except (OSError, struct.error, ValueError) as e:
            return self._refuse(name, mkey, f"unreadable: {e}")
        if len(self.slots) >= PA_MAX_MODULES:
            return self._refuse(name, mkey, f"more than {PA_MAX_MODULES} _asyncio modules")
        slot = len(self.slots)
        offs = PaOffsetsC(**OFFSETS[interp.version], valid=1,
                          set_result=mod.vaddrs["_asyncio_Future_set_result"],
                          set_exception=mod.vaddrs["_asyncio_Future_set_exception"],
                          wakeup=mod.vaddrs["task_wakeup"])
        self.obj.map("pa_offsets").update(slot, bytes(offs))
        before = set(self.obj.attached)
        try:
            if rkey not in self.attached:
                self._attach(interp.runtime, RUNTIME_HOOKS, rt, slot)
            self._attach(interp.module, MODULE_HOOKS, mod, slot)
        except loader.AttachError as e:
            for link in set(self.obj.attached) - before:  # all of them or none
                self.obj.detach(link)
            return self._refuse(name, mkey, str(e))
        ver = ".".join(map(str, interp.version))
        self.attached[rkey] = _host_path(interp.runtime)
        self.slots[mkey] = slot
        self.interpreters[name] = (f"{name} (CPython {ver}, symbols from {mod.source}; "
                                   f"Context.run in {_host_path(interp.runtime)})")
        log.info("asyncio: attached to %s", self.interpreters[name])
        return True

    def _attach(self, path: str, hooks, found: Hooks, slot: int) -> None:
        for func, (_, ret) in hooks.items():
            if ret is not None:
                self.obj.attach_uprobe(ret, path, found.offsets[func], retprobe=True,
                                       cookie=slot)
        for func, (prog, _) in hooks.items():
            self.obj.attach_uprobe(prog, path, found.offsets[func], cookie=slot)

    def _refuse(self, name: str, key: tuple[int, int], why: str) -> bool:
        self.unsupported[name] = self.refused[key] = why
        log.warning("asyncio: %s: %s; its processes keep the other correlation links",
                    name, why)
        return False

    def take_execs(self) -> list[int]:
        pids: list[int] = []

        def on_exec(buf, off, size):
            if size >= 4:
                pids.append(int.from_bytes(buf[off:off + 4], "little"))

        if self.execs is not None:
            self.execs.consume(on_exec)
        return pids

    def counters(self) -> dict[str, int]:
        m = self.obj.map("pa_counters")
        return {name: m.percpu_sum(i) for i, name in enumerate(COUNTERS)}

    def probe_ns(self) -> dict[str, float]:
        """Mean BPF run time per hit of each program (bpf_stats; empty while
        kernel.bpf_stats_enabled is 0)."""
        out = {}
        for prog in sorted(self.obj.programs):
            try:
                with open(f"/proc/self/fdinfo/{self.obj.prog_fd(prog)}") as f:
                    info = dict(line.split(":", 1) for line in f if ":" in line)
                ns, cnt = int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0))
            except (OSError, ValueError):
                continue
            if cnt:
                out[prog] = round(ns / cnt, 1)
        return out

    def detach(self) -> None:
        self.obj.detach_all()

    def close(self) -> None:
        self.obj.close()


def _host_path(path: str) -> str:
    m = re.match(r"^/proc/\d+/root(/.*)$", path)
    return m.group(1) if m else path


# -- the join --------------------------------------------------------------------------
class CallIndex:
    """pa_call records by client connection, and the join to the correlator's
    server contexts. Pure: tests feed it records and a table."""

    def __init__(self, table) -> None:
        self.table = table  # tracer.conn.ConnectionTable: conns by id, the correlator
        self.calls: dict[int, deque] = {}  # client conn_id -> (ts, server conn_id, serve_ts)
        self.links = 0
        self.no_call = 0  # a client request with no record, of a process that wrote some
        self.no_server = 0  # a record whose server request is not in flight (or unknown)
        self.records = 0
        self.pids: set[int] = set()  # processes that wrote records

    def add(self, ts: int, client: int, server: int, serve_ts: int, pid: int = 0) -> None:
        self.records += 1
        if pid not in self.pids and len(self.pids) < MAX_CONNS:
            self.pids.add(pid)
        q = self.calls.get(client)
        if q is None:
            if len(self.calls) >= MAX_CONNS:
                self.calls.pop(next(iter(self.calls)))  # the oldest connection
            q = self.calls[client] = deque(maxlen=CALLS_PER_CONN)
        q.append((ts, server, serve_ts))

    def on_record(self, buf, off: int, size: int) -> None:
        if size >= _CALL.size:
            rec = _CALL.unpack_from(buf, off)
            if rec[0] == PA_REC_CALL:
                self.add(rec[6], rec[7], rec[8], rec[9], rec[3])

    def find(self, client_conn_id: int, start_ts: int, end_ts: int):
        """The record of a write of the request whose head was written from
        start_ts (first write's entry) to end_ts (last write's exit) on that
        connection: one made inside that window. Older records are dropped
        (requests are seen in order on a connection); a write with no record
        (its task served nothing) finds none, never a later write's."""
        q = self.calls.get(client_conn_id)
        if not q:
            return None
        lo = start_ts - ENTRY_SKEW_NS
        while q and q[0][0] < lo:
            q.popleft()
        rec = q[0] if q and q[0][0] <= end_ts else None
        if rec is not None:
            while q and q[0][0] <= end_ts:  # the head's other writes: same task
                q.popleft()
        if not q:
            del self.calls[client_conn_id]
        return rec

    def server_context(self, pid: int, server_conn_id: int, serve_ts: int):
        """The server request in flight on that connection that had started by
        serve_ts (the latest such: one at a time on an HTTP/1 connection)."""
        sconn = self.table.conns.get(server_conn_id)
        key = conn_key(sconn, True) if sconn is not None else None
        if key is None:
            return None
        best = None
        for ctx in self.table.correlator.active_pid.get(pid, ()):
            if ctx.key == key and ctx.start_ts <= serve_ts \
                    and (best is None or ctx.start_ts > best.start_ts):
                best = ctx
        return best

    def expire(self, now_ns: int) -> None:
        old = now_ns - RECORD_KEEP_NS
        for cid in [c for c, q in self.calls.items() if q[-1][0] < old]:
            del self.calls[cid]


class PyAsyncio(Addon):
    """The add-on (tracer/addons.py): pyasync.bpf.o on sock.bpf.o's maps, its
    records drained before every read of the events ring (a client request's
    record is written at its write's entry, before the request's own event),
    one of the correlator's runtime_parents, answered from them for the
    requests they cover (None for the others: the next hook is asked)."""

    name = "pyasync"
    drains = True
    warning = "asyncio task links not traced"

    def __init__(self) -> None:
        self.probes: PyProbes | None = None
        self.index: CallIndex | None = None
        self.last: dict = {}  # counters() as of close()
        self.broker = None
        self.broker_refused = ""
        self.link_fds: list[int] = []

    @classmethod
    def idle(cls) -> dict:
        return cls().counters()

    def start(self, kernel, table) -> None:
        self.index = CallIndex(table)
        if kernel.source is not None:
            self.warning = ""
            self.unavailable = "records are replayed"
            return
        self.probes = PyProbes.load(kernel.loaded(), self_tgid=os.getpid())
        self.probes.start()
        table.correlator.runtime_parents.append(self.parent)

    def separated(self, broker) -> None:
        self.broker = broker

    def broker_ops(self) -> dict:
        if self.probes is None:
            return {}
        probes = self.probes

        def attach_pyasync(pid: int) -> dict:
            if pid <= 0:
                raise ValueError("pid must be positive")
            return probes.attach_pid(pid)

        return {"attach_pyasync": ({"pid": int}, attach_pyasync)}

    def bpf_objects(self) -> list:
        return [self.probes.obj] if self.probes is not None else []

    def drain(self) -> None:
        p = self.probes
        for pid in p.take_execs():
            if self.broker is None:
                p.scan_pid(pid)
            elif not self.broker_refused:
                self._ask_broker(pid)
        p.records.consume(self.index.on_record)

    def _ask_broker(self, pid: int) -> None:
        from .broker import BrokerGone

        try:
            reply, fds = self.broker.request("attach_pyasync", pid=pid)
        except BrokerGone as e:
            self.broker_refused = f"the broker is gone ({e})"
            return
        self.link_fds.extend(fds)
        if not reply.get("ok"):
            why = str(reply.get("refused") or reply.get("error") or "refused")
            if "not a process the kernel reported" in why:
                return  # that pid only (no exec ring of the broker's names it)
            self.broker_refused = why
            log.warning("asyncio interpreters started from now on are not followed "
                        "(broker: %s)", why)
            return
        p = self.probes
        for desc in reply.get("interpreters", ()):
            p.interpreters.setdefault(desc.split(" (", 1)[0], desc)
        p.unsupported.update(reply.get("unsupported", {}))
        if reply.get("attached"):
            p.pids.add(pid)

    def parent(self, conn, pid: int, ts: int):
        """Correlator.runtime_parents: the server request (correlate.Context) whose
        task made the client request starting at ts on conn, else None.
        Other processes cost a dict miss."""
        index = self.index
        end = conn.last_ts  # the exit of the event that completed the head
        rec = index.find(conn.conn_id, ts, end)
        if rec is None:
            p = self.probes
            if p is not None and p.records.available():
                p.records.consume(index.on_record)  # written after the last drain
                rec = index.find(conn.conn_id, ts, end)
            if rec is None:
                if pid in index.pids:
                    index.no_call += 1
                return None
        ctx = index.server_context(pid, rec[1], rec[2])
        if ctx is None:
            index.no_server += 1
            return None
        index.links += 1
        return ctx

    def tick(self, now_ns: int) -> None:
        self.index.expire(now_ns)

    def stop(self) -> None:
        if self.probes is not None:
            self.probes.detach()

    def close(self) -> None:
        if self.probes is not None:
            self.probes.records.consume(self.index.on_record)
            self.last = self.counters()
            self.probes.close()
            self.probes = None
        for fd in self.link_fds:
            os.close(fd)
        self.link_fds = []

    def counters(self) -> dict:
        p, i = self.probes, self.index
        if p is None:
            return self.last or {
                "pyasync_interpreters": [], "pyasync_unsupported": {},
                "pyasync_unavailable": self.unavailable, "pyasync_links": 0,
                "pyasync_link_misses": {"no_call": 0, "no_server": 0},
                "pyasync_records": 0, "pyasync_processes": 0,
                "pyasync_unreadable_processes": 0, "pyasync_exec_discovery": "",
                "pyasync_kernel": {k: 0 for k in COUNTERS}, "pyasync_probe_ns": {}}
        return {
            "pyasync_interpreters": sorted(p.interpreters.values()),
            "pyasync_unsupported": dict(p.unsupported),
            "pyasync_unavailable": self.unavailable, "pyasync_links": i.links,
            "pyasync_link_misses": {"no_call": i.no_call, "no_server": i.no_server},
            "pyasync_records": i.records, "pyasync_processes": len(p.pids),
            "pyasync_unreadable_processes": p.unreadable,
            "pyasync_exec_discovery": self.broker_refused,
            "pyasync_kernel": p.counters(), "pyasync_probe_ns": p.probe_ns()}
