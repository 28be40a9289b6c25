"""Function symbols of one ELF file, cached per build-id.

Names come from, in order of preference: .symtab, the MiniDebugInfo
.gnu_debugdata section (an xz-compressed ELF whose .symtab has the local
function names a distribution strip keeps: same vaddrs as the outer file),
.dynsym, then, for a file without .symtab, the .symtab of its separate debug
file (tracer/symbols/debugfile.py: build-id, .gnu_debuglink, debuginfod;
same vaddrs too). Code that no symbol covers but an .eh_frame FDE describes
gets ``func_0x<vaddr>`` (the FDE's start), so stripped binaries still have
function boundaries to attach to and to symbolise with.
"""

from __future__ import annotations

import fnmatch
import os
import re
import struct
import threading
from array import array
from bisect import bisect_left, bisect_right
from typing import NamedTuple

from . import debugfile, minidebug
from .ehframe import EhFrame, Fde, locate_eh_frame
from .rawelf import SHT_DYNSYM, SHT_SYMTAB, STB_GLOBAL, STB_WEAK, ElfFormatError, RawElf, SymTable

CACHE_MAX = 512  # modules: a host has a few hundred distinct libraries at most
MAX_DEBUG_FRAME = 16 << 20  # .debug_frame kept for unwinding (CFI only: small)
_BIND_RANK = {STB_GLOBAL: 0, STB_WEAK: 1}
# in order of preference; a name in several tables counts for the first
SOURCES = ("symtab", "debugdata", "dynsym", "debug_file", "debuginfod", "eh_frame")
DEBUGDATA, DEBUG_FILE, DEBUGINFOD, EH_FRAME = 1, 3, 4, 5
# where a Sym's name came from, as symbol_sources counts it
ORIGIN = {"symtab": "binary", "debugdata": "binary", "dynsym": "binary",
          "debug_file": "debug_file", "debuginfod": "debuginfod", "eh_frame": "none"}
HOT_SYMS = 4096  # Sym objects kept per module for addr_to_sym


class TargetError(ValueError):
    """A target spec that matches nothing (one-line message)."""


class Sym(NamedTuple):
    name: str
    vaddr: int
    size: int
    file_offset: int | None
    source: str  # one of SOURCES


class ElfSymbols:
    """Symbols of one ELF file. Open with ElfSymbols.open(path) (cached):
    the symbol tables and the .eh_frame FDE index are read then, the CFI
    rules of an FDE on first use."""

    _cache: dict[object, ElfSymbols] = {}
    _lock = threading.Lock()

    def __init__(self, path: str, raw: RawElf, build_id: str | None):
        self.path = path
        self.build_id = build_id
        self._raw = raw
        # every function, sorted by (vaddr, preference), as parallel arrays:
        # no object per symbol (node: 86k functions in ~8 MB instead of 80)
        self._va = array("Q")  # vaddr
        self._sz = array("Q")  # size
        self._tb = bytearray()  # source: index into SOURCES
        self._no = array("Q")  # name offset in _names (increasing with the index)
        self._names = b""  # "\0name\0name\0..."; eh_frame entries have "" (func_0x<vaddr>)
        self._starts = array("Q")  # distinct vaddrs
        self._best = array("Q")  # index of the preferred name at each start
        self.source_counts = dict.fromkeys(SOURCES, 0)
        self._hot: dict[int, Sym] = {}  # symbols stacks resolved to lately
        self._eh: EhFrame | None | bool = False  # False: not read yet
        self._debug_frame: EhFrame | None | bool | bytes = False  # bytes: read, not parsed
        self.counters = {"debugdata_errors": 0, "eh_frame_errors": 0, "debug_file_errors": 0}
        self.debuglink: debugfile.Debuglink | None = None
        self._debug: debugfile.DebugFile | None | bool = False  # False: not looked up yet

    # -- opening and caching ------------------------------------------------

    @classmethod
    def open(cls, path: str) -> ElfSymbols:
        """Raises OSError (missing, unreadable) or ElfFormatError (not ELF64 LE)."""
        st = os.stat(path)
        stat_key = ("stat", st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        with cls._lock:
            hit = cls._cache.get(stat_key)
        if hit is not None:
            return hit
        # the file stays open only while the headers and tables are read
        with open(path, "rb") as f:
            reader = _FileReader(f.fileno())
            raw = RawElf(reader)
            bid = raw.build_id()
            with cls._lock:
                # strip keeps the build-id: the size tells the stripped copy apart
                bid_key = ("bid", bid, st.st_size)
                hit = cls._cache.get(bid_key) if bid else None
            if hit is None:
                hit = cls(path, raw, bid)
                hit.debuglink = debugfile.read_debuglink(raw)
                dbg = raw.section(".debug_frame")
                if dbg is not None and 0 < dbg.size <= MAX_DEBUG_FRAME:
                    hit._debug_frame = raw.section_data(dbg)
                hit._load_symbols()  # reads the tables and .eh_frame while open
            reader.fd = None
        with cls._lock:
            if len(cls._cache) >= CACHE_MAX:
                cls._cache.clear()  # crude but bounded; a re-open re-reads
            cls._cache[stat_key] = hit
            if bid:
                cls._cache[bid_key] = hit
        return hit

    @classmethod
    def clear_cache(cls) -> None:
        with cls._lock:
            cls._cache.clear()
        debugfile.clear_cache()

    def debug_file(self) -> debugfile.DebugFile | None:
        """The separate debug file of this binary (looked up once)."""
        if self._debug is False:
            self._debug = debugfile.locate(self.path, self.build_id, self.debuglink)
        return self._debug or None

    def _debug_symbols(self) -> tuple[int, SymTable | None]:
        """(table index, .symtab) of the debug file; its .debug_frame is
        taken too when the binary has none. A corrupt file reads as far as
        it can (clamped reads); one that stops the read is counted."""
        df = self.debug_file()
        if df is None:
            return DEBUG_FILE, None
        t = DEBUGINFOD if df.origin == "debuginfod" else DEBUG_FILE
        try:
            with open(df.path, "rb") as f:
                reader = _FileReader(f.fileno())
                raw = RawElf(reader)
                tab = raw.function_table(SHT_SYMTAB)
                dbg = raw.section(".debug_frame")
                if (self._debug_frame is False and dbg is not None
                        and 0 < dbg.size <= MAX_DEBUG_FRAME):
                    self._debug_frame = raw.section_data(dbg)
                reader.fd = None
        except (OSError, ValueError, IndexError, struct.error):
            self.counters["debug_file_errors"] += 1
            return t, None
        return t, tab

    @property
    def identity(self) -> str:
        """Build-id, else path: a module's key for symbol_sources."""
        return self.build_id or self.path

    def count(self, sym: Sym) -> None:
        """Count sym once for symbol_sources, by where its name came from."""
        debugfile.count_symbol((self.identity, sym.vaddr), ORIGIN[sym.source])

    # -- symbols -------------------------------------------------------------

    def _load_symbols(self) -> None:
        raw = self._raw
        tables: list[SymTable | None] = [raw.function_table(SHT_SYMTAB), None,
                                         raw.function_table(SHT_DYNSYM), None, None]
        if tables[0] is None:  # stripped: the names are in the debug file, if any
            t, tables[t] = self._debug_symbols()
        sec = raw.section(".gnu_debugdata")
        if sec is not None:
            try:
                tables[DEBUGDATA] = minidebug.function_table(raw.section_data(sec))
            except minidebug.MiniDebugError:
                self.counters["debugdata_errors"] += 1
        # entries: (table, index in it), each (name, vaddr) once, from the
        # first table that has it; sort keys put the preferred name first at
        # each address: globals, then weak aliases, then locals, then the
        # fewest leading underscores
        ent_t, ent_i, keys = bytearray(), array("Q"), []
        by_vaddr: list[tuple[array, array]] = []  # per earlier table: sorted vaddrs, indices
        for t, tab in enumerate(tables):
            if tab is None:
                by_vaddr.append((array("Q"), array("Q")))
                continue
            idx = sorted(range(len(tab.vaddr)), key=tab.vaddr.__getitem__)
            by_vaddr.append((array("Q", (tab.vaddr[j] for j in idx)), array("Q", idx)))
            for i in range(len(tab.vaddr)):
                v = tab.vaddr[i]
                name = tab.name_bytes(i)
                if _seen(tables, by_vaddr, v, name, t, i):
                    continue
                under = min(len(name) - len(name.lstrip(b"_")), 15)
                keys.append((v << 12) | (_BIND_RANK.get(tab.bind[i], 2) << 10) | (under << 6)
                            | t << 2)
                ent_t.append(t)
                ent_i.append(i)
        order = sorted(range(len(keys)), key=keys.__getitem__)
        starts, best_sz = array("Q"), array("Q")
        for k in order:
            v = tables[ent_t[k]].vaddr[ent_i[k]]
            if not starts or starts[-1] != v:
                starts.append(v)
                best_sz.append(tables[ent_t[k]].size[ent_i[k]])
        # code no symbol covers, but an FDE describes: func_0x<start>
        extra: list[tuple[int, int]] = []
        eh = self.eh_frame()
        if eh is not None:
            plt = [(sec.addr, sec.addr + sec.size) for sec in raw.sections
                   if sec.name.startswith(".plt")]
            for start, end in eh.ranges():
                if _covering(starts, best_sz, start) is None:
                    if any(lo <= start < hi for lo, hi in plt):
                        continue  # PLT stubs are not functions
                    extra.append((start, end - start))
        del starts, best_sz, by_vaddr
        # the final arrays: symbols and FDE-only entries merged by vaddr
        nsym = len(keys)
        if extra:
            keys += [(start << 12) | (3 << 10) | (EH_FRAME << 2) for start, _ in extra]
            order = sorted(range(len(keys)), key=keys.__getitem__)
        del keys
        names = bytearray(b"\0")
        for k in order:
            if k >= nsym:
                start, size = extra[k - nsym]
                self._va.append(start)
                self._sz.append(size)
                self._tb.append(EH_FRAME)
                self._no.append(len(names))
                names += b"\0"
            else:
                tab = tables[ent_t[k]]
                i = ent_i[k]
                self._va.append(tab.vaddr[i])
                self._sz.append(tab.size[i])
                self._tb.append(ent_t[k])
                self._no.append(len(names))
                names += tab.name_bytes(i)
                names += b"\0"
            self.source_counts[SOURCES[self._tb[-1]]] += 1
        self._names = bytes(names)
        for i, v in enumerate(self._va):
            if not self._starts or self._starts[-1] != v:
                self._starts.append(v)
                self._best.append(i)

    def _name(self, i: int) -> str:
        if self._tb[i] == EH_FRAME:
            return f"func_0x{self._va[i]:x}"
        off = self._no[i]
        return self._names[off:self._names.index(b"\0", off)].decode("utf-8", "surrogateescape")

    def _sym(self, i: int) -> Sym:
        v = self._va[i]
        return Sym(self._name(i), v, self._sz[i], self._raw.vaddr_to_offset(v),
                   SOURCES[self._tb[i]])

    def functions(self) -> list[Sym]:
        """All function symbols, aliases included, sorted by vaddr."""
        return [self._sym(i) for i in range(len(self._va))]

    def lookup(self, name: str) -> Sym | None:
        """The symbol of that name: from the most preferred table, then the
        lowest address (a local name can exist in several files)."""
        if name.startswith("func_0x"):
            try:
                v = int(name[7:], 16)
            except ValueError:
                return None
            i = bisect_left(self._va, v)
            while i < len(self._va) and self._va[i] == v:
                if self._tb[i] == EH_FRAME:
                    return self._sym(i)
                i += 1
            # a debug file named that FDE since: the same function, by its name
            j = bisect_left(self._starts, v)
            if j < len(self._starts) and self._starts[j] == v:
                return self._sym(self._best[j])
        needle = b"\0" + name.encode("utf-8", "surrogateescape") + b"\0"
        best = None
        p = self._names.find(needle)
        while p >= 0:
            i = bisect_left(self._no, p + 1)  # _no increases with i
            if i < len(self._no) and self._no[i] == p + 1:
                cand = (self._tb[i], i)
                best = cand if best is None or cand < best else best
            p = self._names.find(needle, p + 1)
        return self._sym(best[1]) if best is not None else None

    def glob(self, pattern: str) -> list[Sym]:
        match = re.compile(fnmatch.translate(pattern)).match
        return [self._sym(i) for i in range(len(self._va)) if match(self._name(i))]

    def addr_to_sym(self, vaddr: int) -> tuple[Sym, int] | None:
        i = bisect_right(self._starts, vaddr) - 1
        for j in range(i, max(i - 4, -1), -1):
            k = self._best[j]
            size = self._sz[k]
            if vaddr < self._va[k] + size or (size == 0 and j == i):
                sym = self._hot.get(k)
                if sym is None:
                    if len(self._hot) >= HOT_SYMS:
                        self._hot.clear()
                    sym = self._hot[k] = self._sym(k)
                return sym, vaddr - self._va[k]
        return None

    # -- addresses -----------------------------------------------------------

    def vaddr_to_file_offset(self, vaddr: int) -> int | None:
        return self._raw.vaddr_to_offset(vaddr)

    def file_offset_to_vaddr(self, off: int) -> int | None:
        return self._raw.offset_to_vaddr(off)

    def eh_frame(self) -> EhFrame | None:
        """The .eh_frame FDE index (None without one), read once."""
        if self._eh is False:
            eh = None
            try:
                found = locate_eh_frame(self._raw)
                if found is not None:
                    eh = EhFrame(*found)
            except (ValueError, IndexError, OSError):
                self.counters["eh_frame_errors"] += 1
            self._eh = eh
        return self._eh or None

    def debug_frame(self) -> EhFrame | None:
        """The .debug_frame FDE index (None without one), parsed on first use."""
        if isinstance(self._debug_frame, bytes):
            data, self._debug_frame = self._debug_frame, None
            try:
                self._debug_frame = EhFrame(data, 0, debug_frame=True)
            except Exception:  # malformed CFI inside pyelftools: counted, no unwinding by it
                self.counters["eh_frame_errors"] += 1
        return self._debug_frame or None

    def cfi(self, vaddr: int) -> tuple[EhFrame, Fde] | None:
        """The CFI index and FDE covering vaddr: .eh_frame first, then .debug_frame."""
        for index in (self.eh_frame(), self.debug_frame()):
            if index is not None:
                fde = index.find(vaddr)
                if fde is not None:
                    return index, fde
        return None

    def __repr__(self) -> str:
        return f"ElfSymbols({self.path!r}, build_id={self.build_id})"


def _covering(starts: array, sizes: array, vaddr: int) -> int | None:
    """Index of the start whose [start, start+size) holds vaddr; a size-0
    symbol (hand-written asm) covers up to the next start. Looks back a few
    entries for a large symbol enclosing small ones."""
    i = bisect_right(starts, vaddr) - 1
    for j in range(i, max(i - 4, -1), -1):
        if vaddr < starts[j] + sizes[j] or (sizes[j] == 0 and j == i):
            return j
    return None


def _seen(tables: list, by_vaddr: list, vaddr: int, name: bytes, cur_t: int,
          cur_i: int) -> bool:
    """Whether (name, vaddr) came before: in an earlier table, or earlier in
    this one (.dynsym repeats a name at one address for two symbol versions)."""
    for t, (vas, idx) in enumerate(by_vaddr):
        lo = bisect_left(vas, vaddr)
        while lo < len(vas) and vas[lo] == vaddr:
            j = idx[lo]
            if (t < cur_t or j < cur_i) and tables[t].name_bytes(j) == name:
                return True
            lo += 1
    return False


class _FileReader:
    """pread over an fd that refuses reads once the file is closed (the fd
    number could be reused by another file)."""

    def __init__(self, fd: int):
        self.fd: int | None = fd
        self.size = os.fstat(fd).st_size

    def __call__(self, off: int, size: int) -> bytes:
        if self.fd is None:
            raise OSError("ELF file already closed")
        size = min(size, self.size - off)  # a corrupt header's size must not allocate it
        return os.pread(self.fd, size, off) if size > 0 and off >= 0 else b""


def resolve_targets(binary: str, spec: str) -> list[Sym]:
    """Functions of binary matching spec: "NAME", "0xADDR" (a vaddr in the
    ELF) or a glob ("pat*"). Raises TargetError with a one-line message.
    Each symbol found is counted by where its name came from."""
    elf, syms = _resolve(binary, spec)
    for s in syms:
        elf.count(s)
    return syms


def _resolve(binary: str, spec: str) -> tuple[ElfSymbols, list[Sym]]:
    try:
        elf = ElfSymbols.open(binary)
    except FileNotFoundError:
        raise TargetError(f"{binary}: no such file") from None
    except OSError as e:
        raise TargetError(f"{binary}: cannot read: {e.strerror or e}") from None
    except ElfFormatError as e:
        raise TargetError(f"{binary}: {e}") from None
    spec = spec.strip()
    if not spec:
        raise TargetError(f"{binary}: empty function name")
    if spec.lower().startswith("0x"):
        try:
            vaddr = int(spec, 16)
        except ValueError:
            raise TargetError(f"{binary}: bad address {spec!r} (want 0x<hex vaddr>)") from None
        off = elf.vaddr_to_file_offset(vaddr)
        if off is None:
            raise TargetError(f"{binary}: address {spec} is not in a loadable segment")
        hit = elf.addr_to_sym(vaddr)
        if hit is None:
            return elf, [Sym(f"func_0x{vaddr:x}", vaddr, 0, off, "eh_frame")]
        sym, delta = hit
        if delta == 0:
            return elf, [sym]
        return elf, [Sym(f"{sym.name}+0x{delta:x}", vaddr, max(sym.size - delta, 0), off,
                         sym.source)]
    if any(c in spec for c in "*?["):
        found = [s for s in elf.glob(spec) if s.file_offset is not None]
        if not found:
            raise TargetError(f"{binary}: no function matches {spec!r} "
                              f"({_describe(elf)})")
        return elf, found
    sym = elf.lookup(spec)
    if sym is None or sym.file_offset is None:
        raise TargetError(f"{binary}: no function named {spec!r} ({_describe(elf)}; "
                          f"try a glob such as '{spec[:3]}*' or a 0x<vaddr>)")
    return elf, [sym]


def _describe(elf: ElfSymbols) -> str:
    counts = {src: n for src, n in elf.source_counts.items() if n}
    have = ("it has " + ", ".join(f"{n} from {src}" for src, n in sorted(counts.items()))
            if counts else "it has no function symbols and no .eh_frame")
    if not counts.get("symtab") and elf.debug_file() is None:
        have += "; " + debugfile.describe(elf.path, elf.build_id, elf.debuglink)
    return have
