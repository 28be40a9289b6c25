"""The DWARF CFI unwinder on real stacks, no root: tests/cprogs/target.c runs
as our child, is stopped with ptrace while callee sleeps (rip inside libc's
clock_nanosleep), and its registers plus the top 16 KiB of its stack are
unwound and symbolised: libc -> callee -> caller -> main -> libc -> _start,
for the frame-pointer, no-frame-pointer and both stripped builds, and one
whose CFI for target.c's code is only in .debug_frame."""

from __future__ import annotations

import errno
import re
import subprocess
import time

import pytest

from tests.cprogs import build as cbuild
from tests.cprogs import ptrace_snap
from tracer.symbols import ElfSymbols, ProcMaps, Symbolizer, unwind, unwind_ex
from tracer.symbols import unwinder as unwind_mod

pytestmark = [
    pytest.mark.skipif(bool(cbuild.missing_tools()),
                       reason="needs " + ", ".join(cbuild.missing_tools())),
    pytest.mark.skipif(ptrace_snap.supported() is not None,
                       reason=str(ptrace_snap.supported())),
]

VARIANTS = ("fp", "nofp", "stripped", "stripped-bare", "debugframe")
STACK_COPY = 16384
SLEEP_SYSCALLS = (35, 230)  # x86-64 nanosleep, clock_nanosleep


@pytest.fixture(scope="module")
def bins(tmp_path_factory):
    out = tmp_path_factory.mktemp("cprogs")
    return {v: cbuild.build(v, out) for v in VARIANTS}


@pytest.fixture
def running(bins):
    """Start a variant looping over callee (3 ms sleeps) for long enough."""
    procs = []

    def start(variant):
        p = subprocess.Popen([str(bins[variant]), "100000"], stdout=subprocess.PIPE)
        procs.append(p)
        assert p.stdout.readline().startswith(b"ready ")
        return p
    yield start
    for p in procs:
        p.kill()
        p.wait(timeout=10)


def names(bins, variant):
    """callee, caller, main, _start as the variant's symbols call them."""
    nofp = ElfSymbols.open(str(bins["nofp"]))
    fns = ("callee", "caller", "main", "_start")
    if variant == "stripped-bare":
        return tuple(f"func_0x{nofp.lookup(n).vaddr:x}" for n in fns)
    return fns


def snap_in_libc(proc, path):
    """Registers and stack of proc stopped in the sleep below callee (libc):
    retried until the stop lands there."""
    maps = ProcMaps.read(proc.pid)
    for _ in range(200):
        try:
            regs, stack = ptrace_snap.snapshot(proc.pid, STACK_COPY)
        except OSError as e:
            if e.errno == errno.EPERM:
                pytest.skip(f"ptrace not permitted: {e}")
            raise
        m = maps.find(regs["rip"])
        # stopped in the nanosleep/clock_nanosleep syscall of usleep (not in
        # start-up's write, nor in caller's snprintf)
        if regs["orig_rax"] in SLEEP_SYSCALLS and m is not None and m.path != str(path):
            return maps, regs, stack
        time.sleep(0.001)
    raise AssertionError("the target never stopped in its sleep")


@pytest.mark.parametrize("variant", VARIANTS)
def test_real_stack_through_libc(bins, running, variant):
    proc = running(variant)
    maps, regs, stack = snap_in_libc(proc, bins[variant])
    res = unwind_ex(maps, regs, stack, regs["rsp"])
    assert res.addrs[0] == regs["rip"]
    assert res.reason == unwind_mod.END_OF_STACK  # reached _start, not a limit
    assert res.methods == ["dwarf"] * (len(res.addrs) - 1)
    assert 0 < res.stack_used <= len(stack)
    frames = Symbolizer().frames(proc.pid, res.addrs)
    syms = [f.symbol for f in frames]
    callee, caller, main, start = names(bins, variant)
    i = syms.index(callee)
    assert syms[i:i + 3] == [callee, caller, main], syms
    assert syms[-1] == start, syms
    assert all(f.module == str(bins[variant]) for f in frames[i:i + 3])
    assert frames[0].module != str(bins[variant]) and "libc" in frames[0].module
    # the frames between main and _start are libc's start-up code
    assert all("libc" in f.module for f in frames[i + 3:-1])
    elf = ElfSymbols.open(str(bins[variant]))
    assert all(f.build_id == elf.build_id for f in frames[i:i + 3])
    if variant == "debugframe":  # unwound by .debug_frame: .eh_frame has no FDE for them
        for name in ("callee", "caller", "main"):
            vaddr = elf.lookup(name).vaddr
            assert elf.eh_frame().find(vaddr) is None
            assert elf.debug_frame().find(vaddr).start == vaddr
    assert unwind(maps, regs, stack, regs["rsp"]) == res.addrs


def test_bounds(bins, running):
    proc = running("nofp")
    maps, regs, stack = snap_in_libc(proc, bins["nofp"])
    full = unwind_ex(maps, regs, stack, regs["rsp"])
    n = len(full.addrs)
    # max_frames
    res = unwind_ex(maps, regs, stack, regs["rsp"], max_frames=3)
    assert res.addrs == full.addrs[:3] and res.reason == unwind_mod.MAX_FRAMES
    # exactly the bytes it needed are enough; fewer stop with stack_copy_end
    used = full.stack_used
    assert unwind_ex(maps, regs, stack[:used], regs["rsp"]).addrs == full.addrs
    for size in (0, 8, 64, used // 2, used - 8):
        res = unwind_ex(maps, regs, stack[:size], regs["rsp"])
        assert res.reason == unwind_mod.STACK_COPY_END
        assert 1 <= len(res.addrs) < n and res.addrs == full.addrs[:len(res.addrs)]
    # registers missing: nothing to start from
    assert unwind_ex(maps, {"rsp": regs["rsp"]}, stack, regs["rsp"]).reason == \
        unwind_mod.REGISTER_UNKNOWN


def test_frame_pointer_fallback(bins, running):
    """The target's code seen as anonymous memory (JIT code has no CFI): the
    fp build still unwinds through it by its frame pointers."""
    proc = running("fp")
    path = str(bins["fp"])
    maps, regs, stack = snap_in_libc(proc, path)
    full = unwind_ex(maps, regs, stack, regs["rsp"])
    jit = ProcMaps(proc.pid, [m._replace(path="", inode=0) if m.path == path else m
                              for m in maps.mappings])
    res = unwind_ex(jit, regs, stack, regs["rsp"])
    syms = [f.symbol for f in Symbolizer().frames(proc.pid, full.addrs)]
    i = syms.index("callee")
    # callee, caller and main were stepped over by rbp; libc by its CFI again
    assert res.methods[i:i + 3] == ["fp", "fp", "fp"]
    assert res.methods[:i] == ["dwarf"] * i
    assert res.addrs == full.addrs  # the same chain, up to _start
    assert res.reason == unwind_mod.NO_MODULE  # _start clears rbp: nothing more to follow


def test_plt_cfa_expression(bins):
    """The .plt FDE's CFA is the standard expression
    rsp + 8 + ((rip & 15) >= 11) * 8; evaluated, not a stop."""
    path = str(bins["nofp"])
    out = subprocess.run(["readelf", "-SW", path], capture_output=True, text=True,
                         check=True).stdout
    plt = int(re.search(r"\]\s+\.plt\s+\S+\s+([0-9a-f]+)", out).group(1), 16)
    eh = ElfSymbols.open(path).eh_frame()
    entry = plt + 16  # the first PLT entry after PLT0
    table = eh.table(eh.find(entry))
    row = table.row(entry + 5)
    assert row.cfa_expr is not None

    def read(addr):
        raise AssertionError("the PLT expression reads no memory")
    rsp = 0x7FFC0000
    assert unwind_mod._eval(row.cfa_expr, {7: rsp, 16: entry + 5}, read) == rsp + 8
    assert unwind_mod._eval(row.cfa_expr, {7: rsp, 16: entry + 11}, read) == rsp + 16
    with pytest.raises(unwind_mod._Stop) as e:
        unwind_mod._eval([("DW_OP_call_frame_cfa", [])], {}, read)
    assert e.value.reason == unwind_mod.CFA_EXPRESSION


def test_signal_frame(tmp_path):
    """Through the kernel's signal frame: the handler's sleep, the handler,
    libc's __restore_rt (CIE augmentation "S", register rules that are DWARF
    expressions over the saved ucontext), then the interrupted spin loop."""
    exe = cbuild.build("nofp", tmp_path, source="sigtarget.c")
    p = subprocess.Popen([str(exe)], stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline().startswith(b"ready ")
        maps, regs, stack = snap_in_libc(p, exe)
        res = unwind_ex(maps, regs, stack, regs["rsp"])
        assert res.reason == unwind_mod.END_OF_STACK
        assert res.methods == ["dwarf"] * (len(res.addrs) - 1)
        frames = Symbolizer().frames(p.pid, res.addrs)
    finally:
        p.kill()
        p.wait(timeout=10)
    syms = [f.symbol for f in frames]
    i = syms.index("in_handler")
    assert syms[i:i + 2] == ["in_handler", "on_alarm"], syms
    assert "libc" in frames[i + 2].module  # the signal trampoline
    # the interrupted pc, then main: its call to the noreturn spin() is its
    # last instruction, so the return address is symbolised at addr - 1
    assert syms[i + 3:i + 5] == ["spin", "main"], syms
    assert syms[-1] == "_start"
