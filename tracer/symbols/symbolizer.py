"""Addresses of a live process -> (module, symbol, offset)."""

from __future__ import annotations

from typing import NamedTuple

from .procmaps import ProcMaps


class Frame(NamedTuple):
    addr: int
    module: str | None
    symbol: str | None
    offset: int
    build_id: str | None


class Symbolizer:
    def frames(self, pid: int, addrs: list[int]) -> list[Frame]:
        raise NotImplementedError

    def maps(self, pid: int) -> ProcMaps:
        raise NotImplementedError
