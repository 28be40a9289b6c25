"""Privilege separation of `tracer run` (issue 19): a small privileged broker
and the agent, which parses untrusted bytes with no capability.

    client = broker.split(tracer, broker_keep)   # returns in the agent only

`split` forks once everything is loaded and attached. The parent stays the
agent: it keeps its pid, which the BPF objects were loaded to ignore
(rodata self_tgid), its threads and its signals; it drops every capability,
loads its seccomp filter (tracer/seccomp.py) and drains the rings. The child
is the broker: it keeps the fds of the load (maps, programs, links), only the
capabilities run-time attaching needs (`broker_keep`), no network socket,
and it never reads traffic. Both hold every link, so:
- the agent dies (a parser crash, SIGKILL, a seccomp kill): the channel
  closes, the broker closes everything it holds, which detaches it all, and
  exits with one line naming how the agent ended;
- the broker dies: the agent's copies keep what is attached traced, and the
  agent says once that processes started from then on are not covered.

The protocol: one JSON object per SOCK_SEQPACKET message (the boundaries are
the kernel's), a request and its reply in turn, the agent asking. Requests:

    {"op": "hello"}                                   the broker's drop result
    {"op": "maps", "pid": N}                          the files pid N maps executable:
                                                      {"mappings": [[path, dev, ino], ...]},
                                                      for a pid the kernel reported an exec
                                                      of (ExecWatch), not any pid
    {"op": "attach_tls", "path": P, "dev": D, "ino": I}
                                                      attach tls.bpf.o to that file, if
                                                      the broker found it itself; the new
                                                      links' fds come with the reply
    {"op": "config"}                                  the --config file named at start, opened
                                                      by the broker (SIGHUP reload): its fd
    {"op": "exe", "pid": N}                           /proc/N/exe of a process the filters
                                                      trace (--service-name EXE=, exe filters)
    {"op": "stack_maps", "pid": N}                    --span-stacks: /proc/N/maps opened by the
                                                      broker (its fd), N a traced process
    {"op": "stack_module", "pid": N, "path": P}       its fd of P in N's mount namespace, P a
                                                      file the broker read in N's maps
    {"op": "detach"}                                  at stop: the broker closes its links
                                                      (nothing more is attached) and gives
                                                      its counters
    add-ons' requests (Addon.broker_ops, e.g. the Go runtime's attach_go {pid}),
    checked the same way (a pid field: one the kernel reported an exec of); the
    fds of the links they made go with the reply

Everything is checked: exact fields and types, paths and inodes only as the
broker itself discovered them (system libraries, /proc/PID/maps it read),
pids only as the kernel reported them (the exec rings, read by the broker
itself) or as the filters trace them, symbol offsets computed by the broker. A request that fails a check gets
{"ok": false, "refused": why} and is counted (`refused`, per reason).
"""

from __future__ import annotations

import gc
import json
import logging
import mmap
import os
import select
import signal
import socket
import stat
import sys
import time
from collections import OrderedDict

from . import events, loader, privileges
from .ring import RingBuffer
from .sock import proc_comm_key

log = logging.getLogger("tracer.broker")

MAX_MESSAGE = 64 << 10
MAX_FDS = 64
REQUEST_TIMEOUT_S = 10.0
BROKER_EXIT_WAIT_S = 10.0

# op -> its fields and their types
REQUESTS: dict[str, dict[str, type]] = {
    "hello": {},
    "maps": {"pid": int},
    "attach_tls": {"path": str, "dev": int, "ino": int},
    "config": {},
    "exe": {"pid": int},
    "stack_maps": {"pid": int},
    "stack_module": {"pid": int, "path": str},
    "detach": {},
}
# what is still answered once the agent stops: reads that name and symbolize
# the spans of the last drain (the process filter is still loaded), nothing
# that attaches
AFTER_DETACH = frozenset({"detach", "exe", "stack_maps", "stack_module"})
# the exec rings of tls.bpf.c and golang.bpf.c (sched_process_exec, filtered
# by process_wanted): struct exec_event, the pid first
EXEC_RINGS = ("tls_execs", "go_execs", "pa_execs")
EXEC_KEEP_S = 60.0  # a reported pid may be asked about this long (tls.py rescans at +3 s)
MAX_EXEC_PIDS = 1 << 16
MAX_STACK_PIDS = 1024  # pids whose maps the broker read for --span-stacks (LRU)
MAX_CONFIG_BYTES = 1 << 20


class ProtocolError(ValueError):
    pass


class BrokerGone(Exception):
    pass


def send(sock: socket.socket, msg: dict, fds=()) -> None:
    data = json.dumps(msg, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"message of {len(data)} bytes (at most {MAX_MESSAGE})")
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def recv(sock: socket.socket) -> tuple[dict | None, list[int]]:
    """One message: (None, []) at EOF; ProtocolError for anything but one
    whole JSON object (any fds that came with it are closed)."""
    data, fds, flags, _ = socket.recv_fds(sock, MAX_MESSAGE + 1, MAX_FDS)
    if not data and not fds:
        return None, []
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(data) > MAX_MESSAGE:
            raise ProtocolError("message too long")
        try:
            msg = json.loads(data)
        except ValueError:
            raise ProtocolError("not JSON") from None
        if not isinstance(msg, dict):
            raise ProtocolError("not a JSON object")
    except ProtocolError:
        for fd in fds:
            os.close(fd)
        raise
    return msg, fds


def check_request(msg: dict, extra: dict | None = None) -> str:
    """The op of a well-formed request; ProtocolError (the refusal) if not.
    `extra`: more ops and their fields (the add-ons')."""
    op = msg.get("op")
    ops = {**(extra or {}), **REQUESTS}
    fields = ops.get(op) if isinstance(op, str) else None
    if fields is None:
        raise ProtocolError("unknown request")
    if set(msg) != {"op", *fields}:
        raise ProtocolError(f"{op}: fields must be {sorted(fields)}")
    for name, kind in fields.items():
        v = msg[name]
        if type(v) is not kind or (kind is int and not 0 <= v < 1 << 63):
            raise ProtocolError(f"{op}: {name} is not a {kind.__name__}")
    return op


# ---- what the kernel reported --------------------------------------------------------

def _u64(buf, off: int = 0) -> int:
    return int.from_bytes(buf[off:off + 8], "little")


class _ExecRing:
    """One exec ring read at the broker's own position: `producer` is the
    producer page and the data area, `consumer` the agent's consumer page
    (read only here)."""

    def __init__(self, consumer, producer, size: int, page: int = mmap.PAGESIZE) -> None:
        self.consumer = consumer
        self.producer = producer
        self.size = size
        self.pos = bytearray(consumer[:8])  # from where the agent is now
        self.rb = RingBuffer.over(self.pos, producer, size, page)

    @classmethod
    def map(cls, fd: int, size: int) -> _ExecRing:
        page = mmap.PAGESIZE
        cons = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ)
        prod = mmap.mmap(fd, page + size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        return cls(cons, prod, size, page)


class ExecWatch:
    """The processes the kernel reported exec'ing, as the broker reads them
    itself: the agent consumes the exec rings, but a record stays in the
    ring's memory until the producer comes round again (64 KiB: 4096 execs),
    so the broker reads them behind the agent at a position of its own and
    answers for those pids only, never for a pid the agent merely names.
    A lap it missed (an exec storm between two requests) is counted in
    `lost`; the pids in it are then refused."""

    def __init__(self, rings: list[_ExecRing], clock=time.monotonic) -> None:
        self.rings = rings
        self.clock = clock
        self.pids: OrderedDict[int, float] = OrderedDict()  # pid -> when read
        self.lost = 0

    @classmethod
    def of(cls, tracer) -> ExecWatch:
        rings = []
        for obj in bpf_objects(tracer):
            for name in EXEC_RINGS:
                if name in obj.maps():
                    m = obj.map(name)
                    rings.append(_ExecRing.map(m.fd, m.max_entries))
        return cls(rings)

    def _read(self, ring: _ExecRing) -> list[int]:
        start = _u64(ring.pos)
        if _u64(ring.producer) - start > ring.size:  # overwritten: resume where the agent is
            self.lost += 1
            ring.pos[:8] = ring.consumer[:8]
            start = _u64(ring.pos)
        got: list[int] = []

        def on_exec(buf, off, size):
            if size >= 4:
                got.append(int.from_bytes(buf[off:off + 4], "little"))

        ring.rb.consume(on_exec)
        if _u64(ring.producer) - start > ring.size:  # came round while we read
            self.lost += 1
            return []
        return got

    def reported(self, pid: int) -> bool:
        """True if the kernel reported an exec of pid in the last EXEC_KEEP_S."""
        now = self.clock()
        for ring in self.rings:
            for p in self._read(ring):
                self.pids[p] = now
                self.pids.move_to_end(p)
        while self.pids and (len(self.pids) > MAX_EXEC_PIDS
                             or next(iter(self.pids.values())) < now - EXEC_KEEP_S):
            self.pids.popitem(last=False)
        return pid in self.pids


# ---- the broker (the child) -------------------------------------------------------

def agent_status(pid: int) -> int | None:
    """The wait status of an exited agent (field 52 of /proc/PID/stat, kept
    while it is a zombie), or None once reaped or unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    if len(fields) < 50 or fields[0] not in (b"Z", b"X"):
        return None
    return int(fields[49])


def describe_end(pid: int, status: int | None) -> str:
    if status is None:
        how = "is gone"
    elif status & 0x7F:
        sig = status & 0x7F
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
        how = f"was killed by {name}"
        if sig == signal.SIGSYS:
            how += (": a system call outside its seccomp allow-list (the kernel log names it, "
                    "audit type=1326)")
    else:
        how = f"exited with status {status >> 8} before stopping"
    return f"tracer: the agent (pid {pid}) {how}; the broker detached everything"


class Broker:
    """The privileged side: answers the agent's requests until it goes."""

    def __init__(self, tracer, sock: socket.socket, agent_pid: int,
                 dropped: privileges.DropResult | None, *, config: str | None = None,
                 execs: ExecWatch | None = None) -> None:
        self.tracer = tracer
        self.sock = sock
        self.agent_pid = agent_pid
        self.dropped = dropped
        self.config = config  # the --config path named at start: the only file "config" opens
        self.execs = execs if execs is not None else ExecWatch([])
        self.stack_paths: OrderedDict[int, set[str]] = OrderedDict()  # pid -> files in its maps
        self._opened: list[int] = []  # fds opened for the reply being sent
        self.requests = 0
        self.refused = 0
        self.refusals: dict[str, int] = {}
        self.attached = 0  # libraries attached on request
        self.detached = False  # the agent is stopping: nothing more is attached
        self.addon_ops: dict = {}  # op -> (fields, handler, add-on)
        for a in tracer.addons:
            for op, (fields, handler) in a.broker_ops().items():
                if op not in REQUESTS:
                    self.addon_ops[op] = (fields, handler, a)

    def counters(self) -> dict:
        return {"pid": os.getpid(), "requests": self.requests, "refused": self.refused,
                "refusals": dict(self.refusals), "libraries_attached": self.attached,
                "exec_laps_lost": self.execs.lost}

    def refuse(self, why: str) -> tuple[dict, list[int]]:
        self.refused += 1
        self.refusals[why] = self.refusals.get(why, 0) + 1
        return {"ok": False, "refused": why}, []

    def handle(self, msg: dict) -> tuple[dict, list[int]]:
        self.requests += 1
        try:
            op = check_request(msg, {k: v[0] for k, v in self.addon_ops.items()})
        except ProtocolError as e:
            return self.refuse(str(e))
        if self.detached and op not in AFTER_DETACH:
            return self.refuse(f"{op}: the agent is stopping")
        fields = {k: v for k, v in msg.items() if k != "op"}
        if op in self.addon_ops:
            return self._addon_op(op, fields)
        return getattr(self, "_" + op)(**fields)

    def _addon_op(self, op: str, fields: dict) -> tuple[dict, list[int]]:
        _, handler, addon = self.addon_ops[op]
        if "pid" in fields and not self.execs.reported(fields["pid"]):
            return self.refuse(f"{op}: not a process the kernel reported an exec of")
        objs = addon.bpf_objects()
        before = [set(o.attached) for o in objs]
        try:
            reply = handler(**fields)
        except (loader.LoaderError, OSError, ValueError) as e:
            return {"ok": False, "error": f"{op}: {e}"}, []
        fds = [fd for o, b in zip(objs, before, strict=True)
               for fd in link_fds(o, set(o.attached) - b)]
        return {"ok": True, **reply}, fds

    def _hello(self) -> tuple[dict, list[int]]:
        d = self.dropped
        return {"ok": True, "pid": os.getpid(),
                "kept": sorted(d.kept) if d else None, "user": d.user if d else "",
                "warnings": d.warnings if d else []}, []

    def _tls(self):
        return getattr(self.tracer, "tls", None)

    def _maps(self, pid: int) -> tuple[dict, list[int]]:
        probes = self._tls()
        if probes is None:
            return self.refuse("maps: TLS discovery is off")
        if pid <= 0:
            return self.refuse("maps: not a process id")
        if not self.execs.reported(pid):
            return self.refuse("maps: not a process the kernel reported an exec of")
        try:
            found = probes.discover(pid)
        except PermissionError:
            return {"ok": False, "error": "unreadable"}, []
        return {"ok": True, "mappings": [list(m) for m in found]}, []

    def _attach_tls(self, path: str, dev: int, ino: int) -> tuple[dict, list[int]]:
        probes = self._tls()
        if probes is None:
            return self.refuse("attach_tls: TLS discovery is off")
        if probes.discovered.get((dev, ino)) != path:
            return self.refuse("attach_tls: not a file the broker discovered")
        before = set(probes.obj.attached)
        attached = probes.consider(path, dev, ino)
        fds = link_fds(probes.obj, set(probes.obj.attached) - before)
        self.attached += attached
        return {"ok": True, "attached": (dev, ino) in probes.libraries,
                "error": probes.failed.get(path, "")}, fds

    def _traced(self, op: str, pid: int) -> str:
        """'' if the tracer traces pid (the kernel's process filter, pid and
        comm), else the refusal."""
        if pid <= 0 or pid in (self.agent_pid, os.getpid()):
            return f"{op}: not a process the tracer traces"
        obj = self.tracer.kernel.obj
        if obj is None:
            return ""
        raw = obj.map("filter_cfg").lookup(0)
        cfg = events.FilterConfigC.from_buffer_copy(raw) if raw else events.FilterConfigC()
        if cfg.by_pid and obj.map("filter_pids").lookup(pid) is None:
            return f"{op}: not a process the tracer traces"
        if cfg.by_comm:
            key = proc_comm_key(pid)
            if not key or obj.map("filter_comms").lookup(key) is None:
                return f"{op}: not a process the tracer traces"
        return ""

    def _config(self) -> tuple[dict, list[int]]:
        if not self.config:
            return self.refuse("config: no --config file was given")
        try:
            fd = os.open(self.config, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as e:
            return {"ok": False, "error": f"{e.strerror or e}"}, []
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return {"ok": False, "error": "not a regular file"}, []
        return self._pass(fd)

    def _pass(self, fd: int) -> tuple[dict, list[int]]:
        self._opened.append(fd)
        return {"ok": True}, [fd]

    def _exe(self, pid: int) -> tuple[dict, list[int]]:
        why = self._traced("exe", pid)
        if why:
            return self.refuse(why)
        try:
            return {"ok": True, "exe": os.readlink(f"/proc/{pid}/exe")}, []
        except OSError as e:
            return {"ok": False, "error": e.strerror or str(e)}, []

    def _stack_maps(self, pid: int) -> tuple[dict, list[int]]:
        """The maps of a traced process, read here once for the files it
        maps (what stack_module may then open), and the fd passed on: reads
        through it need no privilege (checked when it is opened)."""
        why = self._traced("stack_maps", pid)
        if why:
            return self.refuse(why)
        try:
            fd = os.open(f"/proc/{pid}/maps", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            return {"ok": False, "error": e.strerror or str(e)}, []
        try:
            with os.fdopen(os.dup(fd), "r", encoding="utf-8", errors="replace") as f:
                text = f.read()
            os.lseek(fd, 0, os.SEEK_SET)
        except OSError as e:
            os.close(fd)
            return {"ok": False, "error": e.strerror or str(e)}, []
        paths = set()
        for line in text.splitlines():
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/"):
                paths.add(parts[5])
        self.stack_paths[pid] = paths
        self.stack_paths.move_to_end(pid)
        while len(self.stack_paths) > MAX_STACK_PIDS:
            self.stack_paths.popitem(last=False)
        return self._pass(fd)

    def _stack_module(self, pid: int, path: str) -> tuple[dict, list[int]]:
        if path not in self.stack_paths.get(pid, ()):
            return self.refuse("stack_module: not a file the broker read in that process's maps")
        try:
            fd = os.open(f"/proc/{pid}/root{path}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY
                         | os.O_NONBLOCK)
        except OSError as e:
            return {"ok": False, "error": e.strerror or str(e)}, []
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return {"ok": False, "error": "not a regular file"}, []
        return self._pass(fd)

    def _detach(self) -> tuple[dict, list[int]]:
        self.detached = True
        detach_all(self.tracer)
        return {"ok": True, **self.counters()}, []

    def serve(self) -> int:
        """Until the agent closes the channel; then close everything and exit."""
        while True:
            try:
                msg, fds = recv(self.sock)
            except ProtocolError as e:
                reply, fds = self.refuse(str(e))
            except OSError:
                break
            else:
                for fd in fds:  # the agent has none to give
                    os.close(fd)
                if msg is None:
                    break
                reply, fds = self.handle(msg)
            try:
                send(self.sock, reply, fds)
            except OSError:
                break
            finally:
                while self._opened:  # opened for this reply: the agent has its copies
                    os.close(self._opened.pop())
        clean = self.detached
        n = close_all(self.tracer)
        if not clean:
            sys.stderr.write(describe_end(self.agent_pid, agent_status(self.agent_pid))
                             + f" ({n} BPF objects closed) and exits\n")
            sys.stderr.flush()
            return 1
        return 0


def bpf_objects(tracer) -> list[loader.BPFObject]:
    """The add-ons' objects first (they run on sock.bpf.o's maps), then sock.bpf.o."""
    objs = [o for a in tracer.addons for o in a.bpf_objects()]
    if tracer.kernel.obj is not None:
        objs.append(tracer.kernel.obj)
    return objs


def detach_all(tracer) -> None:
    for obj in bpf_objects(tracer):
        obj.detach_all()


def close_all(tracer) -> int:
    objs = bpf_objects(tracer)
    for obj in objs:
        obj.close()
    return len(objs)


def link_fds(obj: loader.BPFObject, keys) -> list[int]:
    """The fds of the named links of obj (sent to the agent, which keeps
    them: a broker that dies does not detach what it attached)."""
    out = []
    for key in keys:
        fd = obj.link_fd(key)
        if fd >= 0:
            out.append(fd)
    return out


def _sanitize_fds(channel: int) -> None:
    """The broker keeps its BPF fds (anon inodes), the channel and stderr;
    every other socket, file or pipe it inherited becomes /dev/null (same fd
    number: the Python objects that own them are never used here)."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd in (channel, 2, null):
                continue
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue  # the listing's own fd
            if not target.startswith("anon_inode:"):
                os.dup2(null, fd, inheritable=False)
    finally:
        os.close(null)


def _broker_main(tracer, sock: socket.socket, agent_pid: int, keep: dict[str, str],
                 config: str | None) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the agent decides when to stop
    _sanitize_fds(sock.fileno())
    execs = ExecWatch.of(tracer)  # before the agent reads the exec rings
    dropped = privileges.drop(keep) if keep is not None else None
    return Broker(tracer, sock, agent_pid, dropped, config=config, execs=execs).serve()


def split(tracer, broker_keep: dict[str, str] | None, config: str | None = None) -> BrokerClient:
    """Fork the broker; return, in the agent only, the channel to it.
    `broker_keep`: the capabilities the broker keeps (None: it keeps all);
    `config`: the --config file it opens on request (SIGHUP reloads)."""
    agent_end, broker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    agent_pid = os.getpid()
    sys.stderr.flush()
    # what start-up made stays shared: a collection in either process would
    # write every object's GC header and copy those pages (gc.freeze's use)
    gc.freeze()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            agent_end.close()
            code = _broker_main(tracer, broker_end, agent_pid, broker_keep,
                                os.path.abspath(config) if config else None)
        except BaseException as e:  # noqa: BLE001 - one line, never a traceback
            sys.stderr.write(f"tracer: broker failed: {e!r}\n")
        finally:
            sys.stderr.flush()
            os._exit(code)
    broker_end.close()
    return BrokerClient(agent_end, pid)


# ---- the agent's side --------------------------------------------------------------

class BrokerClient:
    """The agent's end of the channel. Requests are synchronous and rare
    (execs, start, stop); a broker that is gone is said once."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock
        self.pid = pid
        self.gone = ""  # why the broker is no longer there ("" while it is)
        self.final: dict = {}  # the broker's counters, from its detach reply
        sock.settimeout(REQUEST_TIMEOUT_S)

    def request(self, op: str, **fields) -> tuple[dict, list[int]]:
        """The reply and the fds that came with it (BrokerGone if it is gone)."""
        if self.gone:
            raise BrokerGone(self.gone)
        try:
            send(self.sock, {"op": op, **fields})
            reply, fds = recv(self.sock)
        except (OSError, ProtocolError) as e:
            self.lost(f"{type(e).__name__}: {e}")
            raise BrokerGone(self.gone) from None
        if reply is None:
            self.lost("it closed the channel")
            raise BrokerGone(self.gone)
        return reply, fds

    def open_file(self, op: str, **fields) -> tuple[int | None, str]:
        """A file the broker opens for this process (config, stack_maps,
        stack_module): (its fd, "") or (None, why not)."""
        try:
            reply, fds = self.request(op, **fields)
        except BrokerGone as e:
            return None, f"the broker is gone ({e})"
        if not reply.get("ok") or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            return None, str(reply.get("refused") or reply.get("error") or "no file came")
        return fds[0], ""

    def exe(self, pid: int) -> str:
        """/proc/pid/exe read by the broker; "" if it may not or cannot."""
        try:
            reply, fds = self.request("exe", pid=pid)
        except BrokerGone:
            return ""
        for fd in fds:
            os.close(fd)
        exe = reply.get("exe") if reply.get("ok") else ""
        return exe if isinstance(exe, str) else ""

    def lost(self, why: str) -> None:
        if self.gone:
            return
        self.gone = why
        sys.stderr.write(f"tracer: the broker (pid {self.pid}) is gone ({why}): what is attached "
                         "stays traced; processes started from now on are not covered\n")
        sys.stderr.flush()
        self._reap(0)

    def check(self) -> None:
        """Housekeeping: notice a broker that went while nothing was asked."""
        if self.gone:
            return
        p = select.poll()
        p.register(self.sock, select.POLLIN)
        if p.poll(0):  # the broker never speaks first: readable means closed
            self.lost("it closed the channel")

    def detach(self) -> dict:
        """At stop, before the agent detaches: the broker drops its links."""
        try:
            reply, _ = self.request("detach")
        except BrokerGone:
            return {}
        self.final = {k: v for k, v in reply.items() if k != "ok"}
        return self.final

    def close(self, wait: float = BROKER_EXIT_WAIT_S) -> None:
        """Close the channel; the broker closes what it holds and exits."""
        self.gone = self.gone or "closed by the agent"
        self.sock.close()
        self._reap(wait)

    def _reap(self, wait: float) -> None:
        import time

        deadline = time.monotonic() + wait
        while True:
            try:
                done, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return
            if done or time.monotonic() >= deadline:
                return
            time.sleep(0.01)
