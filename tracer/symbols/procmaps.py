"""/proc/<pid>/maps: which module holds an address, and at which ELF vaddr.

A file-backed mapping [start, end) maps the file from `offset`, so an
address A in it is file offset A - start + offset, which the module's
PT_LOAD segments turn into a vaddr. That covers PIE executables and shared
libraries (the load bias) without computing the bias separately.

Modules are opened through /proc/<pid>/root/<path> (the process's own mount
namespace: containers), then through <path>; a deleted file (an upgraded
library still mapped) through /proc/<pid>/map_files/<start>-<end>.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from typing import NamedTuple

from .elf import ElfSymbols

REFRESH_INTERVAL_S = 1.0


class Mapping(NamedTuple):
    start: int
    end: int
    perms: str
    offset: int
    inode: int
    path: str  # "" for anonymous memory; "[vdso]", "[stack]", ... for special ones

    @property
    def executable(self) -> bool:
        return "x" in self.perms

    @property
    def file_backed(self) -> bool:
        return self.path.startswith("/") and self.inode != 0


class Module(NamedTuple):
    mapping: Mapping
    elf: ElfSymbols
    vaddr: int  # of the address asked for, in the ELF's own address space


class ProcMaps:
    """The mappings of one process at one time (refresh by reading again)."""

    def __init__(self, pid: int, mappings: list[Mapping]):
        self.pid = pid
        self._set(mappings)
        self._elfs: dict[Mapping, ElfSymbols | None] = {}
        self.open_errors: dict[str, str] = {}  # path -> one-line reason
        self.refreshes = 0
        self._refreshed_at = time.monotonic()

    def _set(self, mappings: list[Mapping]) -> None:
        self.mappings = sorted(mappings)
        self._starts = [m.start for m in self.mappings]

    def refresh(self, min_interval_s: float = 0.0) -> bool:
        """Read /proc/<pid>/maps again, in place (a library loaded since);
        at most once per min_interval_s. False if not re-read (too soon, or
        the process is gone: the old mappings stay)."""
        now = time.monotonic()
        if now - self._refreshed_at < min_interval_s:
            return False
        self._refreshed_at = now
        try:
            with open(f"/proc/{self.pid}/maps", encoding="utf-8", errors="replace") as f:
                fresh = ProcMaps.parse(self.pid, f.read())
        except OSError:
            return False
        self._set(fresh.mappings)
        self.refreshes += 1
        return True

    @classmethod
    def read(cls, pid: int) -> ProcMaps:
        """Raises OSError when the process is gone or not readable."""
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
            return cls.parse(pid, f.read())

    @classmethod
    def parse(cls, pid: int, text: str) -> ProcMaps:
        out = []
        for line in text.splitlines():
            # start-end perms offset dev inode [path]; the path may hold spaces
            parts = line.split(None, 5)
            if len(parts) < 5:
                continue
            try:
                lo, hi = parts[0].split("-")
                out.append(Mapping(int(lo, 16), int(hi, 16), parts[1], int(parts[2], 16),
                                   int(parts[4]), parts[5].strip() if len(parts) > 5 else ""))
            except ValueError:
                continue
        return cls(pid, out)

    def find(self, addr: int) -> Mapping | None:
        i = bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self.mappings[i].end:
            return self.mappings[i]
        return None

    def module(self, addr: int) -> Module | None:
        """The ELF file mapped at addr and addr's vaddr in it; None for
        anonymous memory (JIT code), [vdso], or a file that cannot be read.
        An address outside every mapping re-reads the maps (at most once a
        second: garbage addresses must not turn into a read each)."""
        m = self.find(addr)
        if m is None and self.refresh(REFRESH_INTERVAL_S):
            m = self.find(addr)
        if m is None or not m.file_backed:
            return None
        elf = self.elf(m)
        if elf is None:
            return None
        vaddr = elf.file_offset_to_vaddr(addr - m.start + m.offset)
        return Module(m, elf, vaddr) if vaddr is not None else None

    def elf(self, m: Mapping) -> ElfSymbols | None:
        if m in self._elfs:
            return self._elfs[m]
        elf = None
        for path in self._candidates(m):
            try:
                elf = ElfSymbols.open(path)
                break
            except (OSError, ValueError) as e:
                self.open_errors[m.path] = str(e).splitlines()[0] if str(e) else type(e).__name__
        self._elfs[m] = elf
        return elf

    def _candidates(self, m: Mapping) -> list[str]:
        if m.path.endswith(" (deleted)"):
            return [f"/proc/{self.pid}/map_files/{m.start:x}-{m.end:x}"]
        return [f"/proc/{self.pid}/root{m.path}", m.path]
