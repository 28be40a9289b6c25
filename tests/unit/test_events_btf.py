"""The Python mirror of sock.h is checked against the compiled object's BTF:
every struct size, member offset and enum value. No root needed."""

import ctypes

import pytest

from tests.unit.btfcheck import assert_enum_matches, assert_struct_matches, btf_types
from tracer import events, loader


@pytest.fixture(scope="module")
def btf():
    return btf_types("sock")


@pytest.mark.parametrize("cname", sorted(events.STRUCTS))
def test_struct_layout_matches_btf(btf, cname):
    assert_struct_matches(btf, cname, events.STRUCTS[cname])


@pytest.mark.parametrize("ename", sorted(events.ENUMS))
def test_enum_values_match_btf(btf, ename):
    assert_enum_matches(btf, ename, events.ENUMS[ename])


def test_struct_decoders_follow_the_ctypes_layout():
    assert events.OPEN.size == ctypes.sizeof(events.OpenEventC)
    assert events.DATA.size == events.DataEventC.payload.offset
    assert events.HEADER.size == ctypes.sizeof(events.EventHeader)


def test_constants_match_header():
    text = (loader.BPF_DIR / "sock.h").read_text()
    for name in ("TASK_COMM_LEN", "MAX_PAYLOAD", "MAX_IOV"):
        assert f"#define {name} {getattr(events, name)}" in text


def test_decode_roundtrip_and_bad_records():
    d = events.DataEvent(7, 10, 11, 3, 1, 1, 1, 100, 200, 1000, b"GET / HTTP/1.1\r\n", "curl")
    assert events.decode(events.encode(d)) == d
    o = events.OpenEvent(7, 10, 11, 3, 1, 100, 5, 4026531840, events.AF_INET6, "::1", 8080,
                         "fe80::1", 5555, "node")
    assert events.decode(events.encode(o)) == o
    with pytest.raises(events.DecodeError, match="shorter than the header"):
        events.decode(b"\x02" * 10)
    with pytest.raises(events.DecodeError, match="unknown event type 9"):
        events.decode(b"\x09" + b"\0" * 100)
    raw = bytearray(events.encode(d))
    with pytest.raises(events.DecodeError, match="claims"):
        events.decode(bytes(raw[:-4]))
