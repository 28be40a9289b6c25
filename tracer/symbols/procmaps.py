"""/proc/<pid>/maps: which module holds an address."""

from __future__ import annotations

from typing import NamedTuple


class Mapping(NamedTuple):
    start: int
    end: int
    perms: str
    offset: int
    inode: int
    path: str


class ProcMaps:
    def __init__(self, pid: int, mappings: list[Mapping]):
        self.pid = pid
        self.mappings = mappings

    @classmethod
    def read(cls, pid: int) -> ProcMaps:
        raise NotImplementedError
