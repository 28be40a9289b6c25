"""tracer.symbols on real binaries: tests/cprogs/target.c built four ways
(fp, nofp, stripped with MiniDebugInfo, stripped-bare) and the system libc.
Every expected name, vaddr, size and offset is computed here with binutils
(readelf, objcopy, xz), independently of the code under test. No root."""

from __future__ import annotations

import ctypes.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cprogs import build as cbuild
from tracer.symbols import (
    ElfSymbols,
    ProcMaps,
    Symbolizer,
    TargetError,
    dwarf_params,
    resolve_targets,
)
from tracer.symbols.elf import Sym

pytestmark = pytest.mark.skipif(
    bool(cbuild.missing_tools() + [t for t in ("readelf",) if not shutil.which(t)]),
    reason="needs " + ", ".join(cbuild.missing_tools()
                                + [t for t in ("readelf",) if not shutil.which(t)]))

VARIANTS = ("fp", "nofp", "stripped", "stripped-bare")
OURS = ("callee", "caller", "main")


@pytest.fixture(scope="module")
def bins(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("cprogs")
    return {v: cbuild.build(v, out) for v in VARIANTS}


def _sh(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout


def readelf_funcs(path, dyn: bool = False) -> dict[tuple[str, int], int]:
    """(name, vaddr) -> size of the defined FUNC/IFUNC symbols, from readelf."""
    out: dict[tuple[str, int], int] = {}
    table = None
    for line in _sh("readelf", "--syms", "-W", str(path)).splitlines():
        m = re.match(r"Symbol table '(\S+)'", line)
        if m:
            table = m.group(1)
        f = line.split()
        if table != (".dynsym" if dyn else ".symtab"):
            continue
        if len(f) >= 8 and f[0].endswith(":") and f[3] in ("FUNC", "IFUNC") and f[6] != "UND":
            value = int(f[1], 16)
            if value:
                out[(f[7].split("@")[0], value)] = int(f[2], 0)
    return out


def readelf_loads(path) -> list[tuple[int, int, int]]:
    """(offset, vaddr, filesz) of the PT_LOAD segments."""
    loads = []
    for line in _sh("readelf", "-lW", str(path)).splitlines():
        f = line.split()
        if f and f[0] == "LOAD":
            loads.append((int(f[1], 16), int(f[2], 16), int(f[4], 16)))
    return loads


def offset_of(path, vaddr: int) -> int:
    for off, va, size in readelf_loads(path):
        if va <= vaddr < va + size:
            return vaddr - va + off
    raise AssertionError(f"{vaddr:#x} not in a PT_LOAD of {path}")


def readelf_fdes(path) -> list[tuple[int, int]]:
    """(start, end) of every .eh_frame FDE outside the .plt* sections."""
    plt = []
    for line in _sh("readelf", "-SW", str(path)).splitlines():
        m = re.search(r"\]\s+(\.plt\S*)\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)", line)
        if m:
            plt.append((int(m.group(2), 16), int(m.group(2), 16) + int(m.group(3), 16)))
    fdes = []
    for m in re.finditer(r"FDE cie=\S+ pc=([0-9a-f]+)\.\.([0-9a-f]+)",
                         _sh("readelf", "--debug-dump=frames", str(path))):
        start, end = int(m.group(1), 16), int(m.group(2), 16)
        if not any(lo <= start < hi for lo, hi in plt):
            fdes.append((start, end))
    return sorted(fdes)


def minidebug_funcs(path, tmp: Path) -> dict[tuple[str, int], int]:
    """The function symbols inside .gnu_debugdata, via objcopy + xz + readelf."""
    xzf, elf = tmp / "mini.xz", tmp / "mini.elf"
    _sh("objcopy", f"--dump-section=.gnu_debugdata={xzf}", str(path), str(tmp / "scratch"))
    elf.write_bytes(subprocess.run(["xz", "-dc", str(xzf)], capture_output=True, check=True,
                                   timeout=60).stdout)
    return readelf_funcs(elf)


def ours(elf: ElfSymbols, source: str | None = None) -> dict[tuple[str, int], int]:
    return {(s.name, s.vaddr): s.size for s in elf.functions()
            if source is None or s.source == source}


@pytest.mark.parametrize("variant", ["fp", "nofp"])
def test_symtab_matches_readelf(bins, variant):
    path = bins[variant]
    want = readelf_funcs(path)
    elf = ElfSymbols.open(str(path))
    assert ours(elf) == want  # every FUNC symbol, exact vaddr and size
    assert {s.source for s in elf.functions()} == {"symtab"}
    for name in OURS:
        sym = elf.lookup(name)
        assert sym.file_offset == offset_of(path, sym.vaddr)
        assert elf.vaddr_to_file_offset(sym.vaddr) == sym.file_offset
        assert elf.file_offset_to_vaddr(sym.file_offset) == sym.vaddr
        assert elf.addr_to_sym(sym.vaddr + sym.size - 1) == (sym, sym.size - 1)
    build_id = re.search(r"Build ID: ([0-9a-f]+)", _sh("readelf", "-n", str(path))).group(1)
    assert elf.build_id == build_id


def test_stripped_names_from_minidebuginfo(bins, tmp_path):
    path = bins["stripped"]
    assert readelf_funcs(path) == {}  # strip --strip-all: no .symtab
    inner = minidebug_funcs(path, tmp_path)
    assert {"callee", "caller", "main"} <= {n for n, _ in inner}
    elf = ElfSymbols.open(str(path))
    assert ours(elf, "debugdata") == inner
    # the same code as nofp: the same vaddrs, sizes and file offsets
    nofp = ElfSymbols.open(str(bins["nofp"]))
    for name in OURS:
        got, ref = elf.lookup(name), nofp.lookup(name)
        assert (got.vaddr, got.size, got.file_offset, got.source) == \
            (ref.vaddr, ref.size, ref.file_offset, "debugdata")
    assert elf.counters["debugdata_errors"] == 0


def test_stripped_bare_boundaries_from_eh_frame(bins):
    path = bins["stripped-bare"]
    assert readelf_funcs(path) == {}
    fdes = readelf_fdes(path)
    elf = ElfSymbols.open(str(path))
    # no symbol covers anything: one func_0x<start> per FDE, exactly
    assert ours(elf) == {(f"func_0x{lo:x}", lo): hi - lo for lo, hi in fdes}
    assert {s.source for s in elf.functions()} == {"eh_frame"}
    nofp = ElfSymbols.open(str(bins["nofp"]))
    for name in OURS:
        ref = nofp.lookup(name)
        got = elf.lookup(f"func_0x{ref.vaddr:x}")
        assert (got.vaddr, got.size, got.file_offset) == (ref.vaddr, ref.size, ref.file_offset)
        assert elf.addr_to_sym(ref.vaddr + 3) == (got, 3)


def test_dynsym_only_library():
    libc = ctypes.util.find_library("c")
    path = next((p for p in (f"/lib/x86_64-linux-gnu/{libc}", f"/usr/lib64/{libc}",
                             f"/lib64/{libc}") if libc and os.path.exists(p)), None)
    if path is None:
        pytest.skip("no system libc found (ctypes.util.find_library('c'))")
    if readelf_funcs(path):
        pytest.skip(f"{path} is not stripped (has .symtab)")
    want = readelf_funcs(path, dyn=True)
    elf = ElfSymbols.open(path)
    assert ours(elf, "dynsym") == want
    pairs = [(s.name, s.vaddr) for s in elf.functions()]
    assert len(pairs) == len(set(pairs))  # versioned twins at one address: listed once
    sym = elf.lookup("usleep")
    assert sym is not None and sym.file_offset == offset_of(path, sym.vaddr)
    # local code only .eh_frame knows about gets func_0x names, never overlapping a symbol
    for s in elf.functions():
        if s.source == "eh_frame":
            assert elf.addr_to_sym(s.vaddr) == (s, 0)


def test_cache_per_build_id_and_file(bins, tmp_path):
    a = ElfSymbols.open(str(bins["nofp"]))
    assert ElfSymbols.open(str(bins["nofp"])) is a
    copy = tmp_path / "copy"
    shutil.copy2(bins["nofp"], copy)
    assert ElfSymbols.open(str(copy)) is a  # same build-id and size: parsed once
    # strip keeps the build-id but not the symbols: not the same entry
    bare = ElfSymbols.open(str(bins["stripped-bare"]))
    assert bare.build_id == a.build_id and bare is not a


def test_resolve_targets(bins):
    nofp = str(bins["nofp"])
    callee = ElfSymbols.open(nofp).lookup("callee")
    assert resolve_targets(nofp, "callee") == [callee]
    assert resolve_targets(nofp, f"{callee.vaddr:#x}") == [callee]
    inside = resolve_targets(nofp, f"{callee.vaddr + 4:#x}")
    assert inside == [Sym("callee+0x4", callee.vaddr + 4, callee.size - 4,
                          callee.file_offset + 4, "symtab")]
    assert sorted(s.name for s in resolve_targets(nofp, "call*")) == ["callee", "caller"]
    stripped = str(bins["stripped"])
    assert [s.source for s in resolve_targets(stripped, "callee")] == ["debugdata"]
    bare = str(bins["stripped-bare"])
    assert len(resolve_targets(bare, "func_0x*")) == len(readelf_fdes(bare))
    assert resolve_targets(bare, f"{callee.vaddr:#x}")[0].name == f"func_0x{callee.vaddr:x}"


def test_resolve_targets_errors(bins, tmp_path):
    nofp = str(bins["nofp"])
    cases = {
        (nofp, "nope"): "no function named 'nope'",
        (nofp, "zz*"): "no function matches 'zz*'",
        (nofp, "0x7fffffff0000"): "not in a loadable segment",
        (nofp, "0xnothex"): "bad address",
        (str(bins["stripped-bare"]), "callee"): "no function named 'callee'",
        (str(tmp_path / "missing"), "main"): "no such file",
    }
    text = tmp_path / "text"
    text.write_text("not an ELF file\n")
    cases[(str(text), "main")] = "not an ELF file"
    for (binary, spec), needle in cases.items():
        with pytest.raises(TargetError) as e:
            resolve_targets(binary, spec)
        msg = str(e.value)
        assert needle in msg and "\n" not in msg and msg.startswith(binary)


def test_dwarf_params(bins):
    for v in ("fp", "nofp"):
        assert dwarf_params(str(bins[v]), "callee") == [("a", "int", 4), ("b", "int", 8),
                                                        ("s", "str", 8)]
        assert dwarf_params(str(bins[v]), "caller") == [("i", "int", 4)]
        assert dwarf_params(str(bins[v]), "main") == [("argc", "int", 4), ("argv", "ptr", 8)]
        assert dwarf_params(str(bins[v]), "nope") is None
    # no DWARF after strip (the same build-id as nofp must not leak its DWARF)
    assert dwarf_params(str(bins["stripped"]), "callee") is None
    assert dwarf_params(str(bins["stripped-bare"]), "callee") is None


def test_corrupt_minidebuginfo_is_counted(bins, tmp_path):
    path = tmp_path / "corrupt"
    shutil.copy2(bins["stripped"], path)
    sec = next(line for line in _sh("readelf", "-SW", str(path)).splitlines()
               if ".gnu_debugdata" in line)
    off = int(sec.split("]", 1)[1].split()[3], 16)
    with open(path, "r+b") as f:
        f.seek(off + 16)
        f.write(b"\0" * 32)
        f.seek(0, os.SEEK_END)
        f.write(b"\0")  # another size: the same build-id must not hit the cache
    elf = ElfSymbols.open(str(path))
    assert elf.counters["debugdata_errors"] == 1
    assert {s.source for s in elf.functions()} == {"eh_frame"}  # boundaries still there


def test_procmaps_pie_bias(bins):
    """A PIE mapped high: address -> file offset -> vaddr, as the kernel maps it."""
    path = str(bins["nofp"])
    callee = ElfSymbols.open(path).lookup("callee")
    base = 0x55D2AB719000
    text = "".join(
        f"{base + va - va % 4096:x}-{base + va - va % 4096 + 4096:x} {perm} {off - off % 4096:08x} "
        f"fd:01 1234 {path}\n"
        for off, va, _ in readelf_loads(path) for perm in ["r-xp"])
    text += "7ffd0000-7ffd2000 r-xp 00000000 00:00 0 [vdso]\n"
    maps = ProcMaps.parse(os.getpid(), text)
    mod = maps.module(base + callee.vaddr + 5)
    assert mod.vaddr == callee.vaddr + 5 and mod.elf.addr_to_sym(mod.vaddr) == (callee, 5)
    assert maps.module(0x7FFD0010) is None  # [vdso]: no file
    assert maps.find(0x7FFD0010).path == "[vdso]"


def test_library_loaded_later_is_found(tmp_path):
    """maps read before a dlopen(): an address in the new library re-reads
    them (Symbolizer.frames, and ProcMaps.module as the unwinder uses it)."""
    libz = ctypes.util.find_library("z")
    if libz is None:
        pytest.skip("no libz to dlopen (ctypes.util.find_library('z'))")
    code = ("import ctypes, sys\n"
            "print('ready', flush=True)\n"
            "sys.stdin.readline()\n"
            f"lib = ctypes.CDLL({libz!r})\n"
            "print(ctypes.cast(lib.zlibVersion, ctypes.c_void_p).value, flush=True)\n"
            "sys.stdin.readline()\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "ready\n"
        sym = Symbolizer()
        maps = sym.maps(p.pid)
        assert not any("libz" in m.path for m in maps.mappings)
        p.stdin.write("go\n")
        p.stdin.flush()
        addr = int(p.stdout.readline())
        frames = sym.frames(p.pid, [addr])
        assert frames[0].symbol == "zlibVersion" and frames[0].offset == 0
        assert "libz" in frames[0].module and maps.refreshes == 1
        fresh = ProcMaps.read(p.pid)
        fresh._set([m for m in fresh.mappings if "libz" not in m.path])  # as before the dlopen
        fresh._refreshed_at -= 10
        mod = fresh.module(addr)
        assert mod is not None and mod.elf.addr_to_sym(mod.vaddr)[0].name == "zlibVersion"
    finally:
        p.kill()
        p.wait(timeout=10)
