"""End to end: `python -m tracer funcs` on C programs built with gcc at test
time (tests/cprogs: main -> caller(i) -> callee(i, 7*i, "req-i"), 23 calls,
callee sleeps 3 ms) and on CPython's eval loop. Real uprobes, real processes.

Each test starts the tracer, waits for its ready line, then lets the target
make its calls (the target waits for a go file), stops the tracer with SIGINT
and checks the JSON lines and the summary exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from tests.cprogs import build as cbuild
from tests.kernel.conftest import require

REPO = Path(__file__).resolve().parents[2]
N = 23
SLEEP_NS = 3_000_000  # callee's usleep(3000)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cprogs(tmp_path_factory):
    return tmp_path_factory.mktemp("cprogs")


def target_binary(variant: str, outdir) -> Path:
    missing = cbuild.missing_tools(variant)
    if missing:
        pytest.skip(f"cannot build the {variant} target: missing {', '.join(missing)}")
    return cbuild.build(variant, outdir)


class FuncsRun:
    """The tracer as a subprocess; ready once it printed its ready line."""

    def __init__(self, args: list[str], out: Path, timeout: float = 45.0):
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tracer", "funcs", *args, "--output", str(out)],
            cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout) or self.proc.poll() is not None:
            self.proc.kill()
            self.proc.wait()
            self._reader.join(5)
            raise AssertionError("tracer not ready: " + "".join(self.lines))

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)
            if line.startswith("tracer: tracing "):
                self._ready.set()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def stop(self) -> tuple[list[dict], dict]:
        self.proc.send_signal(signal.SIGINT)
        rc = self.proc.wait(timeout=30)
        self._reader.join(10)
        assert rc == 0, self.stderr
        records = [json.loads(x) for x in self.out.read_text().splitlines()]
        summary = json.loads(Path(str(self.out) + ".summary.json").read_text())
        return records, summary


def start_target(exe: Path, go: Path, n: int = N, prefix: list[str] = ()) -> subprocess.Popen:
    p = subprocess.Popen([*prefix, str(exe), str(n), str(go)], stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.startswith("ready "), line
    return p


def finish_target(p: subprocess.Popen) -> str:
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0
    return out


def run_calls(exe: Path, tracer_args: list[str], tmp_path: Path, n: int = N):
    """One target process making n calls while traced; (records, summary, pid)."""
    tmp_path = Path(tempfile.mkdtemp(dir=tmp_path))  # a fresh go file for every run
    go = tmp_path / "go"
    target = start_target(exe, go, n)
    t = FuncsRun([*tracer_args, "--pid", str(target.pid)], tmp_path / "calls.jsonl")
    go.touch()
    finish_target(target)
    records, summary = t.stop()
    return records, summary, target.pid, t.stderr


def check_callee_calls(records, summary, pid, target_label, function="callee",
                       stack_syms=None, stderr=""):
    """Exactly N calls of callee with the exact arguments, return values and
    a latency at least the sleep; a stack main -> caller -> callee."""
    calls = [r for r in records if r["function"] == function]
    assert len(calls) == N, stderr
    assert len(records) == N
    for i, r in enumerate(calls):
        assert r["schema"] == 1 and r["type"] == "call"
        assert r["target"] == target_label and r["pid"] == pid and r["tid"] == pid
        assert r["args"] == {"a": i, "b": 7 * i, "s": f"req-{i}"}, r
        assert r["retval"] == i * 1000 + 7 * i
        assert r["duration_ns"] >= SLEEP_NS
        assert r["depth"] == 0
        if stack_syms is not None:
            syms = [f["symbol"] for f in r["stack"]]
            assert syms[0] == function, (r["stack_method"], r["stack"])
            # innermost first: callee, caller, ..., main
            pos = [syms.index(s) for s in stack_syms]
            assert pos == sorted(pos) and pos[0] == 0, (r["stack_method"], syms)
    f = summary["functions"][target_label]
    assert f["calls"] == N and sum(f["hist_log2_ns"].values()) == N
    assert f["p50_ns"] >= SLEEP_NS and f["max_ns"] >= f["p99_ns"] >= f["p50_ns"]
    for k in ("events_dropped", "unmatched_exits", "unmatched_entries", "decode_errors",
              "string_faults", "depth_overflow"):
        assert summary[k] == 0, (k, summary)
    assert summary["calls_recorded"] == N


@pytest.mark.parametrize("variant", ["fp", "nofp"])
def test_dwarf_args_latency_and_stack(variant, cprogs, tmp_path):
    """Arguments typed from DWARF; the stack by frame pointers (fp) or by the
    DWARF unwinder over the copied stack (nofp)."""
    require("uprobe", "ringbuf")
    exe = target_binary(variant, cprogs)
    records, summary, pid, err = run_calls(exe, [f"{exe}:callee", "--stack"], tmp_path)
    check_callee_calls(records, summary, pid, f"{exe}:callee",
                       stack_syms=["callee", "caller", "main"], stderr=err)
    want = "fp" if variant == "fp" else "dwarf"
    assert {r["stack_method"] for r in records} == {want}
    assert summary["stack_methods"][want] == N and summary["stacks_missing"] == 0
    assert all(r["stack"][0]["module"] == str(exe) for r in records)


def test_stripped_minidebuginfo_names(cprogs, tmp_path):
    """A stripped binary: callee found by its MiniDebugInfo name, arguments
    from a type spec (no DWARF left), stack names from .gnu_debugdata."""
    require("uprobe", "ringbuf")
    exe = target_binary("stripped", cprogs)
    records, summary, pid, err = run_calls(
        exe, [f"{exe}:callee(int a, long b, str[32] s)", "--stack"], tmp_path)
    check_callee_calls(records, summary, pid, f"{exe}:callee",
                       stack_syms=["callee", "caller", "main"], stderr=err)
    assert {r["stack_method"] for r in records} == {"dwarf"}


def test_stripped_bare_eh_frame_boundary(cprogs, tmp_path):
    """No symbols at all: callee is attached as the eh_frame FDE boundary
    func_0x<vaddr> (its address taken from the unstripped build, same code)."""
    require("uprobe", "ringbuf")
    from tracer.symbols import ElfSymbols

    bare = target_binary("stripped-bare", cprogs)
    vaddr = ElfSymbols.open(str(target_binary("nofp", cprogs))).lookup("callee").vaddr
    fde = [s for s in ElfSymbols.open(str(bare)).functions() if s.vaddr == vaddr]
    assert fde and fde[0].source == "eh_frame", fde
    name = fde[0].name
    assert name == f"func_{vaddr:#x}"
    records, summary, pid, err = run_calls(
        bare, [f"{bare}:{name}(int a, long b, str s)"], tmp_path)
    check_callee_calls(records, summary, pid, f"{bare}:{name}", function=name, stderr=err)
    # and by address: the same function, named after its FDE
    records, summary, pid, err = run_calls(bare, [f"{bare}:{vaddr:#x}(int a, long b, str s)"],
                                           tmp_path)
    check_callee_calls(records, summary, pid, f"{bare}:{name}", function=name, stderr=err)


def _task_status(pid: int) -> list[dict]:
    from tracer import privileges

    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out.append(privileges.read_status(f"{pid}/task/{tid}"))
        except OSError:
            continue  # exited meanwhile
    return out


@pytest.mark.parametrize("mode", ["plain", "stack", "keep"])
def test_privileges_dropped_while_calls_flow(mode, cprogs, tmp_path):
    """After attach funcs keeps nothing (plain), or what --stack's symbolizer
    needs to read the target's maps and binary (stack: the DWARF unwinder on
    the no-frame-pointer build, after the drop); --no-drop-privileges keeps
    all. Every thread's sets are checked while 23 exact calls flow."""
    require("uprobe", "ringbuf")
    from tracer import privileges

    exe = target_binary("nofp" if mode == "stack" else "fp", cprogs)
    args = {"plain": [], "stack": ["--stack"], "keep": ["--no-drop-privileges"]}[mode]
    kept = ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"] if mode == "stack" else []
    go = tmp_path / "go"
    target = start_target(exe, go)
    t = FuncsRun([f"{exe}:callee", *args, "--pid", str(target.pid)], tmp_path / "calls.jsonl")
    before = privileges.read_status()  # this test's own sets: what the tracer started with
    for st in _task_status(t.proc.pid):
        if mode == "keep":
            assert st["CapEff"] == before["CapEff"] and st["NoNewPrivs"] == 0
        else:
            want = privileges.mask(kept)
            assert (st["CapEff"], st["CapPrm"], st["CapBnd"]) == (want, want, want), \
                privileges.names(st["CapEff"])
            assert st["CapInh"] == st["CapAmb"] == 0 and st["NoNewPrivs"] == 1
    go.touch()
    finish_target(target)
    records, summary = t.stop()
    check_callee_calls(records, summary, target.pid, f"{exe}:callee",
                       stack_syms=["callee", "caller", "main"] if mode == "stack" else None,
                       stderr=t.stderr)
    if mode == "keep":
        assert summary["privileges"] == {"dropped": False}
        assert "privileges dropped" not in t.stderr
    else:
        assert summary["privileges"]["dropped"] is True
        assert summary["privileges"]["kept"] == kept
        assert summary["privileges"]["warnings"] == 0
        assert f"privileges dropped: kept {', '.join(kept) or 'none'}; no_new_privs" in t.stderr
    if mode == "stack":
        assert {r["stack_method"] for r in records} == {"dwarf"}
        assert summary["symbolize_errors"] == 0


def test_pid_filter_two_processes(cprogs, tmp_path):
    """Two processes run the same binary; only the one given with --pid is
    traced: exactly its 23 calls."""
    require("uprobe", "ringbuf")
    exe = target_binary("fp", cprogs)
    go = tmp_path / "go"
    traced = start_target(exe, go)
    other = start_target(exe, go)
    t = FuncsRun([f"{exe}:callee", "--pid", str(traced.pid)], tmp_path / "calls.jsonl")
    go.touch()
    finish_target(traced)
    finish_target(other)
    records, summary = t.stop()
    assert len(records) == N
    assert {r["pid"] for r in records} == {traced.pid}
    assert [r["args"]["a"] for r in records] == list(range(N))
    assert summary["functions"][f"{exe}:callee"]["calls"] == N


def test_glob_and_nesting_depth(cprogs, tmp_path):
    """A glob over symbols: 'call*' matches caller and callee; callee runs
    inside caller, so it has depth 1 and a shorter latency."""
    require("uprobe", "ringbuf")
    exe = target_binary("fp", cprogs)
    records, summary, pid, _ = run_calls(exe, [f"{exe}:call*"], tmp_path)
    by = {"caller": [], "callee": []}
    for r in records:
        by[r["function"]].append(r)
    assert len(by["caller"]) == N and len(by["callee"]) == N and len(records) == 2 * N
    for i, (outer, inner) in enumerate(zip(by["caller"], by["callee"], strict=True)):
        assert outer["depth"] == 0 and inner["depth"] == 1
        assert outer["args"] == {"i": i} and outer["retval"] == 1007 * i
        assert outer["start_time_unix_nano"] <= inner["start_time_unix_nano"]
        assert outer["duration_ns"] >= inner["duration_ns"] >= SLEEP_NS
    assert summary["unmatched_exits"] == 0 and summary["unmatched_entries"] == 0


# ---- Python: CPython's eval loop ------------------------------------------------------

PY_SCRIPT = r"""
import sys
def f(x):
    return x + 1
n = int(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
# map() calls f from C: each call is one _PyEval_EvalFrameDefault call (3.11
# runs Python-to-Python calls inside the caller's eval loop, without a C call)
list(map(f, range(n)))
print("done", flush=True)
sys.stdin.readline()
"""


def _libpython_eval(pid: int) -> str:
    """The file holding _PyEval_EvalFrameDefault in this interpreter: libpython
    when the executable links it (pyenv), else the executable (Debian's static
    build exports it in .dynsym)."""
    with open(f"/proc/{pid}/maps") as f:
        paths = {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}
    for p in sorted(paths):
        if "/libpython3" in p:
            return p
    return os.path.realpath(f"/proc/{pid}/exe")


def _count_eval_calls(tmp_path: Path, n: int, tag: str) -> tuple[int, dict]:
    script = tmp_path / "calls.py"
    script.write_text(PY_SCRIPT)
    py = subprocess.Popen([sys.executable, str(script), str(n)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
    try:
        assert py.stdout.readline().strip() == "ready"
        lib = _libpython_eval(py.pid)
        # a library by name: resolved through the --pid process's maps; "()":
        # no arguments, so libpython's DWARF is not scanned for them
        binary = "libpython3.*.so*" if "/libpython3" in lib else lib
        t = FuncsRun([f"{binary}:_PyEval_EvalFrameDefault()", "--pid", str(py.pid)],
                     tmp_path / f"{tag}.jsonl")
        py.stdin.write("go\n")
        py.stdin.flush()
        assert py.stdout.readline().strip() == "done"
        records, summary = t.stop()
    finally:
        py.communicate("bye\n", timeout=30)
    assert {r["pid"] for r in records} <= {py.pid}
    assert {r["module"] for r in records} <= {lib}
    assert summary["unmatched_exits"] == 0
    return len(records), summary


def test_python_eval_frame_counts(tmp_path):
    """Counting only: the calls of _PyEval_EvalFrameDefault between 'go' and
    'done' are N function calls plus a constant overhead of the interpreter
    (the map/list machinery, readline, print). The constant is
    interpreter-dependent, so two runs with N and 2N calls are compared: the
    difference is exactly N."""
    require("uprobe", "ringbuf")
    n = 500
    c1, s1 = _count_eval_calls(tmp_path, n, "n")
    c2, s2 = _count_eval_calls(tmp_path, 2 * n, "2n")
    assert c1 >= n and c2 >= 2 * n
    assert c2 - c1 == n, (c1, c2)
    assert s1["events_dropped"] == 0 == s2["events_dropped"]
