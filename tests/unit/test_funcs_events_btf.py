"""The Python mirror of funcs.h (tracer/funcs/events.py) is checked against
the BTF of funcs.bpf.o: struct sizes, member offsets, enum values, #defines.
No root needed."""

import re

import pytest

from tests.unit.btfcheck import assert_enum_matches, assert_struct_matches, btf_types
from tracer import loader
from tracer.funcs import events


@pytest.fixture(scope="module")
def btf():
    return btf_types("funcs")


@pytest.mark.parametrize("cname", sorted(events.STRUCTS))
def test_struct_layout_matches_btf(btf, cname):
    assert_struct_matches(btf, cname, events.STRUCTS[cname])


@pytest.mark.parametrize("ename", sorted(events.ENUMS))
def test_enum_values_match_btf(btf, ename):
    assert_enum_matches(btf, ename, events.ENUMS[ename])


def test_defines_match_header():
    text = (loader.BPF_DIR / "funcs.h").read_text()
    for name in events.DEFINES:
        assert re.search(rf"^#define {name} {getattr(events, name)}\b", text, re.M), name


def test_call_roundtrip():
    ev = events.CallEvent(pid=7, tid=8, comm="target", probe=3, depth=1, start_ns=10**12,
                          duration_ns=3_000_123, retval=(1 << 64) - 1,
                          args=(1, 2, 3, 4, 5, (1 << 64) - 2), strs=(b"", b"", b"req-7", b"",
                                                                      b"", b"x" * 63),
                          str_faults=0b10)
    raw = events.encode_call(ev)
    assert len(raw) == events.CALL_SIZE
    assert events.decode(raw) == ev


def test_stack_roundtrip_and_short_copy():
    ev = events.StackEvent(pid=7, tid=8, probe=0, start_ns=5, fp_ips=[0x401000, 0x401100],
                           fp_error=0, regs={n: i for i, n in enumerate(events.REG_NAMES)},
                           stack=bytes(range(256)) * 8)
    assert events.decode(events.encode_stack(ev)) == ev
    ev.fp_ips, ev.fp_error = [], -14
    assert events.decode(events.encode_stack(ev)).fp_error == -14


def test_bad_records():
    with pytest.raises(events.DecodeError, match="empty"):
        events.decode(b"")
    with pytest.raises(events.DecodeError, match="unknown event type 9"):
        events.decode(b"\x09" + b"\0" * 100)
    with pytest.raises(events.DecodeError, match="call record of 10 bytes"):
        events.decode(b"\x01" * 10)
    with pytest.raises(events.DecodeError, match="stack record"):
        events.decode(b"\x02" * 10)
