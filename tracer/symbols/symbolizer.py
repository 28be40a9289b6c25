"""Addresses of a live process -> (module, symbol, offset, build-id).

One Symbolizer per tracer run: it keeps each pid's /proc/<pid>/maps and
reads it again when an address falls outside every known mapping (a
library loaded since). Modules come from the process-wide ElfSymbols cache
(per build-id), so a library shared by many processes is parsed once.
Every frame's symbol is counted once for debugfile.symbol_sources (where
its name came from: the binary, a debug file, debuginfod, or none).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from . import debugfile
from .procmaps import ProcMaps

MAX_PIDS = 4096  # maps kept (least recently used dropped first)


class Frame(NamedTuple):
    addr: int
    module: str | None  # path as in /proc/<pid>/maps, "[vdso]", or None (unknown/anonymous)
    symbol: str | None
    offset: int  # addr - symbol start; without a symbol: the ELF vaddr of addr
    #              (file-backed) or the offset into the mapping ([vdso], anonymous)
    build_id: str | None


class Symbolizer:
    def __init__(self, max_pids: int = MAX_PIDS):
        self._maps: OrderedDict[int, ProcMaps] = OrderedDict()
        self._max_pids = max_pids
        self.counters = {"maps_reads": 0, "maps_errors": 0, "frames": 0,
                         "frames_unknown": 0, "frames_no_symbol": 0}

    def maps(self, pid: int) -> ProcMaps:
        """The cached maps of pid (read on first use; empty if unreadable)."""
        m = self._maps.get(pid)
        if m is None:
            m = self._read(pid)
        else:
            self._maps.move_to_end(pid)
        return m

    def refresh(self, pid: int) -> ProcMaps:
        """Re-read pid's maps in place (the object given to unwind() too)."""
        m = self._maps.get(pid)
        if m is None:
            return self._read(pid)
        self.counters["maps_reads"] += 1
        if not m.refresh():
            self.counters["maps_errors"] += 1
        return m

    def forget(self, pid: int) -> None:
        """Drop pid's maps (the process exited)."""
        self._maps.pop(pid, None)

    def _read(self, pid: int) -> ProcMaps:
        self.counters["maps_reads"] += 1
        try:
            m = ProcMaps.read(pid)
        except OSError:
            self.counters["maps_errors"] += 1
            m = ProcMaps(pid, [])
        self._maps[pid] = m
        self._maps.move_to_end(pid)
        while len(self._maps) > self._max_pids:
            self._maps.popitem(last=False)
        return m

    def frames(self, pid: int, addrs: list[int]) -> list[Frame]:
        """addrs innermost first: addrs[0] is the pc itself, the rest are
        return addresses, looked up at addr - 1 (the call instruction): a
        call to a noreturn function can be the last instruction of its
        caller, so its return address is past the caller's end. Offsets are
        still reported from addr."""
        maps = self.maps(pid)
        refreshed = False
        out = []
        for i, addr in enumerate(addrs):
            look = addr - 1 if i and addr else addr
            m = maps.find(look)
            if m is None and not refreshed:
                maps, refreshed = self.refresh(pid), True
                m = maps.find(look)
            out.append(self._frame(maps, m, addr, look))
        self.counters["frames"] += len(out)
        return out

    def _frame(self, maps: ProcMaps, m, addr: int, look: int) -> Frame:
        if m is None or not m.path:
            self.counters["frames_unknown"] += 1
            debugfile.count_symbol(("", look), "none")
            return Frame(addr, None, None, 0, None)
        mod = maps.module(look) if m.file_backed else None
        if mod is None:  # [vdso], [heap], an unreadable file
            self.counters["frames_no_symbol"] += 1
            debugfile.count_symbol((m.path, look - m.start), "none")
            return Frame(addr, m.path, None, addr - m.start, None)
        hit = mod.elf.addr_to_sym(mod.vaddr)
        if hit is None:
            self.counters["frames_no_symbol"] += 1
            debugfile.count_symbol((mod.elf.identity, mod.vaddr), "none")
            return Frame(addr, m.path, None, mod.vaddr + addr - look, mod.elf.build_id)
        sym, off = hit
        mod.elf.count(sym)
        return Frame(addr, m.path, sym.name, off + addr - look, mod.elf.build_id)
