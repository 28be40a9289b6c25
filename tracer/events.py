"""Python mirror of tracer/bpf/sock.h, and decode of ring-buffer records.

The ctypes structures below are the mirror; tests/unit/test_events_btf.py checks
every offset, size and enum value against the BTF of the compiled object, so a
change to sock.h that is not made here fails the tests. The struct.Struct
decoders are derived from the ctypes layouts, not written by hand.

Decode is on the hot path (one call per event): it uses precompiled
struct.Struct objects with unpack_from on the ring's memory, and copies out only
the captured payload.
"""

from __future__ import annotations

import ctypes
import enum
import ipaddress
import struct

import cython

TASK_COMM_LEN = 16
MAX_PAYLOAD = 4096
MAX_IOV = 128
SPAN_STACK_DEPTH = 32
SAMPLE_SCALE = 65536  # adaptive sampling: new connections sampled out per SAMPLE_SCALE


class EventType(enum.IntEnum):
    EVENT_OPEN = 1
    EVENT_DATA = 2
    EVENT_CLOSE = 3


class ConnRole(enum.IntEnum):
    ROLE_UNKNOWN = 0
    ROLE_SERVER = 1
    ROLE_CLIENT = 2


class DataDir(enum.IntEnum):
    DIR_EGRESS = 0
    DIR_INGRESS = 1


class Counter(enum.IntEnum):
    CTR_EVENTS = 0
    CTR_DROPPED = 1
    CTR_READ_FAULT = 2
    CTR_CONN_FULL = 3
    CTR_TLS_SKIPPED = 4
    CTR_TLS_NO_FD = 5
    CTR_TLS_EVENTS = 6
    CTR_TLS_HELLO = 7
    CTR_CONNS_SAMPLED = 8
    CTR_REQS_SAMPLED = 9
    CTR_STACK_FAILED = 10
    CTR_EXIT_UNREACHED = 11
    CTR_MAX = 12


class SysKind(enum.IntEnum):
    SYS_READ = 1
    SYS_READV = 2
    SYS_RECVFROM = 3
    SYS_RECVMSG = 4
    SYS_WRITE = 5
    SYS_WRITEV = 6
    SYS_SENDTO = 7
    SYS_SENDMSG = 8
    SYS_ACCEPT = 9
    SYS_CONNECT = 10
    SYS_CLOSE = 11
    SYS_SSL_READ = 12
    SYS_SSL_WRITE = 13


class ConnTls(enum.IntEnum):
    TLS_NONE = 0
    TLS_SEEN = 1
    TLS_BOUND = 2


# data events at or above this sys_kind carry TLS plaintext (tls.bpf.c)
SYS_FIRST_TLS = SysKind.SYS_SSL_READ


# enum name in sock.h -> Python mirror (checked against BTF)
ENUMS = {
    "event_type": EventType,
    "conn_role": ConnRole,
    "data_dir": DataDir,
    "counter": Counter,
    "sys_kind": SysKind,
    "conn_tls": ConnTls,
}

AF_INET = 2
AF_INET6 = 10


class EventHeader(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint8),
        ("dir", ctypes.c_uint8),
        ("role", ctypes.c_uint8),
        ("syscall", ctypes.c_uint8),
        ("pid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("fd", ctypes.c_int32),
        ("conn_id", ctypes.c_uint64),
        ("ts_enter", ctypes.c_uint64),
        ("ts_exit", ctypes.c_uint64),
    ]


class OpenEventC(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("cgroup_id", ctypes.c_uint64),
        ("netns", ctypes.c_uint32),
        ("family", ctypes.c_uint16),
        ("lport", ctypes.c_uint16),
        ("rport", ctypes.c_uint16),
        ("pad", ctypes.c_uint8 * 6),
        ("laddr", ctypes.c_uint8 * 16),
        ("raddr", ctypes.c_uint8 * 16),
        ("comm", ctypes.c_char * TASK_COMM_LEN),
    ]


class DataEventC(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("bytes", ctypes.c_uint32),
        ("captured", ctypes.c_uint32),
        ("stack", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("comm", ctypes.c_char * TASK_COMM_LEN),
        ("payload", ctypes.c_uint8 * MAX_PAYLOAD),
    ]


class CloseEventC(ctypes.Structure):
    _fields_ = [("hdr", EventHeader)]


class FilterConfigC(ctypes.Structure):
    _fields_ = [
        ("by_pid", ctypes.c_uint8),
        ("by_netns", ctypes.c_uint8),
        ("by_cgroup", ctypes.c_uint8),
        ("by_port", ctypes.c_uint8),
        ("by_comm", ctypes.c_uint8),
    ]


class ConnKeyC(ctypes.Structure):
    _fields_ = [("tgid", ctypes.c_uint32), ("fd", ctypes.c_int32)]


class ConnInfoC(ctypes.Structure):
    _fields_ = [
        ("conn_id", ctypes.c_uint64),
        ("role", ctypes.c_uint8),
        ("tracked", ctypes.c_uint8),
        ("sniffed", ctypes.c_uint8),
        ("tls", ctypes.c_uint8),
        ("capture", ctypes.c_uint32),
        ("sampled", ctypes.c_uint8),
        ("turn", ctypes.c_uint8),
        ("stack_turn", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 5),
    ]


class ExecEventC(ctypes.Structure):
    _fields_ = [("pid", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


# C struct name in sock.h -> Python mirror (checked against BTF)
STRUCTS = {
    "event_header": EventHeader,
    "open_event": OpenEventC,
    "data_event": DataEventC,
    "close_event": CloseEventC,
    "filter_config": FilterConfigC,
    "conn_key": ConnKeyC,
    "conn_info": ConnInfoC,
    "exec_event": ExecEventC,
}

_CODES = {
    ctypes.c_uint8: "B", ctypes.c_int8: "b", ctypes.c_uint16: "H", ctypes.c_int16: "h",
    ctypes.c_uint32: "I", ctypes.c_int32: "i", ctypes.c_uint64: "Q", ctypes.c_int64: "q",
    ctypes.c_char: "s",
}


def struct_format(ctype: type[ctypes.Structure], stop: str | None = None) -> str:
    """A struct format ('<' + codes) equivalent to a ctypes layout, nested
    structs flattened, arrays as one 's' field, up to the field `stop`."""
    out = []
    pos = 0
    for name, ftype in ctype._fields_:
        if name == stop:
            break
        off = getattr(ctype, name).offset
        if off > pos:
            out.append(f"{off - pos}x")
        if issubclass(ftype, ctypes.Structure):
            out.append(struct_format(ftype)[1:])
        elif issubclass(ftype, ctypes.Array):
            out.append(f"{ctypes.sizeof(ftype)}s")
        else:
            out.append(_CODES[ftype])
        pos = off + ctypes.sizeof(ftype)
    return "<" + "".join(out)


HEADER = struct.Struct(struct_format(EventHeader))
OPEN = struct.Struct(struct_format(OpenEventC))
DATA = struct.Struct(struct_format(DataEventC, stop="payload"))
PAYLOAD_OFFSET = DataEventC.payload.offset
assert DATA.size == PAYLOAD_OFFSET
assert OPEN.size == ctypes.sizeof(OpenEventC)


def _eq(a, b):
    """The dataclasses' equality: same type, field by field."""
    if type(b) is not type(a):
        return NotImplemented
    for name in a.__slots__:
        if getattr(a, name) != getattr(b, name):
            return False
    return True


def _repr(ev) -> str:
    inner = ", ".join(f"{name}={getattr(ev, name)!r}" for name in ev.__slots__)
    return f"{type(ev).__name__}({inner})"


# The three event types keep the value semantics of the dataclasses they were:
# positional or keyword construction, __eq__, __repr__, unhashable (mutable).
# Compiled, one is made per record: freed ones are kept for reuse, and they
# stay out of the garbage collector, which they need not be in (they hold
# only numbers, bytes and str, so they cannot be part of a cycle).

@cython.freelist(16)
@cython.no_gc
@cython.cclass
class OpenEvent:
    """A socket entered the table: accept/connect returned, or first sight."""

    __slots__ = ("conn_id", "pid", "tid", "fd", "role", "ts", "cgroup_id", "netns", "family",
                 "laddr", "lport", "raddr", "rport", "comm")

    def __init__(self, conn_id: int, pid: int, tid: int, fd: int, role: int, ts: int,
                 cgroup_id: int, netns: int, family: int, laddr: str, lport: int, raddr: str,
                 rport: int, comm: str) -> None:
        self.conn_id = conn_id
        self.pid = pid
        self.tid = tid
        self.fd = fd
        self.role = role
        self.ts = ts  # ktime ns
        self.cgroup_id = cgroup_id
        self.netns = netns
        self.family = family
        self.laddr = laddr
        self.lport = lport
        self.raddr = raddr
        self.rport = rport
        self.comm = comm

    def __eq__(self, other):
        return _eq(self, other)

    __hash__ = None

    def __repr__(self) -> str:
        return _repr(self)


@cython.freelist(64)
@cython.no_gc
@cython.cclass
class DataEvent:
    """One read- or write-family syscall that moved `size` bytes."""

    __slots__ = ("conn_id", "pid", "tid", "fd", "role", "direction", "syscall", "ts_enter",
                 "ts_exit", "size", "payload", "comm", "stack")

    def __init__(self, conn_id: int, pid: int, tid: int, fd: int, role: int, direction: int,
                 syscall: int, ts_enter: int, ts_exit: int, size: int, payload: bytes,
                 comm: str, stack: int = 0) -> None:
        self.conn_id = conn_id
        self.pid = pid
        self.tid = tid
        self.fd = fd
        self.role = role
        self.direction = direction  # DataDir
        self.syscall = syscall
        self.ts_enter = ts_enter
        self.ts_exit = ts_exit
        self.size = size  # bytes really moved (the syscall's return value)
        self.payload = payload  # the captured prefix (len <= size)
        self.comm = comm
        # --span-stacks: 1 + user stack id at a request's first syscall; 0: none
        self.stack = stack

    def __eq__(self, other):
        return _eq(self, other)

    __hash__ = None

    def __repr__(self) -> str:
        return _repr(self)


@cython.freelist(16)
@cython.no_gc
@cython.cclass
class CloseEvent:
    __slots__ = ("conn_id", "pid", "tid", "fd", "role", "ts")

    def __init__(self, conn_id: int, pid: int, tid: int, fd: int, role: int, ts: int) -> None:
        self.conn_id = conn_id
        self.pid = pid
        self.tid = tid
        self.fd = fd
        self.role = role
        self.ts = ts

    def __eq__(self, other):
        return _eq(self, other)

    __hash__ = None

    def __repr__(self) -> str:
        return _repr(self)


Event = OpenEvent | DataEvent | CloseEvent


class DecodeError(ValueError):
    """A ring-buffer record that does not match any event layout."""


_V4_MAPPED = b"\0" * 10 + b"\xff\xff"
# IPv6 peers repeat (and ipaddress is slow): their text, bounded
_addr6: dict[bytes, str] = {}


def _dotted(raw: bytes) -> str:
    return f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"


def _addr(family: int, raw: bytes) -> str:
    """An address as ipaddress writes it; IPv4-mapped IPv6 as IPv4."""
    if family == AF_INET:
        return _dotted(raw)
    if family == AF_INET6:
        if raw[:12] == _V4_MAPPED:
            return _dotted(raw[12:])
        text = _addr6.get(raw)
        if text is None:
            if len(_addr6) >= 4096:
                _addr6.clear()
            text = _addr6[raw] = str(ipaddress.IPv6Address(raw))
        return text
    return ""


_unpack_data = DATA.unpack_from
_unpack_open = OPEN.unpack_from
_unpack_hdr = HEADER.unpack_from
_HDR_SIZE = cython.declare(cython.Py_ssize_t, HEADER.size)
_PAYLOAD_OFFSET = cython.declare(cython.Py_ssize_t, PAYLOAD_OFFSET)
_OPEN_SIZE = cython.declare(cython.Py_ssize_t, OPEN.size)
_EV_DATA = cython.declare(cython.int, int(EventType.EVENT_DATA))
_EV_OPEN = cython.declare(cython.int, int(EventType.EVENT_OPEN))
_EV_CLOSE = cython.declare(cython.int, int(EventType.EVENT_CLOSE))
# field offsets in a record (the compiled decoder reads them in place)
_O_DIR = cython.declare(cython.Py_ssize_t, EventHeader.dir.offset)
_O_ROLE = cython.declare(cython.Py_ssize_t, EventHeader.role.offset)
_O_SYSCALL = cython.declare(cython.Py_ssize_t, EventHeader.syscall.offset)
_O_PID = cython.declare(cython.Py_ssize_t, EventHeader.pid.offset)
_O_TID = cython.declare(cython.Py_ssize_t, EventHeader.tid.offset)
_O_FD = cython.declare(cython.Py_ssize_t, EventHeader.fd.offset)
_O_CONN_ID = cython.declare(cython.Py_ssize_t, EventHeader.conn_id.offset)
_O_TS_ENTER = cython.declare(cython.Py_ssize_t, EventHeader.ts_enter.offset)
_O_TS_EXIT = cython.declare(cython.Py_ssize_t, EventHeader.ts_exit.offset)
_O_BYTES = cython.declare(cython.Py_ssize_t, DataEventC.bytes.offset)
_O_CAPTURED = cython.declare(cython.Py_ssize_t, DataEventC.captured.offset)
_O_STACK = cython.declare(cython.Py_ssize_t, DataEventC.stack.offset)
_O_DCOMM = cython.declare(cython.Py_ssize_t, DataEventC.comm.offset)
_COMM_LEN = cython.declare(cython.Py_ssize_t, TASK_COMM_LEN)


def _comm(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


# The compiled decoder reads fields in place through a pointer to the record,
# whose size decode_at has checked against the layout first.

def _le32(p) -> cython.uint:
    return (cython.cast(cython.uint, p[0]) | cython.cast(cython.uint, p[1]) << 8
            | cython.cast(cython.uint, p[2]) << 16 | cython.cast(cython.uint, p[3]) << 24)


def _le64(p) -> cython.ulonglong:
    return cython.cast(cython.ulonglong, _le32(p)) | cython.cast(cython.ulonglong, _le32(p + 4)) << 32


# the last comm decoded: a process's events carry the same one, decoded once
_comm_raw = b""
_comm_str = ""


def _comm_at(p) -> str:
    """_comm() of the TASK_COMM_LEN bytes at p, compiled."""
    global _comm_raw, _comm_str
    n: cython.Py_ssize_t = 0
    while n < _COMM_LEN and p[n]:
        n += 1
    if n == len(_comm_raw):
        q: cython.p_uchar = cython.cast(cython.p_uchar, cython.cast(cython.p_char, _comm_raw))
        i: cython.Py_ssize_t = 0
        while i < n and p[i] == q[i]:
            i += 1
        if i == n:
            return _comm_str
    raw: bytes = cython.cast(cython.p_char, p)[:n]
    _comm_str = raw.decode("utf-8", "replace")
    _comm_raw = raw
    return _comm_str


def decode(buf, offset: int = 0, size: int | None = None) -> Event:
    """Decode one record. `buf` is bytes, a memoryview or an mmap; the payload
    is copied out, so the ring slot can be released afterwards."""
    if size is None:
        size = len(buf) - offset
    return decode_at(buf, offset, size)


def decode_at(view, offset: cython.Py_ssize_t, size: cython.Py_ssize_t):
    """decode() of the record view[offset:offset + size], for the ring
    consumer (a C call when compiled)."""
    if size < _HDR_SIZE:
        raise DecodeError(f"record of {size} bytes is shorter than the header")
    if offset < 0 or offset + size > len(view):
        raise DecodeError(f"record of {size} bytes at {offset} is outside its buffer")
    etype: cython.int = view[offset]
    d: cython.uint
    nbytes: cython.uint
    cap: cython.uint
    ev: DataEvent
    if etype == _EV_DATA:
        if size < _PAYLOAD_OFFSET:
            raise DecodeError(f"data record of {size} bytes is truncated")
        if cython.compiled:
            p = cython.cast(cython.p_uchar, cython.address(view[offset]))
            d = p[_O_DIR]
            nbytes = _le32(p + _O_BYTES)
            cap = _le32(p + _O_CAPTURED)
        else:
            (_, d, role, sysk, pid, tid, fd, cid, ts0, ts1, nbytes, cap, stack, _, comm) = \
                _unpack_data(view, offset)
        if cap > size - _PAYLOAD_OFFSET or cap > nbytes:
            raise DecodeError(f"data record claims {cap} captured bytes, "
                              f"has {size - _PAYLOAD_OFFSET}")
        if d > 1:  # parsers index per-direction state by it (found by fuzzing)
            raise DecodeError(f"data record has direction {d}")
        ev = DataEvent.__new__(DataEvent)
        ev.direction = d
        ev.size = nbytes
        if cython.compiled:
            ev.conn_id = _le64(p + _O_CONN_ID)
            ev.pid = _le32(p + _O_PID)
            ev.tid = _le32(p + _O_TID)
            ev.fd = cython.cast(cython.int, _le32(p + _O_FD))
            ev.role = p[_O_ROLE]
            ev.syscall = p[_O_SYSCALL]
            ev.ts_enter = _le64(p + _O_TS_ENTER)
            ev.ts_exit = _le64(p + _O_TS_EXIT)
            ev.stack = _le32(p + _O_STACK)
            ev.payload = cython.cast(cython.p_char, p)[_PAYLOAD_OFFSET:_PAYLOAD_OFFSET + cap]
            ev.comm = _comm_at(p + _O_DCOMM)
        else:
            ev.conn_id = cid
            ev.pid = pid
            ev.tid = tid
            ev.fd = fd
            ev.role = role
            ev.syscall = sysk
            ev.ts_enter = ts0
            ev.ts_exit = ts1
            ev.stack = stack
            start = offset + _PAYLOAD_OFFSET
            ev.payload = bytes(view[start:start + cap])
            ev.comm = _comm(comm)
        return ev
    if etype == _EV_OPEN:
        if size < _OPEN_SIZE:
            raise DecodeError(f"open record of {size} bytes is truncated")
        (_, _, role, _, pid, tid, fd, cid, _, ts1, cg, netns, fam, lport, rport, _pad,
         laddr, raddr, comm) = _unpack_open(view, offset)
        return OpenEvent(cid, pid, tid, fd, role, ts1, cg, netns, fam, _addr(fam, laddr), lport,
                         _addr(fam, raddr), rport, _comm(comm))
    if etype == _EV_CLOSE:
        (_, _, role, _, pid, tid, fd, cid, _, ts1) = _unpack_hdr(view, offset)
        return CloseEvent(cid, pid, tid, fd, role, ts1)
    raise DecodeError(f"unknown event type {etype}")


# ---- encoders: build records exactly as the kernel does (tests, replay) ----

def _pack_addr(family: int, addr: str) -> bytes:
    raw = ipaddress.ip_address(addr).packed if addr else b""
    return raw.ljust(16, b"\0")


def encode(ev: Event) -> bytes:
    """The inverse of decode(): the bytes the BPF side would submit."""
    if isinstance(ev, DataEvent):
        return DATA.pack(_EV_DATA, ev.direction, ev.role, ev.syscall, ev.pid, ev.tid, ev.fd,
                         ev.conn_id, ev.ts_enter, ev.ts_exit, ev.size, len(ev.payload),
                         ev.stack, 0, ev.comm.encode()) + ev.payload
    if isinstance(ev, OpenEvent):
        return OPEN.pack(_EV_OPEN, 0, ev.role, 0, ev.pid, ev.tid, ev.fd, ev.conn_id, ev.ts, ev.ts,
                         ev.cgroup_id, ev.netns, ev.family, ev.lport, ev.rport, b"",
                         _pack_addr(ev.family, ev.laddr), _pack_addr(ev.family, ev.raddr),
                         ev.comm.encode())
    if isinstance(ev, CloseEvent):
        return HEADER.pack(_EV_CLOSE, 0, ev.role, 0, ev.pid, ev.tid, ev.fd, ev.conn_id, ev.ts, ev.ts)
    raise TypeError(type(ev))
