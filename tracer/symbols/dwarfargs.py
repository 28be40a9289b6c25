"""Function parameters from DWARF .debug_info, with pyelftools.

Types are followed through typedef/const/volatile/restrict/atomic to a base
type or pointer: char * (any qualifiers) is "str", other pointers "ptr",
signed integers/enums "int", unsigned/bool "uint", floating point "float".
A struct or union passed by value has no register kind of its own: it is
reported as "uint" with its byte size (the tracer shows the raw register).
"""

from __future__ import annotations

import os
import threading
from typing import NamedTuple

from elftools.common.exceptions import ELFError
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
    except (OSError, ELFError, ValueError, KeyError, IndexError, AssertionError):
        params = None  # unreadable or malformed DWARF: as if there were none
    with _lock:
        _cache[key] = params
    return params


def _find(binary: str, func: str) -> list[Param] | None:
    with open(binary, "rb") as f:
        elf = ELFFile(f)
        if not elf.has_dwarf_info() or elf.get_section_by_name(".debug_info") is None:
            return None
        dwarf = elf.get_dwarf_info()
        want = func.encode()
        for cu in dwarf.iter_CUs():
            # C: subprograms are children of the compile unit
            for die in cu.get_top_DIE().iter_children():
                if die.tag != "DW_TAG_subprogram":
                    continue
                name = die.attributes.get("DW_AT_name")
                if name is None or name.value != want:
                    continue
                if "DW_AT_declaration" in die.attributes:
                    continue  # a prototype: the definition carries the parameters
                return _params(die)
    return None


def _params(die: DIE) -> list[Param]:
    out: list[Param] = []
    for child in die.iter_children():
        if child.tag != "DW_TAG_formal_parameter":
            continue
        name = child.attributes.get("DW_AT_name")
        pname = name.value.decode("utf-8", "replace") if name else f"arg{len(out)}"
        kind, size = _kind(child)
        out.append(Param(pname, kind, size))
    return out


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
