"""Function parameters from DWARF .debug_info, with pyelftools.

Types are followed through typedef/const/volatile/restrict/atomic to a base
type or pointer: char * (any qualifiers) is "str", other pointers "ptr",
signed integers/enums "int", unsigned/bool "uint", floating point "float".
A struct or union passed by value has no register kind of its own: it is
reported as "uint" with its byte size (the tracer shows the raw register).
A binary without .debug_info is read through its separate debug file
(tracer/symbols/debugfile.py).
"""

from __future__ import annotations

import os
import threading
from typing import NamedTuple

from elftools.dwarf.die import DIE
from elftools.elf.elffile import ELFFile

_QUALIFIERS = ("DW_TAG_typedef", "DW_TAG_const_type", "DW_TAG_volatile_type",
               "DW_TAG_restrict_type", "DW_TAG_atomic_type", "DW_TAG_immutable_type")
# DW_ATE_* base type encodings -> kind
_ENCODING = {
    0x02: "uint",  # boolean
    0x04: "float",  # float
    0x05: "int",  # signed
    0x06: "int",  # signed_char
    0x07: "uint",  # unsigned
    0x08: "uint",  # unsigned_char
    0x10: "uint",  # UTF
}
_cache: dict[tuple, list | None] = {}
MAX_DIES = 1_000_000  # per lookup: bounds a huge or corrupt .debug_info (~9 us per DIE)
counters = {"dwarf_errors": 0}  # binaries whose DWARF pyelftools could not read
_lock = threading.Lock()


class Param(NamedTuple):
    name: str
    kind: str  # "int" | "uint" | "ptr" | "str" | "float"
    size: int


def dwarf_params(binary: str, func: str) -> list[Param] | None:
    """Parameters of func in binary's DWARF, in order; None when the binary
    has no DWARF, or none for func. Unnamed parameters are arg<i>."""
    try:
        st = os.stat(binary)
    except OSError:
        return None
    # per file, not per build-id: strip keeps the build-id and drops the DWARF
    key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, func)
    with _lock:
        if key in _cache:
            return _cache[key]
    try:
        params = _find(binary, func)
    except OSError:
        params = None
    except Exception:  # malformed DWARF raises anything from pyelftools: as if none, counted
        with _lock:
            counters["dwarf_errors"] += 1
        params = None
    with _lock:
        _cache[key] = params
    return params


def _find(binary: str, func: str) -> list[Param] | None:
    """From the binary's own DWARF, else from its separate debug file's."""
    found = _find_in(binary, func)
    if found is not _NO_DWARF:
        return found
    debug = _debug_file(binary)
    found = _find_in(debug, func) if debug is not None else None
    return None if found is _NO_DWARF else found


_NO_DWARF = object()


def _find_in(path: str, func: str):
    """Parameters of func in path's .debug_info, None without them there,
    _NO_DWARF when path has no .debug_info."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        if not elf.has_dwarf_info() or elf.get_section_by_name(".debug_info") is None:
            return _NO_DWARF
        dwarf = elf.get_dwarf_info()
        budget = [MAX_DIES]
        want = func.encode()
        for cu in dwarf.iter_CUs():
            params = _scan_cu(cu, want, budget)
            if params is not None:
                return params
    return None


def _debug_file(binary: str) -> str | None:
    """The debug file tracer/symbols/debugfile.py finds for binary (cached
    per build-id with the binary's symbols)."""
    from .elf import ElfSymbols

    try:
        df = ElfSymbols.open(binary).debug_file()
    except (OSError, ValueError):
        return None
    return df.path if df is not None else None


def _scan_cu(cu, want: bytes, budget: list[int]) -> list[Param] | None:
    """Walk the CU's DIEs in offset order (not pyelftools' iter_children, which
    follows DW_AT_sibling and loops forever on a corrupt backward one): the
    offset only grows, so the walk ends. C subprograms sit at depth 1, their
    parameters at depth 2."""
    top = cu.get_top_DIE()
    end = cu.cu_offset + cu["unit_length"] + cu.structs.initial_length_field_size()
    off, depth = top.offset + top.size, 1 if top.has_children else 0
    params: list[Param] | None = None  # collecting: the parameters of the match
    while depth > 0 and off < end:
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError(f"more than {MAX_DIES} DIEs")
        die = DIE(cu=cu, stream=top.stream, offset=off)
        if die.size <= 0:
            raise ValueError(f"DIE of size {die.size} at {off:#x}")
        off += die.size
        if die.is_null():
            depth -= 1
            if params is not None and depth < 2:
                return params  # the end of the matching subprogram's children
            continue
        if params is not None and depth == 2 and die.tag == "DW_TAG_formal_parameter":
            name = die.attributes.get("DW_AT_name")
            pname = name.value.decode("utf-8", "replace") if name else f"arg{len(params)}"
            params.append(Param(pname, *_kind(die)))
        elif (params is None and depth == 1 and die.tag == "DW_TAG_subprogram"
              and _name(die) == want and "DW_AT_declaration" not in die.attributes):
            if not die.has_children:
                return []
            params = []
        if die.has_children:
            depth += 1
    return params


def _name(die: DIE) -> bytes | None:
    a = die.attributes.get("DW_AT_name")
    return a.value if a is not None else None


def _kind(die: DIE) -> tuple[str, int]:
    t = _type(die)
    for _ in range(32):  # typedef chains are short; a cycle would be malformed
        if t is None:
            return "int", 8  # no type (void-ish or missing): a raw register
        if t.tag not in _QUALIFIERS:
            break
        t = _type(t)
    if t.tag == "DW_TAG_pointer_type" or t.tag in ("DW_TAG_reference_type",
                                                  "DW_TAG_rvalue_reference_type"):
        size = _size(t, 8)
        target = _type(t)
        for _ in range(32):
            if target is None or target.tag not in _QUALIFIERS:
                break
            target = _type(target)
        if (target is not None and target.tag == "DW_TAG_base_type"
                and _size(target, 0) == 1
                and target.attributes.get("DW_AT_encoding") is not None
                and target.attributes["DW_AT_encoding"].value in (0x06, 0x08)):
            return "str", size
        return "ptr", size
    if t.tag == "DW_TAG_base_type":
        enc = t.attributes.get("DW_AT_encoding")
        return _ENCODING.get(enc.value if enc else 0x05, "int"), _size(t, 8)
    if t.tag == "DW_TAG_enumeration_type":
        return "int", _size(t, 4)
    return "uint", _size(t, 8)


def _type(die: DIE) -> DIE | None:
    if "DW_AT_type" not in die.attributes:
        return None
    return die.get_DIE_from_attribute("DW_AT_type")


def _size(die: DIE, default: int) -> int:
    a = die.attributes.get("DW_AT_byte_size")
    return a.value if a is not None else default
