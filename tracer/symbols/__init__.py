"""Symbols, arguments and call stacks for user-space code (issue 10).

Pure Python over pyelftools and raw ELF reads, no root needed:

- ElfSymbols: function symbols of one ELF file from .symtab, .dynsym, the
  MiniDebugInfo .gnu_debugdata section and, where no symbol covers code,
  .eh_frame FDE boundaries (``func_0x<vaddr>``); vaddr <-> file offset.
- debugfile / debuginfod: a stripped file's separate debug file (build-id,
  .gnu_debuglink, a debuginfod server), whose .symtab, DWARF and
  .debug_frame the above use; where each name came from (symbol_sources).
- resolve_targets / dwarf_params: what a uprobe tracer attaches to and how it
  reads the arguments.
- ProcMaps / Symbolizer: addresses of a live process -> module + symbol.
- unwind: DWARF CFI unwinder over a copy of the user stack (x86-64).
"""

from __future__ import annotations

import importlib

# name -> submodule, loaded on first use (PEP 562): importing one submodule
# (the Go add-on's rawelf) does not bring pyelftools into every tracer. Code
# that runs after a privilege drop imports what it needs before it.
_WHERE = {
    "Param": "dwarfargs", "dwarf_params": "dwarfargs",
    "ElfSymbols": "elf", "Sym": "elf", "TargetError": "elf", "resolve_targets": "elf",
    "Mapping": "procmaps", "ProcMaps": "procmaps",
    "Frame": "symbolizer", "Symbolizer": "symbolizer",
    "UnwindResult": "unwinder", "unwind": "unwinder", "unwind_ex": "unwinder",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{where}", __name__), name)
