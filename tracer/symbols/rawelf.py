"""Raw ELF64 little-endian reads with struct: headers, segments, sections,
notes and function symbols.

pyelftools builds an object per symbol; libpython has ~10k dynamic symbols
and node 75k, so the tables are read here in one pread each and only the
function entries are kept (the same approach as tracer/tls.py)."""

from __future__ import annotations

import os
import struct
from array import array
from collections.abc import Callable
from typing import NamedTuple

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr
PHDR = struct.Struct("<IIQQQQQQ")  # Elf64_Phdr
SHDR = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr
SYM64 = struct.Struct("<IBBHQQ")  # Elf64_Sym
NHDR = struct.Struct("<III")  # Elf64_Nhdr

PT_LOAD, PT_NOTE, PT_GNU_EH_FRAME = 1, 4, 0x6474E550
PF_X = 1
SHT_SYMTAB, SHT_NOTE, SHT_NOBITS, SHT_DYNSYM = 2, 7, 8, 11
STT_FUNC, STT_GNU_IFUNC = 2, 10
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
NT_GNU_BUILD_ID = 3

Reader = Callable[[int, int], bytes]  # (offset, size) -> bytes


class ElfFormatError(ValueError):
    pass


class Segment(NamedTuple):
    type: int
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


class Section(NamedTuple):
    name: str
    type: int
    addr: int
    offset: int
    size: int
    link: int


class SymTable(NamedTuple):
    """Function symbols of one table: parallel arrays over its strtab."""
    strtab: bytes
    name: array  # st_name offsets
    vaddr: array
    size: array
    bind: bytearray

    def name_bytes(self, i: int) -> bytes:
        off = self.name[i]
        end = self.strtab.find(b"\0", off)
        return self.strtab[off:end if end >= 0 else None]

    def name_at(self, i: int) -> str:
        return self.name_bytes(i).decode("utf-8", "surrogateescape")


class RawSym(NamedTuple):
    name: str
    vaddr: int
    size: int
    bind: int


class RawElf:
    """Headers of one ELF64 LE image, read through `read(offset, size)`."""

    def __init__(self, read: Reader):
        self.read = read
        ehdr = read(0, EHDR.size)
        if len(ehdr) < EHDR.size or ehdr[:4] != b"\x7fELF":
            raise ElfFormatError("not an ELF file")
        if ehdr[4] != 2 or ehdr[5] != 1:
            raise ElfFormatError("not a 64-bit little-endian ELF file")
        (_, self.e_type, self.machine, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize,
         shnum, shstrndx) = EHDR.unpack(ehdr)
        self.segments: list[Segment] = []
        if phnum and phentsize == PHDR.size:
            raw = read(phoff, phnum * PHDR.size)
            for p_type, p_flags, p_offset, p_vaddr, _, p_filesz, p_memsz, _ in \
                    PHDR.iter_unpack(raw[:len(raw) - len(raw) % PHDR.size]):
                self.segments.append(Segment(p_type, p_flags, p_offset, p_vaddr, p_filesz,
                                             p_memsz))
        self.sections: list[Section] = []
        if shnum and shentsize == SHDR.size and shoff:
            raw = read(shoff, shnum * SHDR.size)
            shdrs = list(SHDR.iter_unpack(raw[:len(raw) - len(raw) % SHDR.size]))
            names = b""
            if shstrndx < len(shdrs):
                names = read(shdrs[shstrndx][4], shdrs[shstrndx][5])
            for sh_name, sh_type, _, sh_addr, sh_offset, sh_size, sh_link, _, _, _ in shdrs:
                end = names.find(b"\0", sh_name)
                name = names[sh_name:end if end >= 0 else None].decode("latin-1")
                self.sections.append(Section(name, sh_type, sh_addr, sh_offset, sh_size,
                                             sh_link))
        self.loads = [s for s in self.segments if s.type == PT_LOAD]
        # (vaddr range, offset - vaddr), executable segments first: most lookups are code
        self._by_vaddr = [(s.vaddr, s.vaddr + s.filesz, s.offset - s.vaddr)
                          for s in sorted(self.loads, key=lambda s: not s.flags & PF_X)]

    def section(self, name: str) -> Section | None:
        for s in self.sections:
            if s.name == name and s.type != SHT_NOBITS:
                return s
        return None

    def section_data(self, sec: Section) -> bytes:
        return self.read(sec.offset, sec.size)

    def build_id(self) -> str | None:
        """NT_GNU_BUILD_ID from the PT_NOTE segments (or SHT_NOTE sections when
        there are no program headers, as in a MiniDebugInfo image)."""
        areas = [(s.offset, s.filesz) for s in self.segments if s.type == PT_NOTE]
        if not areas:
            areas = [(s.offset, s.size) for s in self.sections if s.type == SHT_NOTE]
        for off, size in areas:
            data = self.read(off, min(size, 1 << 16))
            pos = 0
            while pos + NHDR.size <= len(data):
                namesz, descsz, ntype = NHDR.unpack_from(data, pos)
                name_at = pos + NHDR.size
                desc_at = name_at + ((namesz + 3) & ~3)
                if ntype == NT_GNU_BUILD_ID and data[name_at:name_at + namesz] == b"GNU\0":
                    return data[desc_at:desc_at + descsz].hex() or None
                pos = desc_at + ((descsz + 3) & ~3)
        return None

    def function_table(self, sh_type: int) -> SymTable | None:
        """Defined function symbols (FUNC and IFUNC) of the first non-empty
        section of sh_type, as arrays over its string table (no object per
        symbol: node has 86k of them)."""
        for sec in self.sections:
            if sec.type != sh_type or sec.link >= len(self.sections):
                continue
            strsec = self.sections[sec.link]
            strtab = self.read(strsec.offset, strsec.size)
            raw = self.read(sec.offset, sec.size)
            raw = raw[:len(raw) - len(raw) % SYM64.size]  # a cut-short file
            tab = SymTable(strtab, array("I"), array("Q"), array("Q"), bytearray())
            n = len(strtab)
            for st_name, st_info, _, st_shndx, st_value, st_size in SYM64.iter_unpack(raw):
                typ = st_info & 0xF
                if ((typ != STT_FUNC and typ != STT_GNU_IFUNC) or not st_shndx or not st_value
                        or st_name >= n or not strtab[st_name]):
                    continue
                tab.name.append(st_name)
                tab.vaddr.append(st_value)
                tab.size.append(st_size)
                tab.bind.append(st_info >> 4)
            if tab.vaddr:
                return tab
        return None

    def function_symbols(self, sh_type: int) -> list[RawSym]:
        """function_table() as a list of RawSym (small tables, tests)."""
        tab = self.function_table(sh_type)
        if tab is None:
            return []
        return [RawSym(tab.name_at(i), tab.vaddr[i], tab.size[i], tab.bind[i])
                for i in range(len(tab.vaddr))]

    def vaddr_to_offset(self, vaddr: int) -> int | None:
        for lo, hi, delta in self._by_vaddr:
            if lo <= vaddr < hi:
                return vaddr + delta
        return None

    def offset_to_vaddr(self, off: int) -> int | None:
        for s in self.loads:
            if s.offset <= off < s.offset + s.filesz:
                return off - s.offset + s.vaddr
        return None


def file_reader(fd: int) -> Reader:
    def read(off: int, size: int) -> bytes:
        return os.pread(fd, size, off) if size > 0 and off >= 0 else b""
    return read


def bytes_reader(data: bytes) -> Reader:
    def read(off: int, size: int) -> bytes:
        return data[off:off + size] if size > 0 and off >= 0 else b""
    return read
