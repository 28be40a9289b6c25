# cython: annotation_typing=False
"""Trace context carried in request headers: W3C traceparent and B3 (single
and multi-header). A leaf: plain strings in, ids and flags out; parsers,
the correlator and head sampling all read headers through it.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping

import cython

_getrandbits = random.getrandbits
_HEX_DIGITS = "0123456789abcdef"
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


# Ids need uniqueness, not secrecy: os.urandom is a syscall per span, and
# random.getrandbits a Python call with its arguments parsed each time. So
# splitmix64 (a bijection of a counter: no repeat within 2**64 draws), seeded
# from `random` at the first id (random.seed makes runs repeatable) and again
# in a forked child. The all-zero id is invalid in W3C trace context.
_MASK64 = 0xFFFF_FFFF_FFFF_FFFF
_state = 0
_seeded = False


def reseed() -> None:
    """The next id starts a new sequence, seeded from `random`."""
    global _state, _seeded
    _state = _getrandbits(64)
    _seeded = True


def _unseed() -> None:
    global _seeded
    _seeded = False


os.register_at_fork(after_in_child=_unseed)


def _next64() -> int:
    global _state
    if not _seeded:
        reseed()
    if cython.compiled:  # the same in C (64-bit constants stay C integers there)
        return _splitmix64(cython.address(_state))  # noqa: F821 (C, in tracecontext.pxd)
    _state = (_state + 0x9E3779B97F4A7C15) & _MASK64
    z = _state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def span_id_of(n: int) -> str:
    """64 bits as a span id: 16 lowercase hex digits, 0 taken as 1."""
    if n == 0:
        n = 1
    if cython.compiled:
        s = PyUnicode_New(16, 127)  # noqa: F821 (C, in tracecontext.pxd)
        _hex64(PyUnicode_1BYTE_DATA(s), n)  # noqa: F821 (C, in tracecontext.pxd)
        return s
    return f"{n:016x}"


def trace_id_of(hi: int, lo: int) -> str:
    """128 bits as a trace id: 32 lowercase hex digits, all-zero taken as 1."""
    if hi == 0 and lo == 0:
        lo = 1
    if cython.compiled:
        s = PyUnicode_New(32, 127)  # noqa: F821 (C, in tracecontext.pxd)
        p = PyUnicode_1BYTE_DATA(s)  # noqa: F821 (C, in tracecontext.pxd)
        _hex64(p, hi)  # noqa: F821 (C, in tracecontext.pxd)
        _hex64(p + 16, lo)  # noqa: F821 (C, in tracecontext.pxd)
        return s
    return f"{hi:016x}{lo:016x}"


def new_trace_id() -> str:
    hi = _next64()
    return trace_id_of(hi, _next64())


def new_span_id() -> str:
    return span_id_of(_next64())


_HEX_OR_DASH = _HEX_DIGITS + "-"


def traceparent_ids(value: str) -> tuple[str, str, bool] | None:
    """(trace_id, parent_span_id, sampled flag) of a valid W3C traceparent,
    else None: the correlator's one pass over the header."""
    v = value
    n = len(v)
    if n and (v[0].isspace() or v[n - 1].isspace()):  # strip() only when it strips
        v = v.strip()
        n = len(v)
    if n < 55 or v[2] != "-" or v[35] != "-" or v[52] != "-":
        return None
    if v[0] == "f" and v[1] == "f":
        return None
    if n > 55 and ((v[0] == "0" and v[1] == "0") or v[55] != "-"):
        return None
    # lowercase hex everywhere else
    if cython.compiled:
        if PyUnicode_KIND(v) == PyUnicode_1BYTE_KIND:  # noqa: F821 (C, in tracecontext.pxd)
            p = PyUnicode_1BYTE_DATA(v)  # noqa: F821 (C, in tracecontext.pxd)
            for i in range(55):
                b = p[i]
                if not (48 <= b <= 57 or 97 <= b <= 102) and i != 2 and i != 35 and i != 52:
                    return None
        else:
            for i in range(55):
                c = v[i]
                if not ("0" <= c <= "9" or "a" <= c <= "f") and i != 2 and i != 35 \
                        and i != 52:
                    return None
    else:
        # strip() stops at the first other char, and the count rules out
        # dashes inside the fields
        head = v[:55]
        if head.strip(_HEX_OR_DASH) or head.count("-") != 3:
            return None
    trace_id = v[3:35]
    parent = v[36:52]
    if trace_id == _ZERO_TRACE or parent == _ZERO_SPAN:
        return None
    # flags bit 0 is bit 0 of the last hex digit
    c = v[54]
    return trace_id, parent, ((ord(c) - 48 if c <= "9" else ord(c) - 87) & 1) == 1


def parse_traceparent(value: str) -> tuple[str, str] | None:
    """(trace_id, parent_span_id) of a valid W3C traceparent, else None."""
    ids = traceparent_ids(value)
    return None if ids is None else (ids[0], ids[1])


def traceparent_sampled(tp: str) -> bool:
    """Flags bit 0 of a traceparent that parse_traceparent accepted (the
    flags are then hex)."""
    return bool(int(tp.strip()[53:55], 16) & 1)


def header_sampled(headers: Mapping[str, str]) -> bool | None:
    """The incoming sampled flag: W3C traceparent flags bit 0, B3 single
    header's third field or X-B3-Sampled; None when the request carries none
    (or only a malformed one)."""
    tp = headers.get("traceparent")
    if tp is not None:
        ids = traceparent_ids(tp)
        if ids is not None:
            return ids[2]
    b3 = headers.get("b3")
    if b3 is not None:
        parts = b3.split("-")
        if len(parts) == 1 and parts[0] in ("0", "1", "d"):
            return parts[0] != "0"
        if len(parts) >= 3:
            return parts[2] != "0"
        return None
    s = headers.get("x-b3-sampled")
    if s is not None:
        return s.strip() not in ("0", "false")
    return None


def parse_b3(headers: Mapping[str, str]) -> tuple[str, str] | None:
    single = headers.get("b3")
    if single:
        parts = single.split("-")
        if len(parts) >= 2 and len(parts[1]) == 16:
            tid = parts[0].rjust(32, "0")
            if len(tid) == 32:
                return tid.lower(), parts[1].lower()
        return None
    tid = headers.get("x-b3-traceid")
    sid = headers.get("x-b3-spanid")
    if tid and sid and len(sid) == 16 and len(tid) in (16, 32):
        return tid.rjust(32, "0").lower(), sid.lower()
    return None
