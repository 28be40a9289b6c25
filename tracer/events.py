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
from dataclasses import dataclass

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
    CTR_MAX = 11


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


@dataclass(slots=True)
class OpenEvent:
    """A socket entered the table: accept/connect returned, or first sight."""

    conn_id: int
    pid: int
    tid: int
    fd: int
    role: int
    ts: int  # ktime ns
    cgroup_id: int
    netns: int
    family: int
    laddr: str
    lport: int
    raddr: str
    rport: int
    comm: str


@dataclass(slots=True)
class DataEvent:
    """One read- or write-family syscall that moved `size` bytes."""

    conn_id: int
    pid: int
    tid: int
    fd: int
    role: int
    direction: int  # DataDir
    syscall: int
    ts_enter: int
    ts_exit: int
    size: int  # bytes really moved (the syscall's return value)
    payload: bytes  # the captured prefix (len <= size)
    comm: str
    stack: int = 0  # --span-stacks: 1 + user stack id at a request's first syscall; 0: none


@dataclass(slots=True)
class CloseEvent:
    conn_id: int
    pid: int
    tid: int
    fd: int
    role: int
    ts: int


Event = OpenEvent | DataEvent | CloseEvent


class DecodeError(ValueError):
    """A ring-buffer record that does not match any event layout."""


def _addr(family: int, raw: bytes) -> str:
    if family == AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    if family == AF_INET6:
        a = ipaddress.IPv6Address(raw)
        return str(a.ipv4_mapped or a)
    return ""


def _comm(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


_unpack_data = DATA.unpack_from
_unpack_open = OPEN.unpack_from
_unpack_hdr = HEADER.unpack_from
_HDR_SIZE = HEADER.size
_EV_DATA = int(EventType.EVENT_DATA)
_EV_OPEN = int(EventType.EVENT_OPEN)
_EV_CLOSE = int(EventType.EVENT_CLOSE)


def decode(buf, offset: int = 0, size: int | None = None) -> Event:
    """Decode one record. `buf` is bytes, a memoryview or an mmap; the payload
    is copied out, so the ring slot can be released afterwards."""
    if size is None:
        size = len(buf) - offset
    if size < _HDR_SIZE:
        raise DecodeError(f"record of {size} bytes is shorter than the header")
    etype = buf[offset]
    if etype == _EV_DATA:
        if size < PAYLOAD_OFFSET:
            raise DecodeError(f"data record of {size} bytes is truncated")
        (_, d, role, sysk, pid, tid, fd, cid, ts0, ts1, nbytes, cap, stack, _, comm) = \
            _unpack_data(buf, offset)
        if cap > size - PAYLOAD_OFFSET or cap > nbytes:
            raise DecodeError(f"data record claims {cap} captured bytes, has {size - PAYLOAD_OFFSET}")
        if d > 1:  # parsers index per-direction state by it (found by fuzzing)
            raise DecodeError(f"data record has direction {d}")
        start = offset + PAYLOAD_OFFSET
        return DataEvent(cid, pid, tid, fd, role, d, sysk, ts0, ts1, nbytes,
                         bytes(buf[start:start + cap]), _comm(comm), stack)
    if etype == _EV_OPEN:
        if size < OPEN.size:
            raise DecodeError(f"open record of {size} bytes is truncated")
        (_, _, role, _, pid, tid, fd, cid, _, ts1, cg, netns, fam, lport, rport, _pad,
         laddr, raddr, comm) = _unpack_open(buf, offset)
        return OpenEvent(cid, pid, tid, fd, role, ts1, cg, netns, fam, _addr(fam, laddr), lport,
                         _addr(fam, raddr), rport, _comm(comm))
    if etype == _EV_CLOSE:
        (_, _, role, _, pid, tid, fd, cid, _, ts1) = _unpack_hdr(buf, offset)
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
