"""Function symbols of one ELF file."""

from __future__ import annotations

from typing import NamedTuple


class TargetError(ValueError):
    """A target spec that matches nothing (one-line message)."""


class Sym(NamedTuple):
    name: str
    vaddr: int
    size: int
    file_offset: int | None
    source: str  # "symtab" | "dynsym" | "debugdata" | "eh_frame"


class ElfSymbols:
    build_id: str | None = None

    @classmethod
    def open(cls, path: str) -> ElfSymbols:
        raise NotImplementedError

    def functions(self) -> list[Sym]:
        raise NotImplementedError

    def lookup(self, name: str) -> Sym | None:
        raise NotImplementedError

    def glob(self, pattern: str) -> list[Sym]:
        raise NotImplementedError

    def addr_to_sym(self, vaddr: int) -> tuple[Sym, int] | None:
        raise NotImplementedError

    def vaddr_to_file_offset(self, vaddr: int) -> int | None:
        raise NotImplementedError

    def file_offset_to_vaddr(self, off: int) -> int | None:
        raise NotImplementedError


def resolve_targets(binary: str, spec: str) -> list[Sym]:
    raise NotImplementedError
