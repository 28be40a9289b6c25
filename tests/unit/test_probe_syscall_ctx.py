"""Programs on `syscalls:sys_enter_*`/`sys_exit_*` must read their context
as `struct syscall_trace_enter`/`syscall_trace_exit` (the layout those events
have), not as `trace_event_raw_sys_enter`/`sys_exit` (raw_syscalls', which has
a `long id` where they have an `int nr`). The two coincide only while
`struct trace_entry` is 8 bytes. On PREEMPT_RT (Debian 6.1 rt) it is 12
(`preempt_lazy_count`): CO-RE then put `ret` at 24 in a 24-byte context, so
the attach is refused (EACCES), and `args[i]` one argument too far, so what
did attach read the wrong argument. No root: the objects' BTF."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tracer import loader

# The objects with syscall tracepoints.
OBJECTS = ("inject", "sock", "pyasync")
RIGHT = {"sys_enter": "syscall_trace_enter", "sys_exit": "syscall_trace_exit"}


def _ctx_structs(obj: str) -> dict[str, str]:
    """program name -> the struct its context pointer points to."""
    if not shutil.which("bpftool"):
        pytest.skip("bpftool not installed (make setup installs it)")
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(loader.object_path(obj))],
                         check=True, capture_output=True, text=True).stdout
    types = {t["id"]: t for t in json.loads(out)["types"]}
    ctx = {}
    for t in types.values():
        if t["kind"] != "FUNC":
            continue
        proto = types[t["type_id"]]
        if not proto.get("params"):
            continue
        ptr = types.get(proto["params"][0]["type_id"])  # 0: void, not in the dump
        if ptr is not None and ptr["kind"] == "PTR" \
                and types.get(ptr["type_id"], {}).get("kind") == "STRUCT":
            ctx[t["name"]] = types[ptr["type_id"]]["name"]
    return ctx


@pytest.mark.parametrize("obj", OBJECTS)
def test_syscall_tracepoints_read_their_own_context_layout(obj):
    with loader.BPFObject.open(loader.object_path(obj)) as o:
        sections = {p: o.section(p) for p in o.programs}
    ctx = _ctx_structs(obj)
    checked = 0
    for prog, sec in sections.items():
        if not sec.startswith("tracepoint/syscalls/"):
            continue
        kind = "sys_enter" if sec.split("/")[-1].startswith("sys_enter_") else "sys_exit"
        assert ctx[prog] == RIGHT[kind], (prog, sec, ctx[prog])
        checked += 1
    assert checked >= 6, sections
