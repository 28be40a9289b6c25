"""Cost of tracer.symbols: opening a module (symbols + .eh_frame index),
addr -> symbol, and unwinding + symbolising real stacks copied with ptrace
(tests/cprogs/target.c, and CPython recursing through C: map() -> f()).

Run: .venv/bin/python -m pytest tests/bench/test_bench_symbols.py --benchmark-enable
extra_info carries frames, bytes of stack used, frames per KiB, us per frame.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time

import pytest

from tests.cprogs import build as cbuild
from tests.cprogs import ptrace_snap
from tracer.symbols import ElfSymbols, ProcMaps, Symbolizer, unwind_ex

pytestmark = [
    pytest.mark.skipif(bool(cbuild.missing_tools("nofp")), reason="needs gcc"),
    pytest.mark.skipif(ptrace_snap.supported() is not None,
                       reason=str(ptrace_snap.supported())),
]
SLEEPS = (35, 230)  # nanosleep, clock_nanosleep
PY_DEPTH = 30  # Python -> map() -> Python ... : ~5.6 C frames per level
PY_CODE = ("import sys, time\n"
           "def f(n):\n"
           "    return list(map(f, [n - 1])) if n else time.sleep(100)\n"
           "print('ready', flush=True)\n"
           f"f({PY_DEPTH})\n")


def _stopped(cmd, copy: int):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    p.stdout.readline()
    for _ in range(500):
        try:
            regs, stack = ptrace_snap.snapshot(p.pid, copy)
        except PermissionError as e:
            p.kill()
            p.wait()
            pytest.skip(f"ptrace not permitted: {e}")
        if regs["orig_rax"] in SLEEPS:
            return p, regs, stack
        time.sleep(0.002)
    p.kill()
    p.wait()
    raise AssertionError(f"{cmd[0]} never stopped in its sleep")


@pytest.fixture(scope="module")
def target_stack(tmp_path_factory):
    exe = cbuild.build("nofp", tmp_path_factory.mktemp("cprogs"))
    p, regs, stack = _stopped([str(exe), "100000"], 16384)
    yield p.pid, regs, stack
    p.kill()
    p.wait()


@pytest.fixture(scope="module")
def python_stack():
    p, regs, stack = _stopped([sys.executable, "-c", PY_CODE], 1 << 17)
    yield p.pid, regs, stack
    p.kill()
    p.wait()


def _libc() -> str:
    for line in open("/proc/self/maps"):
        path = line.split(None, 5)[-1].strip()
        if "/libc.so" in path:
            return path
    pytest.skip("no libc mapped in this process")


def test_open_libc_cold(benchmark):
    path = _libc()

    def cold():
        ElfSymbols.clear_cache()
        return ElfSymbols.open(path)
    elf = benchmark(cold)
    benchmark.extra_info["functions"] = len(elf.functions())
    benchmark.extra_info["fdes"] = len(elf.eh_frame())


def test_addr_to_sym(benchmark):
    elf = ElfSymbols.open(_libc())
    funcs = elf.functions()
    rng = random.Random(23)
    addrs = [s.vaddr + rng.randrange(max(s.size, 1)) for s in rng.sample(funcs, 1000)]

    def lookups():
        return sum(1 for a in addrs if elf.addr_to_sym(a) is not None)
    assert benchmark(lookups) == len(addrs)
    benchmark.extra_info["lookups_per_round"] = len(addrs)


@pytest.mark.parametrize("which", ["target", "python"])
def test_unwind_warm(benchmark, request, which):
    pid, regs, stack = request.getfixturevalue(f"{which}_stack")
    maps = ProcMaps.read(pid)
    first = unwind_ex(maps, regs, stack, regs["rsp"], max_frames=4096)  # tables decoded here
    res = benchmark(unwind_ex, maps, regs, stack, regs["rsp"], max_frames=4096)
    assert res.addrs == first.addrs and res.reason == "end_of_stack", (res.reason, len(res.addrs))
    frames = len(res.addrs)
    benchmark.extra_info.update(frames=frames, stack_used=res.stack_used,
                                frames_per_kib=round(frames / (res.stack_used / 1024), 1))
    if benchmark.stats:
        benchmark.extra_info["us_per_frame"] = round(benchmark.stats.stats.median / frames * 1e6, 2)


@pytest.mark.parametrize("which", ["target", "python"])
def test_symbolize_warm(benchmark, request, which):
    pid, regs, stack = request.getfixturevalue(f"{which}_stack")
    sym = Symbolizer()
    addrs = unwind_ex(sym.maps(pid), regs, stack, regs["rsp"], max_frames=4096).addrs
    sym.frames(pid, addrs)  # modules opened here
    frames = benchmark(sym.frames, pid, addrs)
    assert all(f.symbol for f in frames), [f for f in frames if not f.symbol][:3]
    benchmark.extra_info["frames"] = len(frames)
