"""Function parameters from DWARF (.debug_info)."""

from __future__ import annotations

from typing import NamedTuple


class Param(NamedTuple):
    name: str
    kind: str  # "int" | "uint" | "ptr" | "str" | "float"
    size: int


def dwarf_params(binary: str, func: str) -> list[Param] | None:
    raise NotImplementedError
