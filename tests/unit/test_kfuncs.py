"""kfuncs.h's ctypes mirror against the compiled object's BTF, and the pure
parts of kernel-function tracing (target names, register conversion, records,
the one-line refusal). No root needed."""


import pytest

from tests.unit.btfcheck import assert_enum_matches, assert_struct_matches, btf_types
from tracer import loader, probe
from tracer.funcs import kernel
from tracer.funcs.kernel import KfEventC, KFunc, Param


@pytest.fixture(scope="module")
def btf():
    return btf_types("kfuncs")


@pytest.mark.parametrize("cname", sorted(kernel.STRUCTS))
def test_struct_layout_matches_btf(btf, cname):
    assert_struct_matches(btf, cname, kernel.STRUCTS[cname])


@pytest.mark.parametrize("ename", sorted(kernel.ENUMS))
def test_enum_values_match_btf(btf, ename):
    assert_enum_matches(btf, ename, kernel.ENUMS[ename])


def test_constants_match_header():
    text = (loader.BPF_DIR / "kfuncs.h").read_text()
    assert f"#define KF_TASK_COMM_LEN {kernel.TASK_COMM_LEN}" in text
    assert f"#define KF_MAX_ARGS {kernel.MAX_ARGS}" in text
    assert f"#define KF_MAX_DEPTH {kernel.MAX_DEPTH}" in text


def test_parse_targets():
    assert kernel.parse_targets(["kernel:do_sys_openat2", "kernel:vfs_read",
                                 "kernel:do_sys_openat2"]) == ["do_sys_openat2", "vfs_read"]
    for bad in ("kernel:", "kernel:a b", "kernel:x;y", "kernel:foo(int a)"):
        with pytest.raises(kernel.KernelFuncError, match="expected kernel:FUNCTION"):
            kernel.parse_targets([bad])
    with pytest.raises(kernel.KernelFuncError, match="at most 64"):
        kernel.parse_targets([f"kernel:f{i}" for i in range(65)])


def test_convert_follows_btf_types():
    assert kernel.convert(2**64 - 100, Param("dfd", "int", 4)) == -100
    assert kernel.convert(0xFFFFFF9C, Param("dfd", "int", 4)) == -100
    assert kernel.convert(2**64 - 2, Param("ret", "int", 8)) == -2
    assert kernel.convert(2**64 - 2, Param("n", "uint", 8)) == 2**64 - 2
    assert kernel.convert(0x1_0000_0005, Param("flags", "uint", 4)) == 5
    assert kernel.convert(0xFFFF_8880_0000_1000, Param("p", "ptr", 8)) == "0xffff888000001000"
    assert kernel.convert(7, None) == 7


def _raw_event(**kw) -> bytes:
    ev = KfEventC(start_ns=1000, duration_ns=250, retval=2**64 - 2, pid=42, tid=43, target=0,
                  depth=1, method=1, comm=b"cat")
    for i, v in enumerate((2**64 - 100, 0x7FFF0000, 3)):
        ev.args[i] = v
    for k, v in kw.items():
        setattr(ev, k, v)
    return bytes(ev)


def test_record_from_event():
    f = KFunc("do_sys_openat2", [Param("dfd", "int", 4), Param("filename", "ptr", 8),
                                 Param("how", "ptr", 8)], Param("", "int", 8), 0xFFFFFFFF81000000)
    tr = kernel.KernelTracer([f], "fentry")
    tr.skew = 10**18
    raw = _raw_event()
    rec = tr.record(memoryview(raw), 0, len(raw))
    assert rec == {
        "schema": 1, "type": "call", "target": "kernel:do_sys_openat2",
        "function": "do_sys_openat2", "module": "kernel", "address": "0xffffffff81000000",
        "pid": 42, "tid": 43, "comm": "cat", "start_time_unix_nano": 10**18 + 1000,
        "duration_ns": 250, "depth": 1,
        "args": {"dfd": -100, "filename": "0x7fff0000", "how": "0x3"}, "retval": -2}
    # a short record and an unknown target index are counted, never raised
    assert tr.record(memoryview(raw), 0, 10) is None
    bad = _raw_event(target=5)
    assert tr.record(memoryview(bad), 0, len(bad)) is None
    assert (tr.events_seen, tr.decode_errors) == (3, 2)


def test_void_function_has_null_retval():
    tr = kernel.KernelTracer([KFunc("f", [], None)], "kprobe")
    raw = _raw_event(depth=0)
    rec = tr.record(memoryview(raw), 0, len(raw))
    assert rec["retval"] is None and rec["args"] == {}


def test_refusal_names_both_mechanisms():
    feats = {"kprobe": probe.Feature("kprobe", False, "attach: ENOENT: No such file or directory"),
             "fentry": probe.Feature("fentry", False, "load: EPERM: Operation not permitted")}
    method, why = probe.kernel_functions(feats)
    assert method is None
    assert "kprobes" in why and "fentry is refused (load: EPERM" in why
    feats["kprobe"] = probe.Feature("kprobe", True, "loaded and attached")
    assert probe.kernel_functions(feats)[0] == "kprobe"
    feats["fentry"] = probe.Feature("fentry", True, "loaded and attached")
    assert probe.kernel_functions(feats) == ("fentry", "fentry/fexit (BPF trampolines)")
