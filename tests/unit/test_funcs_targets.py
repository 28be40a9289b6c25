"""TARGET parsing, type specs, binary resolution and record building, on
synthetic events (no root)."""

import io
import json
import os
import sys

import pytest

from tracer.funcs import events, output, targets
from tracer.funcs.events import ArgKind
from tracer.funcs.targets import ArgSpec, TargetError, parse_target
from tracer.funcs.tracer import FuncsTracer, StackResolver, format_args, spec_bytes


def test_plain_targets():
    t = parse_target("/usr/bin/foo:handle")
    assert (t.binary, t.symbol, t.args) == ("/usr/bin/foo", "handle", None)
    assert parse_target("libc.so.6:0x1234").symbol == "0x1234"
    assert parse_target("libpython3.11*.so*:_PyEval_*").binary == "libpython3.11*.so*"


def test_type_spec():
    t = parse_target("libc.so.6:write(int fd, ptr buf, u64 count)")
    assert t.binary == "libc.so.6" and t.symbol == "write"
    assert t.args == (ArgSpec("fd", ArgKind.FUNCS_ARG_INT, 4),
                      ArgSpec("buf", ArgKind.FUNCS_ARG_PTR, 8),
                      ArgSpec("count", ArgKind.FUNCS_ARG_UINT, 8))
    t = parse_target("/bin/x:f(str[16] name, i8, u16 b, long c, size_t d, str e)")
    assert [(a.name, a.kind, a.size) for a in t.args] == [
        ("name", ArgKind.FUNCS_ARG_STR, 16), ("arg1", ArgKind.FUNCS_ARG_INT, 1),
        ("b", ArgKind.FUNCS_ARG_UINT, 2), ("c", ArgKind.FUNCS_ARG_INT, 8),
        ("d", ArgKind.FUNCS_ARG_UINT, 8), ("e", ArgKind.FUNCS_ARG_STR, 64)]
    assert parse_target("/bin/x:f()").args == () == parse_target("/bin/x:f(void)").args


@pytest.mark.parametrize("text,msg", [
    ("nocolon", "expected BINARY:SYMBOL"),
    (":f", "expected BINARY:SYMBOL"),
    ("/bin/x:", "expected BINARY:SYMBOL"),
    ("/bin/x:f(int a", "must end with"),
    ("/bin/x:f(float a)", "unknown type 'float'"),
    ("/bin/x:f(int[4] a)", r"unknown type 'int\[4\]'"),
    ("/bin/x:f(str[65] a)", "within 2..64"),
    ("/bin/x:f(int a, int a)", "must differ"),
    ("/bin/x:f(int a,,int b)", "empty argument"),
    ("/bin/x:f(int, int, int, int, int, int, int)", "at most 6"),
    ("/bin/x:f(int 9a)", "cannot parse"),
])
def test_bad_targets_are_one_line(text, msg):
    with pytest.raises(TargetError, match=msg) as ei:
        parse_target(text)
    assert "\n" not in str(ei.value) and text.split("(")[0] in str(ei.value)


def test_resolve_binary_by_path_name_and_maps(tmp_path):
    assert targets.resolve_binary(sys.executable) == os.path.realpath(sys.executable)
    with pytest.raises(TargetError, match="no such file"):
        targets.resolve_binary(str(tmp_path / "nope"))
    libc = targets.resolve_binary("libc.so.6")
    assert os.path.basename(libc).startswith("libc")
    # this process maps libc: the name resolves through /proc/PID/maps too
    assert os.path.basename(targets.resolve_binary("libc.so*", [os.getpid()])).startswith("libc")
    with pytest.raises(TargetError, match="not found"):
        targets.resolve_binary("libnothere-xyz.so.9", [os.getpid()], "libnothere-xyz.so.9:f")


def _probe(args):
    return targets.Probe(0, "/bin/t:callee", "callee", "/bin/t", 0x1149, 0x1149, tuple(args))


def test_spec_bytes_and_format_args():
    p = _probe([ArgSpec("a", ArgKind.FUNCS_ARG_INT, 4), ArgSpec("b", ArgKind.FUNCS_ARG_INT, 8),
                ArgSpec("s", ArgKind.FUNCS_ARG_STR, 16), ArgSpec("u", ArgKind.FUNCS_ARG_UINT, 1),
                ArgSpec("p", ArgKind.FUNCS_ARG_PTR, 8), ArgSpec("bad", ArgKind.FUNCS_ARG_STR, 64)])
    spec = events.ProbeSpecC.from_buffer_copy(spec_bytes(p))
    assert spec.nargs == 6 and list(spec.kind) == [1, 1, 4, 2, 3, 4]
    assert list(spec.size) == [4, 8, 16, 1, 8, 64]
    ev = events.CallEvent(1, 2, "t", 0, 0, 0, 5, 0, (0xFFFFFFFF_FFFFFFFE, 0xFFFFFFFF_FFFFFFF9,
                                                     0x7FFF0000, 0x1FF, 0xDEAD, 0),
                          (b"", b"", b"req-1", b"", b"", b""), 0b100000)
    assert format_args(p, ev) == {"a": -2, "b": -7, "s": "req-1", "u": 255, "p": "0xdead",
                                  "bad": None}


class _FakeSymbolizer:
    """Maps 0x1000-0x1fff to main, 0x2000.. to caller, 0x3000.. to callee."""

    names = {0x1: "main", 0x2: "caller", 0x3: "callee"}

    def frames(self, pid, addrs):
        from tracer.symbols import Frame

        return [Frame(a, "/bin/t" if a >> 12 in self.names else None,
                      self.names.get(a >> 12), a & 0xFFF, None) for a in addrs]

    def maps(self, pid):
        return None


def test_call_and_stack_events_become_one_record():
    out = io.BytesIO()
    w = output.FuncsWriter("-", stderr=io.StringIO())
    w._f = out
    p = _probe([ArgSpec("a", ArgKind.FUNCS_ARG_INT, 4)])
    t = FuncsTracer([p], w, stack=True, resolver=StackResolver(_FakeSymbolizer()))
    st = events.StackEvent(10, 11, 0, 777, [0x3000, 0x2010, 0x1020], 0,
                           {n: 0 for n in events.REG_NAMES}, b"")
    call = events.CallEvent(10, 11, "t", 0, 0, 777, 3_000_000, 3021, (3, 0, 0, 0, 0, 0),
                            (b"",) * 6, 0)
    t._on_record(events.encode_stack(st), 0, events.STACK_SIZE)
    t._on_record(events.encode_call(call), 0, events.CALL_SIZE)
    t._on_record(events.encode_call(call), 0, events.CALL_SIZE)  # its stack is gone: counted
    t._on_record(b"\x05" * 40, 0, 40)
    recs = [json.loads(x) for x in out.getvalue().splitlines()]
    assert len(recs) == 2
    r = recs[0]
    assert r["args"] == {"a": 3} and r["retval"] == 3021 and r["duration_ns"] == 3_000_000
    assert r["start_time_unix_nano"] == 777 + t.clock_offset_ns
    assert r["stack_method"] == "fp"
    assert [f["symbol"] for f in r["stack"]] == ["callee", "caller", "main"]
    assert r["stack"][1] == {"addr": "0x2010", "symbol": "caller", "offset": 0x10,
                             "module": "/bin/t"}
    assert recs[1]["stack"] == [] and recs[1]["stack_method"] == "none"
    assert t.stacks_missing == 1 and t.decode_errors == 1 and t.events_seen == 4


def test_pending_stacks_are_bounded(monkeypatch):
    from tracer.funcs import tracer as ftracer

    monkeypatch.setattr(ftracer, "MAX_PENDING_STACKS", 2)
    w = output.FuncsWriter("-", stderr=io.StringIO())
    w._f = io.BytesIO()
    t = FuncsTracer([_probe([])], w, stack=True, resolver=StackResolver(_FakeSymbolizer()))
    for start in (1, 2, 3):  # three entries whose call events never come
        st = events.StackEvent(10, 11, 0, start, [0x3000], 0,
                               {n: 0 for n in events.REG_NAMES}, b"")
        t.handle(st)
    assert list(t.pending_stacks) == [(11, 2), (11, 3)] and t.stacks_evicted == 1
