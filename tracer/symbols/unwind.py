"""DWARF CFI unwinder over a copy of the user stack (x86-64)."""

from __future__ import annotations

from typing import NamedTuple

from .procmaps import ProcMaps


class UnwindResult(NamedTuple):
    addrs: list[int]
    reason: str
    methods: list[str]


def unwind_ex(pid_maps: ProcMaps, regs: dict[str, int], stack: bytes, stack_addr: int,
              max_frames: int = 64) -> UnwindResult:
    raise NotImplementedError


def unwind(pid_maps: ProcMaps, regs: dict[str, int], stack: bytes, stack_addr: int,
           max_frames: int = 64) -> list[int]:
    return unwind_ex(pid_maps, regs, stack, stack_addr, max_frames).addrs
