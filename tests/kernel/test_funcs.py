"""funcs filters and accounting with real uprobes: --netns, --cgroup, string
arguments that cannot be read. The C target is tests/cprogs/target.c."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.e2e.test_funcs import FuncsRun, N, finish_target, start_target, target_binary
from tests.kernel.conftest import require

pytestmark = pytest.mark.timeout(120)

CGROUP2 = "/sys/fs/cgroup/unified"


@pytest.fixture(scope="module")
def exe(tmp_path_factory):
    return target_binary("fp", tmp_path_factory.mktemp("cprogs"))


@pytest.fixture
def netns_name():
    name = f"funcs-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def test_netns_filter(exe, netns_name, tmp_path):
    """One target in a new network namespace, one in this one: --netns NAME
    traces exactly the 23 calls made inside it."""
    require("uprobe", "ringbuf", "btf")
    go = tmp_path / "go"
    inside = start_target(exe, go, prefix=["ip", "netns", "exec", netns_name])
    outside = start_target(exe, go)
    t = FuncsRun([f"{exe}:callee", "--netns", netns_name], tmp_path / "calls.jsonl")
    go.touch()
    finish_target(inside)
    finish_target(outside)
    records, summary = t.stop()
    assert len(records) == N
    # `ip netns exec` execs the target: same pid
    assert {r["pid"] for r in records} == {inside.pid}
    assert [r["args"]["s"] for r in records] == [f"req-{i}" for i in range(N)]


@pytest.fixture
def cgroup_dir():
    if not os.path.isdir(CGROUP2):
        pytest.skip(f"no cgroup v2 hierarchy at {CGROUP2}")
    path = Path(CGROUP2) / f"funcs-test-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    try:
        yield path
    finally:
        for pid in (path / "cgroup.procs").read_text().split():  # back to the root
            (Path(CGROUP2) / "cgroup.procs").write_text(pid)
        path.rmdir()


def test_cgroup_filter(exe, cgroup_dir, tmp_path):
    """Two targets, one moved into a fresh cgroup: --cgroup PATH traces
    exactly its 23 calls."""
    require("uprobe", "ringbuf")
    go = tmp_path / "go"
    inside = start_target(exe, go)
    outside = start_target(exe, go)
    (cgroup_dir / "cgroup.procs").write_text(str(inside.pid))
    t = FuncsRun([f"{exe}:callee", "--cgroup", str(cgroup_dir)], tmp_path / "calls.jsonl")
    go.touch()
    finish_target(inside)
    finish_target(outside)
    records, summary = t.stop()
    assert len(records) == N
    assert {r["pid"] for r in records} == {inside.pid}


def test_unreadable_string_is_null_and_counted(exe, tmp_path):
    """A spec that calls an integer a string: the read faults (b = 7*i is no
    valid pointer), the argument is null and every fault is counted."""
    require("uprobe", "ringbuf")
    go = tmp_path / "go"
    p = start_target(exe, go)
    t = FuncsRun([f"{exe}:callee(int a, str b, str[8] s)", "--pid", str(p.pid)],
                 tmp_path / "calls.jsonl")
    go.touch()
    finish_target(p)
    records, summary = t.stop()
    assert len(records) == N
    for i, r in enumerate(records):
        # str[8]: 7 bytes and the NUL
        assert r["args"] == {"a": i, "b": None, "s": f"req-{i}"[:7]}
    assert summary["string_faults"] == N


def test_shared_library_without_pid_warns():
    """A shared library traced in every process gets one warning line naming it
    and --pid (uretprobes and stack-switching programs); the run still works."""
    require("uprobe", "ringbuf", "btf")
    # "()": no arguments wanted, so libc's DWARF (its debug file, when
    # installed) is not scanned for them
    out = subprocess.run([sys.executable, "-m", "tracer", "funcs", "libc.so.6:getppid()",
                          "--duration", "0.5", "--output", os.devnull],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    warnings = [ln for ln in out.stderr.splitlines() if "warning" in ln]
    assert len(warnings) == 1
    assert "libc.so.6 traced in every process" in warnings[0] and "--pid" in warnings[0]
