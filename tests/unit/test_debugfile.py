"""Separate debug files (tracer/symbols/debugfile.py): where they are looked
for and in which order, what is refused (a build-id or CRC that differs, a
file that is not ELF), and that their names and DWARF reach every user:
targets, argument specs, func_0x<vaddr> names, stacks of a live process.

tests/cprogs/work.c is built "split" (stripped; symbols and DWARF only in a
separate debug file, as -dbgsym packages ship them); target.c "split" gives
a debug file of another build. Expected vaddrs come from binutils (nm on the
debug file), not from the code under test. No root."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from tests.cprogs import build as cbuild
from tracer.symbols import (
    ElfSymbols,
    Symbolizer,
    TargetError,
    debugfile,
    dwarf_params,
    dwarfargs,
    resolve_targets,
    unwind,
)
from tracer.symbols.debugfile import Debuglink, candidates
from tracer.symbols.rawelf import ElfFormatError

pytestmark = pytest.mark.skipif(bool(cbuild.missing_tools("split")),
                                reason="needs " + ", ".join(cbuild.missing_tools("split")))

OURS = ("work", "caller", "main")
ARGS = [("id", "int", 4), ("weight", "int", 8), ("label", "str", 8)]


@pytest.fixture(autouse=True)
def fresh():
    """Lookups are cached per build-id process-wide: each test starts clean,
    and leaves the defaults for the next module."""
    debugfile.reset()
    ElfSymbols.clear_cache()
    dwarfargs._cache.clear()  # per binary: its debug file changes between tests here
    yield
    debugfile.reset()
    ElfSymbols.clear_cache()
    dwarfargs._cache.clear()


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = tmp_path_factory.mktemp("cprogs")
    work = cbuild.build("split", out, source="work.c")
    other = cbuild.build("split", out, source="target.c")
    return {"bin": work, "debug": cbuild.debug_file_of(work),
            "other_debug": cbuild.debug_file_of(other)}


def build_id(path) -> str:
    out = subprocess.run(["readelf", "-n", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return next(line.split()[-1] for line in out.splitlines() if "Build ID" in line)


def nm_vaddrs(path) -> dict[str, int]:
    out = subprocess.run(["nm", "--defined-only", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return {f[2]: int(f[0], 16) for f in (line.split() for line in out.splitlines())
            if len(f) == 3 and f[1] in "Tt"}


class Layout:
    """A directory with bin/work (the stripped binary) and a debug root."""

    def __init__(self, base: Path, split: dict):
        self.base, self.split = base, split
        (base / "bin").mkdir()
        self.root = base / "root"
        self.root.mkdir()
        self.bin = base / "bin" / "work"
        shutil.copy2(split["bin"], self.bin)
        self.bid = build_id(self.bin)
        debugfile.configure(roots=[str(self.root)], client=None)

    def by_build_id(self, src=None) -> Path:
        p = self.root / ".build-id" / self.bid[:2] / f"{self.bid[2:]}.debug"
        p.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src or self.split["debug"], p)
        return p

    def by_debuglink(self, where: str = "beside", src=None) -> Path:
        name = cbuild.debuglink_name("work.c")
        d = {"beside": self.bin.parent, "dot_debug": self.bin.parent / ".debug",
             "root": Path(f"{self.root}{self.bin.parent}")}[where]
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src or self.split["debug"], d / name)
        return d / name


@pytest.fixture
def lay(tmp_path, split):
    return Layout(tmp_path, split)


# -- order ---------------------------------------------------------------------

def test_candidates_in_gdb_order():
    link = Debuglink("app.debug", 0)
    got = candidates("/opt/app/bin/app", "abcdef12", link, ("/usr/lib/debug", "/srv/dbg"))
    assert got == [
        ("/usr/lib/debug/.build-id/ab/cdef12.debug", "build_id"),
        ("/srv/dbg/.build-id/ab/cdef12.debug", "build_id"),
        ("/opt/app/bin/app.debug", "debuglink"),
        ("/opt/app/bin/.debug/app.debug", "debuglink"),
        ("/usr/lib/debug/opt/app/bin/app.debug", "debuglink"),
        ("/srv/dbg/opt/app/bin/app.debug", "debuglink"),
    ]
    # no build-id, no link: nothing to look for
    assert candidates("/opt/app/bin/app", None, None, ("/usr/lib/debug",)) == []


def test_candidates_inside_a_container_first():
    """A file seen through /proc/PID/root: each root inside that root, then
    on the host; the debuglink beside it stays inside."""
    got = candidates("/proc/42/root/usr/bin/app", "abcdef12", Debuglink("app.debug", 0),
                     ("/usr/lib/debug",))
    assert got == [
        ("/proc/42/root/usr/lib/debug/.build-id/ab/cdef12.debug", "build_id"),
        ("/usr/lib/debug/.build-id/ab/cdef12.debug", "build_id"),
        ("/proc/42/root/usr/bin/app.debug", "debuglink"),
        ("/proc/42/root/usr/bin/.debug/app.debug", "debuglink"),
        ("/proc/42/root/usr/lib/debug/usr/bin/app.debug", "debuglink"),
        ("/usr/lib/debug/usr/bin/app.debug", "debuglink"),
    ]


def test_roots_from_the_environment(monkeypatch):
    monkeypatch.delenv("TRACER_DEBUG_DIRS", raising=False)
    assert debugfile.roots() == ("/usr/lib/debug",)
    monkeypatch.setenv("TRACER_DEBUG_DIRS", "/a:/b::")
    assert debugfile.roots() == ("/a", "/b")
    monkeypatch.setenv("TRACER_DEBUG_DIRS", "")
    assert debugfile.roots() == ()
    debugfile.configure(roots=["/c"])
    assert debugfile.roots() == ("/c",)


def test_build_id_first_then_debuglink_beside_then_dot_debug_then_root(lay):
    """Every place holds a good copy; removing the one found shows the next."""
    places = [lay.by_build_id(), lay.by_debuglink("beside"), lay.by_debuglink("dot_debug"),
              lay.by_debuglink("root")]
    hows = ["build_id", "debuglink", "debuglink", "debuglink"]
    for place, how in zip(places, hows, strict=True):
        debugfile.clear_cache()
        got = debugfile.locate(str(lay.bin), lay.bid, _link(lay.bin))
        assert got == debugfile.DebugFile(str(place), "debug_file", how)
        place.unlink()
    debugfile.clear_cache()
    assert debugfile.locate(str(lay.bin), lay.bid, _link(lay.bin)) is None
    c = debugfile.counters()
    assert (c["found_build_id"], c["found_debuglink"], c["not_found"]) == (1, 3, 1)
    assert c["build_id_mismatch"] == c["crc_mismatch"] == c["corrupt"] == 0


def _link(binary) -> Debuglink:
    with open(binary, "rb") as f:
        from tracer.symbols.rawelf import RawElf, file_reader

        return debugfile.read_debuglink(RawElf(file_reader(f.fileno())))


def test_debuglink_parsed_as_objcopy_wrote_it(split):
    link = _link(split["bin"])
    assert link == Debuglink("work.debug", zlib.crc32(split["debug"].read_bytes()))


# -- what is refused -------------------------------------------------------------

def test_build_id_mismatch_is_skipped_and_counted(lay):
    """Another build's debug file at this build-id's path, and as the
    debuglink: neither is used; the good one under the root is."""
    lay.by_build_id(src=lay.split["other_debug"])
    lay.by_debuglink("beside", src=lay.split["other_debug"])
    good = lay.by_debuglink("root")
    got = debugfile.locate(str(lay.bin), lay.bid, _link(lay.bin))
    assert got.path == str(good)
    assert debugfile.counters()["build_id_mismatch"] == 2


def test_crc_mismatch_is_skipped_and_counted(lay):
    """Same build-id, other bytes (one appended): the debuglink's CRC refuses it."""
    bad = lay.by_debuglink("beside")
    with open(bad, "ab") as f:
        f.write(b"\0")
    assert debugfile.locate(str(lay.bin), lay.bid, _link(lay.bin)) is None
    c = debugfile.counters()
    assert (c["crc_mismatch"], c["build_id_mismatch"], c["not_found"]) == (1, 0, 1)
    elf = ElfSymbols.open(str(lay.bin))
    assert elf.source_counts["debug_file"] == 0 and elf.lookup("work") is None


def test_not_elf_is_counted_as_corrupt(lay):
    p = lay.by_build_id()
    p.write_bytes(b"not an ELF file at all")
    assert debugfile.locate(str(lay.bin), lay.bid, None) is None
    assert debugfile.counters()["corrupt"] == 1


def test_no_match_says_where_it_looked(lay):
    with pytest.raises(TargetError) as e:
        resolve_targets(str(lay.bin), "work")
    msg = str(e.value)
    assert "\n" not in msg
    assert f"no debug file: build-id {lay.bid} not under {lay.root}" in msg
    assert ".gnu_debuglink 'work.debug' not beside it" in msg
    assert "DEBUGINFOD_URLS unset" in msg


def test_read_debuglink_malformed():
    class Fake:
        def __init__(self, data):
            self.data = data

        def section(self, name):
            from tracer.symbols.rawelf import Section

            return Section(name, 1, 0, 0, len(self.data), 0) if name == ".gnu_debuglink" \
                else None

        def read(self, off, size):
            return self.data[off:off + size]

    crc = (1234).to_bytes(4, "little")
    assert debugfile.read_debuglink(Fake(b"a.debug\0" + crc)) == Debuglink("a.debug", 1234)
    assert debugfile.read_debuglink(Fake(b"ab\0\0" + crc)) == Debuglink("ab", 1234)
    for bad in (b"", b"\0\0\0\0" + crc, b"a.debug\0", b"a.debug", b"../x\0\0\0\0" + crc,
                b"..\0\0" + crc):
        assert debugfile.read_debuglink(Fake(bad)) is None, bad


# -- names and DWARF everywhere ------------------------------------------------------------

@pytest.mark.parametrize("where", ["build_id", "debuglink"])
def test_names_args_and_func_0x_from_the_debug_file(lay, where):
    if where == "build_id":
        lay.by_build_id()
    else:
        lay.by_debuglink("beside")
    want = nm_vaddrs(lay.split["debug"])
    elf = ElfSymbols.open(str(lay.bin))
    assert elf.debug_file().how == where
    for name in OURS:
        sym = elf.lookup(name)
        assert (sym.name, sym.vaddr, sym.source) == (name, want[name], "debug_file")
        assert sym.file_offset is not None
        # the name an earlier run gave it (its FDE) still finds it
        assert elf.lookup(f"func_0x{want[name]:x}") == sym
        assert elf.addr_to_sym(want[name] + 1) == (sym, 1)
    assert not [s for s in elf.functions() if s.name == f"func_0x{want['work']:x}"]
    assert resolve_targets(str(lay.bin), "work") == [elf.lookup("work")]
    assert [tuple(p) for p in dwarf_params(str(lay.bin), "work")] == ARGS
    assert debugfile.symbol_sources() == {"binary": 0, "debug_file": 1, "debuginfod": 0,
                                          "none": 0}


def test_without_a_debug_file_names_stay_fde_boundaries(lay):
    elf = ElfSymbols.open(str(lay.bin))
    assert elf.debug_file() is None and elf.lookup("work") is None
    vaddr = nm_vaddrs(lay.split["debug"])["work"]
    assert elf.lookup(f"func_0x{vaddr:x}").source == "eh_frame"
    assert dwarf_params(str(lay.bin), "work") is None
    assert resolve_targets(str(lay.bin), f"func_0x{vaddr:x}")[0].source == "eh_frame"
    assert debugfile.symbol_sources()["none"] == 1


def test_debug_frame_from_the_debug_file(tmp_path):
    """CFI only in .debug_frame, which strip removes: the unwinder gets the
    debug file's (found by its debuglink, beside the binary)."""
    exe = cbuild.build("split-debugframe", tmp_path, source="work.c")
    shutil.copy2(cbuild.debug_file_of(exe), tmp_path / cbuild.debuglink_name("work.c"))
    debugfile.configure(roots=[], client=None)
    elf = ElfSymbols.open(str(exe))
    vaddr = nm_vaddrs(cbuild.debug_file_of(exe))["work"]
    assert elf.lookup("work").vaddr == vaddr
    assert elf.eh_frame().find(vaddr) is None
    index, fde = elf.cfi(vaddr)
    assert index is elf.debug_frame() and fde.start == vaddr


def test_debug_file_through_proc_pid_root(lay):
    """A binary opened through /proc/PID/root (as a container's is) finds the
    debug file under that root."""
    lay.by_build_id()
    path = f"/proc/{os.getpid()}/root{lay.bin}"
    elf = ElfSymbols.open(path)
    assert elf.debug_file().path == f"/proc/{os.getpid()}/root{lay.by_build_id()}"
    assert elf.lookup("work").source == "debug_file"


def test_live_stack_named_from_the_debug_file(lay):
    """The stripped program stopped in usleep below work: the DWARF unwind
    (the binary's .eh_frame) and the Symbolizer (names from the debug file,
    as --stack and --span-stacks use it) give work -> caller -> main."""
    from tests.unit.test_unwind import snap_in_libc

    lay.by_build_id()
    p = subprocess.Popen([str(lay.bin), "100000"], stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline().startswith(b"ready ")
        maps, regs, stack = snap_in_libc(p, lay.bin)
        frames = Symbolizer().frames(p.pid, unwind(maps, regs, stack, regs["rsp"]))
    finally:
        p.kill()
        p.wait(timeout=10)
    syms = [f.symbol for f in frames]
    i = syms.index("work")
    assert syms[i:i + 3] == list(OURS), syms
    assert all(f.module == str(lay.bin) for f in frames[i:i + 3])
    assert debugfile.symbol_sources()["debug_file"] >= 3


# -- corrupt debug files --------------------------------------------------------------------

def test_corrupt_debug_files_never_raise(lay):
    """Cut-short and byte-flipped copies of the debug file at the build-id
    path (trusted when the build-id note survives): clamped reads, bounded
    walks, only the documented errors. Seeded."""
    data = lay.split["debug"].read_bytes()
    rng = random.Random(24)
    cases = [data[:n] for n in (0, 64, 700, len(data) // 3, len(data) // 2, len(data) - 1)]
    for _ in range(80):
        b = bytearray(data)
        for _ in range(rng.randrange(1, 48)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        cases.append(bytes(b))
    for case in cases:
        p = lay.by_build_id()
        p.write_bytes(case)
        debugfile.clear_cache()
        ElfSymbols.clear_cache()
        dwarfargs._cache.clear()
        try:
            elf = ElfSymbols.open(str(lay.bin))
        except (OSError, ElfFormatError) as e:
            raise AssertionError(f"the binary is fine: {e}") from None
        for s in elf.functions():
            elf.addr_to_sym(s.vaddr)
        params = dwarf_params(str(lay.bin), "work")
        assert params is None or all(p.kind in ("int", "uint", "ptr", "str", "float")
                                     for p in params)
        for spec in ("work", "wor*", "func_0x1290"):
            try:
                resolve_targets(str(lay.bin), spec)
            except TargetError as e:
                assert "\n" not in str(e)
    c = debugfile.counters()
    assert c["found_build_id"] + c["not_found"] == len(cases)
    assert c["corrupt"] + c["build_id_mismatch"] >= 1  # the cut-short headers


def test_funcs_debug_dir_option(lay, tmp_path):
    """funcs --debug-dir: a missing directory is one line, exit 2; a root
    without the debug file is named in the target's error (resolving with it
    is tests/e2e/test_debuginfo.py's: it attaches)."""
    import sys

    repo = Path(__file__).resolve().parents[2]

    def funcs(*args):
        p = subprocess.run([sys.executable, "-m", "tracer", "funcs", *args], cwd=repo,
                           capture_output=True, text=True, timeout=60)
        return p.returncode, p.stderr.strip()

    assert funcs(f"{lay.bin}:work", "--debug-dir", str(tmp_path / "nope")) == \
        (2, f"tracer: --debug-dir {tmp_path / 'nope'}: no such directory")
    rc, err = funcs(f"{lay.bin}:work", "--debug-dir", str(lay.root))
    assert rc == 2 and "no function named 'work'" in err and "\n" not in err
    assert f"build-id {lay.bid} not under {lay.root};" in err
