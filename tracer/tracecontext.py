"""Trace context carried in request headers: W3C traceparent and B3 (single
and multi-header). A leaf: plain strings in, ids and flags out; parsers,
the correlator and head sampling all read headers through it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

_getrandbits = random.getrandbits
_HEX_DIGITS = "0123456789abcdef"
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def new_trace_id() -> str:
    # random.getrandbits: ids need uniqueness, not secrecy, and os.urandom is a
    # syscall per span. `or 1`: the all-zero id is invalid in W3C trace context.
    return f"{_getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    return f"{_getrandbits(64) or 1:016x}"


_HEX_OR_DASH = _HEX_DIGITS + "-"


def parse_traceparent(value: str) -> tuple[str, str] | None:
    """(trace_id, parent_span_id) of a valid W3C traceparent, else None."""
    v = value.strip()
    n = len(v)
    if n < 55 or v[2] != "-" or v[35] != "-" or v[52] != "-":
        return None
    version = v[:2]
    if version == "ff" or (n > 55 and (version == "00" or v[55] != "-")):
        return None
    # lowercase hex everywhere else: strip() stops at the first other char, and
    # the count rules out dashes inside the fields
    head = v[:55]
    if head.strip(_HEX_OR_DASH) or head.count("-") != 3:
        return None
    trace_id = v[3:35]
    parent = v[36:52]
    if trace_id == _ZERO_TRACE or parent == _ZERO_SPAN:
        return None
    return trace_id, parent


def traceparent_sampled(tp: str) -> bool:
    """Flags bit 0 of a traceparent that parse_traceparent accepted (the
    flags are then hex)."""
    return bool(int(tp.strip()[53:55], 16) & 1)


def header_sampled(headers: Mapping[str, str]) -> bool | None:
    """The incoming sampled flag: W3C traceparent flags bit 0, B3 single
    header's third field or X-B3-Sampled; None when the request carries none
    (or only a malformed one)."""
    tp = headers.get("traceparent")
    if tp is not None and parse_traceparent(tp) is not None:
        return traceparent_sampled(tp)
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
