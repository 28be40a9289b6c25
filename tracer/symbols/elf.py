"""Function symbols of one ELF file, cached per build-id.

Names come from, in order of preference: .symtab, the MiniDebugInfo
.gnu_debugdata section (an xz-compressed ELF whose .symtab has the local
function names a distribution strip keeps: same vaddrs as the outer file),
.dynsym. Code that no symbol covers but an .eh_frame FDE describes gets
``func_0x<vaddr>`` (the FDE's start), so stripped binaries still have
function boundaries to attach to and to symbolise with.
"""

from __future__ import annotations

import fnmatch
import os
import threading
from bisect import bisect_right
from typing import NamedTuple

from . import minidebug
from .ehframe import EhFrame, Fde, locate_eh_frame
from .rawelf import SHT_DYNSYM, SHT_SYMTAB, STB_GLOBAL, STB_WEAK, ElfFormatError, RawElf, RawSym

CACHE_MAX = 512  # modules: a host has a few hundred distinct libraries at most
MAX_DEBUG_FRAME = 16 << 20  # .debug_frame kept for unwinding (CFI only: small)
_BIND_RANK = {STB_GLOBAL: 0, STB_WEAK: 1}
_SOURCE_RANK = {"symtab": 0, "debugdata": 1, "dynsym": 2, "eh_frame": 3}


class TargetError(ValueError):
    """A target spec that matches nothing (one-line message)."""


class Sym(NamedTuple):
    name: str
    vaddr: int
    size: int
    file_offset: int | None
    source: str  # "symtab" | "dynsym" | "debugdata" | "eh_frame"


class ElfSymbols:
    """Symbols of one ELF file. Open with ElfSymbols.open(path) (cached);
    the symbol tables and .eh_frame are read on first use."""

    _cache: dict[object, ElfSymbols] = {}
    _lock = threading.Lock()

    def __init__(self, path: str, raw: RawElf, build_id: str | None):
        self.path = path
        self.build_id = build_id
        self._raw = raw
        self._funcs: list[Sym] | None = None
        self._by_name: dict[str, Sym] = {}
        self._starts: list[int] = []
        self._best: list[Sym] = []
        self._eh: EhFrame | None | bool = False  # False: not read yet
        self._debug_frame: EhFrame | None | bool | bytes = False  # bytes: read, not parsed
        self.counters = {"debugdata_errors": 0, "eh_frame_errors": 0}

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
                hit._load_symbols()  # reads the tables and .eh_frame while open
                dbg = raw.section(".debug_frame")
                if dbg is not None and 0 < dbg.size <= MAX_DEBUG_FRAME:
                    hit._debug_frame = raw.section_data(dbg)
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

    # -- symbols -------------------------------------------------------------

    def _load_symbols(self) -> None:
        raw = self._raw
        tables: list[tuple[str, list[RawSym]]] = [("symtab", raw.function_symbols(SHT_SYMTAB))]
        sec = raw.section(".gnu_debugdata")
        if sec is not None:
            try:
                tables.append(("debugdata", minidebug.function_symbols(raw.section_data(sec))))
            except minidebug.MiniDebugError:
                self.counters["debugdata_errors"] += 1
        tables.append(("dynsym", raw.function_symbols(SHT_DYNSYM)))
        # every (name, vaddr) once, from the first table that has it
        seen: set[tuple[str, int]] = set()
        ranked: list[tuple[tuple, Sym]] = []
        for source, syms in tables:
            for s in syms:
                if (s.name, s.vaddr) in seen:
                    continue
                seen.add((s.name, s.vaddr))
                sym = Sym(s.name, s.vaddr, s.size, raw.vaddr_to_offset(s.vaddr), source)
                # one name per start address for addr -> symbol: globals before
                # weak aliases before locals, then the fewest leading underscores
                ranked.append(((s.vaddr, _BIND_RANK.get(s.bind, 2),
                                len(s.name) - len(s.name.lstrip("_")), -s.size, s.name), sym))
        ranked.sort(key=lambda p: p[0])
        funcs = [sym for _, sym in ranked]
        starts, best = [], []
        for s in funcs:
            if not starts or starts[-1] != s.vaddr:
                starts.append(s.vaddr)
                best.append(s)
        # code no symbol covers, but an FDE describes: func_0x<start>
        eh = self.eh_frame()
        if eh is not None:
            plt = [(sec.addr, sec.addr + sec.size) for sec in raw.sections
                   if sec.name.startswith(".plt")]
            extra = []
            for fde in eh.fdes:
                if _covering(starts, best, fde.start) is None:
                    if any(lo <= fde.start < hi for lo, hi in plt):
                        continue  # PLT stubs are not functions
                    extra.append(Sym(f"func_0x{fde.start:x}", fde.start, fde.end - fde.start,
                                     raw.vaddr_to_offset(fde.start), "eh_frame"))
            if extra:
                funcs = sorted(funcs + extra, key=lambda s: s.vaddr)
                pairs = sorted([*zip(starts, best, strict=True), *((s.vaddr, s) for s in extra)],
                               key=lambda p: p[0])
                starts, best = [p[0] for p in pairs], [p[1] for p in pairs]
        self._funcs = funcs
        by_name: dict[str, Sym] = {}
        for s in sorted(funcs, key=lambda s: _SOURCE_RANK[s.source]):
            by_name.setdefault(s.name, s)
        self._by_name = by_name
        self._starts, self._best = starts, best

    def functions(self) -> list[Sym]:
        """All function symbols, aliases included, sorted by vaddr."""
        return list(self._funcs or [])

    def lookup(self, name: str) -> Sym | None:
        return self._by_name.get(name)

    def glob(self, pattern: str) -> list[Sym]:
        return [s for s in self._funcs or [] if fnmatch.fnmatchcase(s.name, pattern)]

    def addr_to_sym(self, vaddr: int) -> tuple[Sym, int] | None:
        s = _covering(self._starts, self._best, vaddr)
        return (s, vaddr - s.vaddr) if s is not None else None

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


def _covering(starts: list[int], best: list[Sym], vaddr: int) -> Sym | None:
    """The symbol whose [vaddr, vaddr+size) holds vaddr; a size-0 symbol
    (hand-written asm) covers up to the next start. Looks back a few entries
    for a large symbol enclosing small ones."""
    i = bisect_right(starts, vaddr) - 1
    for j in range(i, max(i - 4, -1), -1):
        s = best[j]
        if vaddr < s.vaddr + s.size or (s.size == 0 and j == i):
            return s
    return None


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
    ELF) or a glob ("pat*"). Raises TargetError with a one-line message."""
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
            return [Sym(f"func_0x{vaddr:x}", vaddr, 0, off, "eh_frame")]
        sym, delta = hit
        if delta == 0:
            return [sym]
        return [Sym(f"{sym.name}+0x{delta:x}", vaddr, max(sym.size - delta, 0), off, sym.source)]
    if any(c in spec for c in "*?["):
        found = [s for s in elf.glob(spec) if s.file_offset is not None]
        if not found:
            raise TargetError(f"{binary}: no function matches {spec!r} "
                              f"({_describe(elf)})")
        return found
    sym = elf.lookup(spec)
    if sym is None or sym.file_offset is None:
        raise TargetError(f"{binary}: no function named {spec!r} ({_describe(elf)}; "
                          f"try a glob such as '{spec[:3]}*' or a 0x<vaddr>)")
    return [sym]


def _describe(elf: ElfSymbols) -> str:
    by_source: dict[str, int] = {}
    for s in elf.functions():
        by_source[s.source] = by_source.get(s.source, 0) + 1
    if not by_source:
        return "it has no function symbols and no .eh_frame"
    return "it has " + ", ".join(f"{n} from {src}" for src, n in sorted(by_source.items()))
