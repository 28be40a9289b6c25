"""Kernel-function tracing (`funcs kernel:NAME`), on whatever the kernel allows.

Each test checks the kernel it runs on, by its feature probe: where fentry or
kprobes work (the Debian 6.1 guest of the kernel matrix), exact counts of
traced calls; where they do not (this project's 6.18 host: no kprobes, fentry
EPERM), the exact refusal: the CLI's single line and exit 2, the loader's
typed error. Nothing skips on either."""

import json
import os
import subprocess
import sys

import pytest

from tests.kernel.conftest import _probe, require
from tracer import loader, probe
from tracer.funcs import kernel

OPENS = 23
AT_FDCWD = -100
# Says "ready" once its own start-up (which opens files too) is over, then
# opens a file exactly OPENS times when a line arrives on stdin (after attach).
CHILD = ("import os, sys\nprint('ready', flush=True)\nsys.stdin.readline()\n"
         f"for _ in range({OPENS}):\n    os.close(os.open('/proc/self/stat', 0))\n")


def _child():
    child = subprocess.Popen([sys.executable, "-S", "-c", CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\n"
    return child


def _go(child):
    child.stdin.write("go\n")
    child.stdin.close()
    assert child.wait(timeout=30) == 0


@pytest.mark.timeout(120)
def test_cli_traces_kernel_function_or_says_why_in_one_line(tmp_path):
    require("btf")
    method, why = probe.kernel_functions(_probe().features)
    out = tmp_path / "k.jsonl"
    child = _child()
    cmd = [sys.executable, "-m", "tracer", "funcs", "kernel:do_sys_openat2",
           "--pid", str(child.pid), "--output", str(out)]
    try:
        if method is None:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            assert r.returncode == 2
            assert r.stdout == ""
            lines = r.stderr.splitlines()
            assert len(lines) == 1, r.stderr
            assert lines[0].startswith("tracer: kernel function tracing unavailable: ")
            assert "kprobe" in lines[0] and "fentry" in lines[0]
            assert lines[0].endswith("trace a user-space function (BINARY:SYMBOL) or a "
                                     "tracepoint instead")
            assert "Traceback" not in r.stderr
            return
        tr = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
        try:
            first = tr.stderr.readline()
            assert first.startswith("tracer: tracing 1 kernel function with "), first
            _go(child)
            tr.send_signal(2)
            err = tr.communicate(timeout=60)[1]
        finally:
            if tr.poll() is None:
                tr.kill()
        assert tr.returncode == 0, err
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == OPENS
    for r in recs:
        assert (r["target"], r["function"], r["module"]) == (
            "kernel:do_sys_openat2", "do_sys_openat2", "kernel")
        assert (r["pid"], r["depth"], r["args"]["dfd"]) == (child.pid, 0, AT_FDCWD)
        assert r["retval"] >= 0 and r["duration_ns"] > 0
    summary = json.loads((tmp_path / "k.jsonl.summary.json").read_text())
    assert summary["functions"]["kernel:do_sys_openat2"]["calls"] == OPENS
    assert summary["method"] == method
    assert summary["events_dropped"] == summary["unmatched_exits"] == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["fentry", "kprobe"])
def test_each_method_nested_calls_exact(method):
    """Both mechanisms, whichever the probe prefers: do_filp_open runs inside
    do_sys_openat2, so each open gives an outer call (depth 0) and an inner
    one (depth 1) within it."""
    require("btf", "ringbuf")
    feature = _probe().features[method]
    funcs = kernel.resolve(["do_sys_openat2", "do_filp_open"])
    child = _child()
    tr = kernel.KernelTracer(funcs, method, pids=[child.pid])
    try:
        if not feature.available:
            expected = loader.LoadError if method == "fentry" else loader.AttachError
            with pytest.raises(expected) as e:
                tr.start()
            assert feature.detail.split(":")[1].strip() in str(e.value)
            return
        tr.start()
        _go(child)
        recs = []
        while tr.poll(recs.append, 200):
            pass
        counters = tr.counters_dict()
    finally:
        tr.close()
        if child.poll() is None:
            child.kill()
            child.wait()
    outer = [r for r in recs if r["function"] == "do_sys_openat2"]
    inner = [r for r in recs if r["function"] == "do_filp_open"]
    assert (len(outer), len(inner)) == (OPENS, OPENS)
    assert {r["depth"] for r in outer} == {0} and {r["depth"] for r in inner} == {1}
    for o, i in zip(outer, inner, strict=True):  # the inner call exits first
        assert o["start_time_unix_nano"] <= i["start_time_unix_nano"]
        assert (i["start_time_unix_nano"] + i["duration_ns"]
                <= o["start_time_unix_nano"] + o["duration_ns"])
        assert o["args"]["dfd"] == AT_FDCWD and o["retval"] >= 0
        assert isinstance(i["retval"], str) and i["retval"].startswith("0x")  # struct file *
    assert counters["events_seen"] == 2 * OPENS
    assert counters["unmatched_exits"] == counters["unmatched_entries"] == 0
    assert counters["events_dropped"] == 0


def test_unknown_kernel_function_is_one_line(capsys):
    require("btf")
    if probe.kernel_functions(_probe().features)[0] is None:
        # The probe's refusal comes first; the name check is the same code either way.
        with pytest.raises(kernel.KernelFuncError, match="not found in the kernel's BTF"):
            kernel.resolve(["no_such_function_xyz"])
        return
    from tracer import cli

    assert cli.main(["funcs", "kernel:no_such_function_xyz", "--output", os.devnull]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found in the kernel's BTF" in err
