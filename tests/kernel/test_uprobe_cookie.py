"""loader.BPFObject.attach_uprobe(cookie=...): the cookie reaches
bpf_get_attach_cookie, and two probes at one address with different cookies
are two links. funcs.bpf.o reads the cookie as the probe's index into
probe_specs; the target is tests/cprogs/target.c (main -> caller -> callee,
N calls each). loader.BPFObject.attach_uprobe_multi gives the same with
one link for the entries and one for the returns."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from tests.e2e.test_funcs import N, finish_target, start_target, target_binary
from tests.kernel.conftest import require
from tracer import loader
from tracer.funcs import events as fev
from tracer.funcs.targets import parse_target, resolve
from tracer.funcs.tracer import spec_bytes

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def exe(tmp_path_factory):
    return target_binary("fp", tmp_path_factory.mktemp("cprogs"))


@pytest.fixture(params=["per-offset"])
def funcs_obj(exe, tmp_path, request):
    """funcs.bpf.o loaded for one waiting target process: (obj, target, go file);
    param "uprobe_multi": its programs loaded for uprobe_multi links."""
    require("uprobe", "ringbuf", "btf")
    if request.param == "uprobe_multi":
        require("uprobe_multi")
    go = tmp_path / "go"
    target = start_target(exe, go)
    obj = loader.BPFObject.open(loader.object_path("funcs"))
    try:
        obj.set_rodata(self_tgid=os.getpid(), by_pid=1)
        if request.param == "uprobe_multi":
            for prog in ("func_entry", "func_exit"):
                obj.set_expected_attach_type(prog, loader.BPF_TRACE_UPROBE_MULTI)
        obj.load()
        obj.map("filter_pids").update(target.pid, b"\x01")
        yield obj, target, go
    finally:
        obj.close()
        if target.poll() is None:
            target.kill()
            target.wait()


def _probe(exe, function):
    return resolve([parse_target(f"{exe}:{function}")])[0]


def test_cookies_select_the_probe(exe, funcs_obj):
    """caller as probe 7, callee as probe 9: N calls of each, told apart by
    the cookie alone (the same programs serve both)."""
    obj, target, go = funcs_obj
    for cookie, function in ((7, "caller"), (9, "callee")):
        p = _probe(exe, function)
        obj.map("probe_specs").update(cookie, spec_bytes(p))
        for retprobe in (True, False):
            obj.attach_uprobe("func_exit" if retprobe else "func_entry", p.module,
                              p.file_offset, pid=target.pid, retprobe=retprobe, cookie=cookie)
    rb = obj.ring_buffer("funcs_events")
    go.touch()
    finish_target(target)
    calls = []
    rb.consume(lambda buf, off, size: calls.append(fev.decode(buf, off, size)))
    assert Counter((e.probe, e.depth) for e in calls) == {(7, 0): N, (9, 1): N}


def test_two_cookies_at_one_address_are_two_links(exe, funcs_obj):
    """Entry probes only, cookie 7 and one past probe_specs (no spec): each
    call enters once through each (FCTR_ENTRIES, FCTR_NO_SPEC count N each)."""
    obj, target, go = funcs_obj
    p = _probe(exe, "callee")
    obj.map("probe_specs").update(7, spec_bytes(p))
    for cookie in (7, fev.FUNCS_MAX_PROBES):
        obj.attach_uprobe("func_entry", p.module, p.file_offset, pid=target.pid, cookie=cookie)
    assert len(obj.attached) == 2
    go.touch()
    finish_target(target)
    c = obj.map("funcs_counters")
    assert c.percpu_sum(fev.Counter.FCTR_ENTRIES) == N
    assert c.percpu_sum(fev.Counter.FCTR_NO_SPEC) == N


@pytest.mark.parametrize("funcs_obj", ["uprobe_multi"], indirect=True)
def test_uprobe_multi_cookies_select_the_probe(exe, funcs_obj):
    """caller as probe 7, callee as probe 9, both in one entry link and one
    return link of the target process alone (pid): N calls of each, as
    with a link per probe."""
    obj, target, go = funcs_obj
    probes = {7: _probe(exe, "caller"), 9: _probe(exe, "callee")}
    for cookie, p in probes.items():
        obj.map("probe_specs").update(cookie, spec_bytes(p))
    module = probes[7].module
    offsets = [p.file_offset for p in probes.values()]
    obj.attach_uprobe_multi("func_entry", module, offsets, list(probes), pid=target.pid)
    obj.attach_uprobe_multi("func_exit", module, offsets, list(probes), pid=target.pid,
                            retprobe=True)
    assert len(obj.attached) == 2
    rb = obj.ring_buffer("funcs_events")
    go.touch()
    finish_target(target)
    calls = []
    rb.consume(lambda buf, off, size: calls.append(fev.decode(buf, off, size)))
    assert Counter((e.probe, e.depth) for e in calls) == {(7, 0): N, (9, 1): N}
