"""Symbols, arguments and call stacks for user-space code (issue 10).

Pure Python over pyelftools and raw ELF reads, no root needed:

- ElfSymbols: function symbols of one ELF file from .symtab, .dynsym, the
  MiniDebugInfo .gnu_debugdata section and, where no symbol covers code,
  .eh_frame FDE boundaries (``func_0x<vaddr>``); vaddr <-> file offset.
- resolve_targets / dwarf_params: what a uprobe tracer attaches to and how it
  reads the arguments.
- ProcMaps / Symbolizer: addresses of a live process -> module + symbol.
- unwind: DWARF CFI unwinder over a copy of the user stack (x86-64).
"""

from .dwarfargs import Param, dwarf_params
from .elf import ElfSymbols, Sym, TargetError, resolve_targets
from .procmaps import Mapping, ProcMaps
from .symbolizer import Frame, Symbolizer
from .unwinder import UnwindResult, unwind, unwind_ex

__all__ = [
    "ElfSymbols", "Frame", "Mapping", "Param", "ProcMaps", "Sym", "Symbolizer", "TargetError",
    "UnwindResult", "dwarf_params", "resolve_targets", "unwind", "unwind_ex",
]
