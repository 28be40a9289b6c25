"""Python mirror of tracer/bpf/funcs.h, and decode of its ring-buffer records.

tests/unit/test_funcs_events_btf.py checks every struct size, member offset
and enum value here against the BTF of funcs.bpf.o, and the #defines against
the header text.
"""

from __future__ import annotations

import ctypes
import enum
import struct
from dataclasses import dataclass

FUNCS_COMM_LEN = 16
FUNCS_MAX_ARGS = 6
FUNCS_STR_LEN = 64
FUNCS_MAX_DEPTH = 16
FUNCS_STACK_FRAMES = 64
FUNCS_STACK_COPY = 8192
FUNCS_MAX_PROBES = 4096

DEFINES = ("FUNCS_COMM_LEN", "FUNCS_MAX_ARGS", "FUNCS_STR_LEN", "FUNCS_MAX_DEPTH",
           "FUNCS_STACK_FRAMES", "FUNCS_STACK_COPY", "FUNCS_MAX_PROBES")

# stack_event.regs, in order
REG_NAMES = ("rip", "rsp", "rbp", "rbx", "r12", "r13", "r14", "r15")


class EventType(enum.IntEnum):
    FUNCS_EV_CALL = 1
    FUNCS_EV_STACK = 2


class ArgKind(enum.IntEnum):
    FUNCS_ARG_NONE = 0
    FUNCS_ARG_INT = 1
    FUNCS_ARG_UINT = 2
    FUNCS_ARG_PTR = 3
    FUNCS_ARG_STR = 4


class Counter(enum.IntEnum):
    FCTR_ENTRIES = 0
    FCTR_CALLS = 1
    FCTR_DROPPED = 2
    FCTR_UNMATCHED_EXIT = 3
    FCTR_DEPTH_OVERFLOW = 4
    FCTR_THREADS_FULL = 5
    FCTR_STR_FAULT = 6
    FCTR_STACKS = 7
    FCTR_STACK_DROPPED = 8
    FCTR_STACK_FAULT = 9
    FCTR_NO_SPEC = 10
    FCTR_OPEN_AT_EXIT = 11
    FCTR_MAX = 12


ENUMS = {"funcs_event_type": EventType, "funcs_arg_kind": ArgKind, "funcs_counter": Counter}

_u8, _u32, _s32, _u64 = ctypes.c_uint8, ctypes.c_uint32, ctypes.c_int32, ctypes.c_uint64


class ProbeSpecC(ctypes.Structure):
    _fields_ = [
        ("nargs", _u8),
        ("kind", _u8 * FUNCS_MAX_ARGS),
        ("pad", _u8),
        ("size", _u8 * FUNCS_MAX_ARGS),
        ("pad2", _u8 * 2),
    ]


class CallFrameC(ctypes.Structure):
    _fields_ = [
        ("start_ns", _u64),
        ("probe", _u32),
        ("flags", _u32),
        ("args", _u64 * FUNCS_MAX_ARGS),
        ("strs", (ctypes.c_char * FUNCS_STR_LEN) * FUNCS_MAX_ARGS),
    ]


class CallEventC(ctypes.Structure):
    _fields_ = [
        ("type", _u8),
        ("pad", _u8 * 3),
        ("depth", _u32),
        ("pid", _u32),
        ("tid", _u32),
        ("duration_ns", _u64),
        ("retval", _u64),
        ("comm", ctypes.c_char * FUNCS_COMM_LEN),
        ("frame", CallFrameC),
    ]


class StackEventC(ctypes.Structure):
    _fields_ = [
        ("type", _u8),
        ("pad", _u8 * 3),
        ("probe", _u32),
        ("pid", _u32),
        ("tid", _u32),
        ("start_ns", _u64),
        ("fp_bytes", _s32),
        ("copy_len", _u32),
        ("regs", _u64 * len(REG_NAMES)),
        ("ips", _u64 * FUNCS_STACK_FRAMES),
        ("stack", _u8 * FUNCS_STACK_COPY),
    ]


# struct name in funcs.h -> mirror (checked against BTF)
STRUCTS = {"probe_spec": ProbeSpecC, "call_frame": CallFrameC, "call_event": CallEventC,
           "stack_event": StackEventC}


class DecodeError(ValueError):
    pass


@dataclass(slots=True)
class CallEvent:
    pid: int
    tid: int
    comm: str
    probe: int
    depth: int
    start_ns: int  # bpf_ktime_get_ns at entry
    duration_ns: int
    retval: int  # raw rax, unsigned 64-bit
    args: tuple[int, ...]  # raw registers, unsigned 64-bit
    strs: tuple[bytes, ...]  # per argument, up to the NUL (empty unless a str arg)
    str_faults: int  # bit i: string argument i could not be read


@dataclass(slots=True)
class StackEvent:
    pid: int
    tid: int
    probe: int
    start_ns: int
    fp_ips: list[int]  # frame-pointer walk, innermost first; empty on error
    fp_error: int  # -errno from bpf_get_stack, or 0
    regs: dict[str, int]
    stack: bytes  # copy of the user stack from regs["rsp"] upward


def _off(ctype, name):
    return getattr(ctype, name).offset


_CALL_HEAD = struct.Struct("<B3xIIIQQ16s")
_FRAME_OFF = _off(CallEventC, "frame")
_FRAME_HEAD = struct.Struct(f"<QII{FUNCS_MAX_ARGS}Q")
_STRS_OFF = _FRAME_OFF + _off(CallFrameC, "strs")
_STACK_HEAD = struct.Struct(f"<B3xIIIQiI{len(REG_NAMES)}Q")
_IPS_OFF = _off(StackEventC, "ips")
_STACK_OFF = _off(StackEventC, "stack")
CALL_SIZE = ctypes.sizeof(CallEventC)
STACK_SIZE = ctypes.sizeof(StackEventC)


def decode(buf, off: int = 0, size: int | None = None) -> CallEvent | StackEvent:
    """One ring-buffer record -> a typed event; DecodeError when malformed."""
    if size is None:
        size = len(buf) - off
    if size < 1:
        raise DecodeError("empty record")
    kind = buf[off]
    if kind == EventType.FUNCS_EV_CALL:
        if size < CALL_SIZE:
            raise DecodeError(f"call record of {size} bytes, expected {CALL_SIZE}")
        _, depth, pid, tid, dur, ret, comm = _CALL_HEAD.unpack_from(buf, off)
        start, probe, flags, *args = _FRAME_HEAD.unpack_from(buf, off + _FRAME_OFF)
        base = off + _STRS_OFF
        # most slots are empty (not string arguments): skip them by their first byte
        strs = [bytes(buf[b:b + FUNCS_STR_LEN]).split(b"\0", 1)[0] if buf[b] else b""
                for b in range(base, base + FUNCS_MAX_ARGS * FUNCS_STR_LEN, FUNCS_STR_LEN)]
        return CallEvent(pid, tid, comm.split(b"\0", 1)[0].decode("utf-8", "replace"), probe,
                         depth, start, dur, ret, tuple(args), tuple(strs), flags)
    if kind == EventType.FUNCS_EV_STACK:
        if size < _STACK_OFF:
            raise DecodeError(f"stack record of {size} bytes, expected {STACK_SIZE}")
        _, probe, pid, tid, start, fp_bytes, copy_len, *regs = _STACK_HEAD.unpack_from(buf, off)
        n = max(0, min(fp_bytes, FUNCS_STACK_FRAMES * 8)) // 8
        ips = list(struct.unpack_from(f"<{n}Q", buf, off + _IPS_OFF)) if n else []
        copy_len = min(copy_len, FUNCS_STACK_COPY, size - _STACK_OFF)
        stack = bytes(buf[off + _STACK_OFF:off + _STACK_OFF + copy_len])
        return StackEvent(pid, tid, probe, start, ips, min(fp_bytes, 0),
                          dict(zip(REG_NAMES, regs, strict=True)), stack)
    raise DecodeError(f"unknown event type {kind}")


def encode_call(ev: CallEvent) -> bytes:
    """The inverse of decode for call events (synthetic records for tests)."""
    c = CallEventC()
    c.type = EventType.FUNCS_EV_CALL
    c.depth, c.pid, c.tid = ev.depth, ev.pid, ev.tid
    c.duration_ns, c.retval = ev.duration_ns, ev.retval
    c.comm = ev.comm.encode()[:FUNCS_COMM_LEN - 1]
    c.frame.start_ns, c.frame.probe, c.frame.flags = ev.start_ns, ev.probe, ev.str_faults
    for i, a in enumerate(ev.args):
        c.frame.args[i] = a
    for i, s in enumerate(ev.strs):
        c.frame.strs[i].value = s[:FUNCS_STR_LEN - 1]
    return bytes(c)


def encode_stack(ev: StackEvent) -> bytes:
    c = StackEventC()
    c.type = EventType.FUNCS_EV_STACK
    c.probe, c.pid, c.tid, c.start_ns = ev.probe, ev.pid, ev.tid, ev.start_ns
    c.fp_bytes = ev.fp_error or len(ev.fp_ips) * 8
    for i, ip in enumerate(ev.fp_ips):
        c.ips[i] = ip
    for i, name in enumerate(REG_NAMES):
        c.regs[i] = ev.regs.get(name, 0)
    c.copy_len = len(ev.stack)
    ctypes.memmove(ctypes.addressof(c) + _STACK_OFF, ev.stack, len(ev.stack))
    return bytes(c)
