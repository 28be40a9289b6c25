"""MiniDebugInfo: the .gnu_debugdata section (Fedora, RHEL, and others).

An xz-compressed ELF image holding a .symtab with the function symbols that
.dynsym lacks (static and hidden functions), which a distribution build keeps
when it strips the binary. Its symbol values are vaddrs of the outer file.
"""

from __future__ import annotations

import lzma

from .rawelf import SHT_SYMTAB, ElfFormatError, RawElf, SymTable, bytes_reader

MAX_DECOMPRESSED = 256 << 20  # an xz bomb would stop here


class MiniDebugError(ValueError):
    pass


def decompress(section: bytes) -> bytes:
    try:
        d = lzma.LZMADecompressor()
        data = d.decompress(section, max_length=MAX_DECOMPRESSED)
    except lzma.LZMAError as e:
        raise MiniDebugError(f".gnu_debugdata: {e}") from None
    if not d.eof:
        raise MiniDebugError(".gnu_debugdata: truncated or larger than 256 MiB")
    return data


def function_table(section: bytes) -> SymTable | None:
    """Function symbols of the embedded ELF's .symtab."""
    data = decompress(section)
    try:
        return RawElf(bytes_reader(data)).function_table(SHT_SYMTAB)
    except (ElfFormatError, IndexError, ValueError) as e:
        raise MiniDebugError(f".gnu_debugdata: {e}") from None
