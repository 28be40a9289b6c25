"""The bcc peer's set-up and program, without root: the skip reason when bcc
is missing (a real interpreter that lacks it), the kernel header tree joined
from Debian's split pair, the program's one-line refusals, its scope."""

from __future__ import annotations

import ctypes
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from harness import peers
from harness.peers import Peer, PeerUnavailable, bcc_http, setup
from harness.runner import format_tracer_cmd

PEER = Path(bcc_http.__file__)


def test_skip_reason_when_the_interpreter_has_no_bcc(monkeypatch):
    # The venv's interpreter is a real one without bcc (not a mock of it).
    if importlib.util.find_spec("bcc") is not None:
        pytest.skip("this interpreter imports bcc")
    monkeypatch.setenv(setup.ENV_PYTHON, sys.executable)
    with pytest.raises(PeerUnavailable) as e:
        peers.prepare("bcc", install=False)
    assert str(e.value) == (f"bcc not importable by {sys.executable} "
                            "(apt-get install python3-bpfcc)")


def test_skip_reason_when_the_interpreter_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv(setup.ENV_PYTHON, str(tmp_path / "python3"))
    with pytest.raises(PeerUnavailable) as e:
        peers.prepare("bcc", install=False)
    assert str(e.value) == f"no interpreter {tmp_path / 'python3'} for bcc"


def test_unknown_peer():
    with pytest.raises(PeerUnavailable) as e:
        peers.prepare("pixie", install=False)
    assert str(e.value) == "unknown peer 'pixie'; known: bcc"


def _split_headers(root: Path, name: str = "linux-headers-6.1.0-9-amd64") -> Path:
    """Debian's layout: sources in -common, generated headers in -amd64."""
    common = root / name.replace("-amd64", "-common")
    arch = root / name
    for d in (common / "include/linux", common / "include/uapi",
              common / "arch/x86/include/asm", common / "arch/x86/include/uapi",
              arch / "include/generated", arch / "include/config",
              arch / "arch/x86/include/generated"):
        d.mkdir(parents=True)
    (common / "include/linux/kconfig.h").write_text("#include <generated/autoconf.h>\n")
    (arch / "include/generated/autoconf.h").write_text("#define CONFIG_X86 1\n")
    return arch


def test_header_tree_joins_debians_split_pair(tmp_path):
    headers = _split_headers(tmp_path / "src")
    tree = setup.header_tree(headers, tmp_path / "out")
    assert tree == tmp_path / "out" / headers.name
    # what bcc's kbuild flags open, relative to BCC_KERNEL_SOURCE
    assert (tree / "include/linux/kconfig.h").read_text() == "#include <generated/autoconf.h>\n"
    assert (tree / "include/generated/autoconf.h").read_text() == "#define CONFIG_X86 1\n"
    assert sorted(p.name for p in (tree / "arch/x86/include").iterdir()) == \
        ["asm", "generated", "uapi"]
    assert sorted(p.name for p in (tree / "include").iterdir()) == \
        ["config", "generated", "linux", "uapi"]
    # idempotent: a second call keeps the tree as it is
    stamp = (tree / ".from").stat().st_mtime_ns
    assert setup.header_tree(headers, tmp_path / "out") == tree
    assert (tree / ".from").stat().st_mtime_ns == stamp


def test_header_tree_rebuilt_from_other_headers(tmp_path):
    a = _split_headers(tmp_path / "a")
    b = _split_headers(tmp_path / "b")
    tree = setup.header_tree(a, tmp_path / "out")
    assert setup.header_tree(b, tmp_path / "out") == tree
    assert (tree / "include/linux").resolve() == (b.with_name(
        b.name.replace("-amd64", "-common")) / "include/linux").resolve()


def test_header_tree_refuses_unconfigured_headers(tmp_path):
    headers = _split_headers(tmp_path)
    (headers / "include/generated/autoconf.h").unlink()
    with pytest.raises(PeerUnavailable) as e:
        setup.header_tree(headers, tmp_path / "out")
    assert str(e.value) == (f"{headers} has no include/generated/autoconf.h: "
                            "not a configured linux-headers directory")


def _run_peer(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PEER), *args], capture_output=True, text=True,
                          timeout=30, check=False)


def test_peer_without_bcc_exits_2_with_one_line():
    if importlib.util.find_spec("bcc") is not None:
        pytest.skip("this interpreter imports bcc")
    p = _run_peer("--pid", "1")
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1
    assert p.stderr.startswith(f"bcc_http: cannot import bcc with {sys.executable} ")
    assert p.stderr.rstrip().endswith(": apt-get install python3-bpfcc")


def test_peer_bad_pid_exits_2_with_one_line():
    p = _run_peer("--pid", "12,x")
    assert (p.returncode, p.stderr) == (
        2, "bcc_http: bad --pid: invalid literal for int() with base 10: 'x'\n")


def test_peer_scope_is_the_process_tree():
    child = subprocess.Popen(["sleep", "30"])
    try:
        import os
        found = bcc_http.descendants({os.getpid()})
        assert {os.getpid(), child.pid} <= found
        assert 1 not in found
    finally:
        child.kill()
        child.wait()
    assert bcc_http.parse_pids(["3,5", "7", ""]) == {3, 5, 7}


LAYOUT_C = r"""
#include <stdio.h>
#include <stddef.h>
typedef unsigned char u8;
typedef unsigned int u32;
typedef int s32;
#include "bcc_http.h"
#define F(m) offsetof(struct event_t, m), sizeof(((struct event_t *)0)->m)
int main(void) {
    printf("%zu %d %d %d %d %d\n", sizeof(struct event_t), LINE_MAX,
           CTR_SEEN, CTR_LINES, CTR_RING_FULL, CTR_MAX);
    printf("%zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu\n", F(tgid), F(tid),
           F(fd), F(len), F(dir), F(pad), F(line));
    return 0;
}
"""


def test_peer_event_mirror_matches_the_c_header(tmp_path):
    """bcc_http.h is the single source of the layout and counter indexes:
    compile it with gcc and compare the ctypes mirror with it."""
    import shutil
    if not shutil.which("gcc"):
        pytest.skip("needs gcc to compile the layout probe")
    (tmp_path / "layout.c").write_text(LAYOUT_C)
    subprocess.run(["gcc", "-I", str(PEER.parent), "-o", str(tmp_path / "layout"),
                    str(tmp_path / "layout.c")], check=True)
    head, fields = subprocess.run([str(tmp_path / "layout")], capture_output=True, text=True,
                                  check=True).stdout.splitlines()
    E = bcc_http.Event
    assert [int(x) for x in head.split()] == [
        ctypes.sizeof(E), bcc_http.LINE_MAX, bcc_http.CTR_SEEN, bcc_http.CTR_LINES,
        bcc_http.CTR_RING_FULL, 3]
    names = ["tgid", "tid", "fd", "len", "dir", "pad", "line"]
    assert [int(x) for x in fields.split()] == [
        v for n in names for v in (getattr(E, n).offset, getattr(E, n).size)]


def test_tracer_cmd_template_expands_for_the_bench_runner():
    p = Peer("bcc", ["/usr/bin/python3", "/r/harness/peers/bcc_http.py"],
             {"BCC_KERNEL_SOURCE": "/r/build/bcc-kernel/h", "PATH": "/usr/bin"})
    argv = format_tracer_cmd(p.tracer_cmd(), pids="12,13", output="/tmp/o.jsonl")
    assert argv == ["env", "BCC_KERNEL_SOURCE=/r/build/bcc-kernel/h", "/usr/bin/python3",
                    "/r/harness/peers/bcc_http.py", "--pid", "12,13", "--output", "/tmp/o.jsonl"]
    assert p.command([7], Path("/tmp/x")) == [
        "/usr/bin/python3", "/r/harness/peers/bcc_http.py", "--pid", "7", "--output", "/tmp/x"]
