"""TARGET arguments of `python -m tracer funcs`, and their argument specs.

    BINARY:SYMBOL            /usr/bin/foo:handle_request
    BINARY:0xADDR            a virtual address in the ELF (as objdump shows it)
    BINARY:glob*             every function symbol matching the glob
    BINARY:SYMBOL(SPEC)      with argument types, e.g. libc.so.6:write(int fd, ptr buf, u64 count)

BINARY is a path, or a file name found like the dynamic linker would
(`ldconfig -p`), in a traced process's /proc/PID/maps (--pid), or on PATH; a
glob is allowed in a name (libpython3.11*.so*). SPEC: up to 6 comma-separated
`TYPE [NAME]`, TYPE one of int long i8 i16 i32 i64 u8 u16 u32 u64 size_t ptr
str str[N] (N <= 64 bytes kept, NUL included). `()` captures nothing; without a
SPEC the types come from DWARF when the binary has it, else no arguments.

Parsing is pure Python (unit-tested); resolution reads ELF files (no root).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from .events import FUNCS_MAX_ARGS, FUNCS_STR_LEN, ArgKind


class TargetError(ValueError):
    """str() is one line naming the target and why it cannot be traced."""


@dataclass(frozen=True)
class ArgSpec:
    name: str
    kind: ArgKind
    size: int  # integer width in bytes, or the string bound


@dataclass(frozen=True)
class TargetSpec:
    text: str  # as given
    binary: str
    symbol: str  # name, 0xADDR or glob
    args: tuple[ArgSpec, ...] | None  # None: from DWARF


@dataclass
class Probe:
    """One function to attach to: an entry uprobe and a return uprobe."""

    index: int  # the bpf_cookie, index into probe_specs
    target: str  # "/abs/path:function", the record's `target`
    function: str
    module: str  # absolute path of the ELF file
    vaddr: int
    file_offset: int
    args: tuple[ArgSpec, ...] = field(default_factory=tuple)
    args_from: str = "none"  # "spec" | "dwarf" | "none"


_INT_TYPES = {
    "int": (ArgKind.FUNCS_ARG_INT, 4), "long": (ArgKind.FUNCS_ARG_INT, 8),
    "i8": (ArgKind.FUNCS_ARG_INT, 1), "i16": (ArgKind.FUNCS_ARG_INT, 2),
    "i32": (ArgKind.FUNCS_ARG_INT, 4), "i64": (ArgKind.FUNCS_ARG_INT, 8),
    "u8": (ArgKind.FUNCS_ARG_UINT, 1), "u16": (ArgKind.FUNCS_ARG_UINT, 2),
    "u32": (ArgKind.FUNCS_ARG_UINT, 4), "u64": (ArgKind.FUNCS_ARG_UINT, 8),
    "size_t": (ArgKind.FUNCS_ARG_UINT, 8), "ptr": (ArgKind.FUNCS_ARG_PTR, 8),
}
_TYPE_NAMES = "int, long, i8..i64, u8..u64, size_t, ptr, str, str[N]"
_ARG_RE = re.compile(r"^(?P<type>[a-z_0-9]+)(?:\[(?P<n>\d+)\])?(?:\s+(?P<name>[A-Za-z_]\w*))?$")


def parse_type(text: str, index: int, target: str) -> ArgSpec:
    m = _ARG_RE.match(text.strip())
    if not m:
        raise TargetError(f"{target}: cannot parse argument '{text.strip()}': write 'TYPE NAME' "
                          f"with TYPE one of {_TYPE_NAMES}")
    t, n, name = m.group("type"), m.group("n"), m.group("name") or f"arg{index}"
    if t == "str":
        bound = int(n) if n else FUNCS_STR_LEN
        if not 2 <= bound <= FUNCS_STR_LEN:
            raise TargetError(f"{target}: str[{n}]: the bound must be within 2..{FUNCS_STR_LEN}")
        return ArgSpec(name, ArgKind.FUNCS_ARG_STR, bound)
    if n is not None or t not in _INT_TYPES:
        raise TargetError(f"{target}: unknown type '{t}{'[' + n + ']' if n else ''}': "
                          f"use one of {_TYPE_NAMES}")
    kind, size = _INT_TYPES[t]
    return ArgSpec(name, kind, size)


def parse_target(text: str) -> TargetSpec:
    """'BINARY:SYMBOL[(SPEC)]' -> TargetSpec; TargetError when malformed."""
    head, args = text, None
    if "(" in text:
        head, _, rest = text.partition("(")
        if not rest.endswith(")"):
            raise TargetError(f"{text}: the argument spec must end with ')'")
        inner = rest[:-1].strip()
        parts = [p for p in (x.strip() for x in inner.split(",")) if p] if inner else []
        if inner and len(parts) != len(inner.split(",")):
            raise TargetError(f"{text}: empty argument in the spec")
        if len(parts) > FUNCS_MAX_ARGS:
            raise TargetError(f"{text}: {len(parts)} arguments, at most {FUNCS_MAX_ARGS} "
                              "(the x86-64 integer argument registers)")
        if parts == ["void"]:
            parts = []
        args = tuple(parse_type(p, i, text) for i, p in enumerate(parts))
        names = [a.name for a in args]
        if len(set(names)) != len(names):
            raise TargetError(f"{text}: argument names must differ")
    binary, sep, symbol = head.rpartition(":")
    if not sep or not binary or not symbol:
        raise TargetError(f"{text}: expected BINARY:SYMBOL, BINARY:0xADDR or BINARY:GLOB")
    return TargetSpec(text, binary, symbol.strip(), args)


# ---- binaries ------------------------------------------------------------------------

def _ldconfig() -> list[tuple[str, str]]:
    """(soname, path) pairs of the linker cache, 64-bit x86 entries first."""
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    pairs = []
    for line in out.splitlines()[1:]:
        m = re.match(r"\s*(\S+) \(([^)]*)\) => (\S+)", line)
        if m and ("x86-64" in m.group(2) or "64bit" in m.group(2)):
            pairs.append((m.group(1), m.group(3)))
    return pairs


def _maps_paths(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/maps") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    paths = []
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/") and parts[5] not in paths:
            paths.append(parts[5])
    return paths


def resolve_binary(binary: str, pids: list[int] = (), target: str = "") -> str:
    """A path, or a name resolved through /proc/PID/maps, ldconfig, then PATH."""
    target = target or binary
    if "/" in binary:
        if not os.path.isfile(binary):
            raise TargetError(f"{target}: {binary}: no such file")
        return os.path.realpath(binary)

    def match(path: str) -> bool:
        return fnmatch.fnmatchcase(os.path.basename(path), binary)

    for pid in pids:
        for path in _maps_paths(pid):
            if match(path):
                root = f"/proc/{pid}/root{path}"
                return path if os.path.isfile(path) else root
    for soname, path in _ldconfig():
        if fnmatch.fnmatchcase(soname, binary) and os.path.isfile(path):
            return os.path.realpath(path)
    if not any(c in binary for c in "*?["):
        exe = shutil.which(binary)
        if exe:
            return os.path.realpath(exe)
    where = f"/proc/{'/maps, /proc/'.join(map(str, pids))}/maps, " if pids else ""
    raise TargetError(f"{target}: library or program '{binary}' not found in "
                      f"{where}the ldconfig cache or PATH: give its path")


# ---- probes ----------------------------------------------------------------------------

_DWARF_KINDS = {"int": ArgKind.FUNCS_ARG_INT, "uint": ArgKind.FUNCS_ARG_UINT,
                "ptr": ArgKind.FUNCS_ARG_PTR, "str": ArgKind.FUNCS_ARG_STR}


def dwarf_args(path: str, function: str) -> tuple[ArgSpec, ...] | None:
    """Integer-class parameters from DWARF, in register order. Floating-point
    parameters travel in xmm registers and are left out (they do not shift
    the integer registers); parameters past the sixth register are not read."""
    from tracer.symbols import dwarf_params

    try:
        params = dwarf_params(path, function)
    except Exception:  # noqa: BLE001 - broken DWARF: trace without arguments
        return None
    if params is None:
        return None
    out = []
    for p in params:
        kind = _DWARF_KINDS.get(p.kind)
        if kind is None:
            continue
        size = FUNCS_STR_LEN if kind == ArgKind.FUNCS_ARG_STR else max(1, min(p.size, 8))
        out.append(ArgSpec(p.name or f"arg{len(out)}", kind, size))
        if len(out) == FUNCS_MAX_ARGS:
            break
    return tuple(out)


def resolve(specs: list[TargetSpec], pids: list[int] = (), max_probes: int = 1024) -> list[Probe]:
    """TargetSpecs -> Probes (one per distinct function); TargetError names the target."""
    from tracer.symbols import TargetError as SymTargetError
    from tracer.symbols import resolve_targets

    probes: list[Probe] = []
    seen: set[tuple[str, int]] = set()
    for spec in specs:
        path = resolve_binary(spec.binary, pids, spec.text)
        try:
            syms = resolve_targets(path, spec.symbol)
        except SymTargetError as e:
            raise TargetError(f"{spec.text}: {e}") from None
        except OSError as e:
            raise TargetError(f"{spec.text}: cannot read {path}: {e.strerror or e}") from None
        except ValueError as e:  # not an ELF file, and the like
            raise TargetError(f"{spec.text}: {path}: {e}") from None
        if not syms:
            raise TargetError(f"{spec.text}: no function matches '{spec.symbol}' in {path}")
        module = path
        for sym in syms:
            if sym.file_offset is None:
                raise TargetError(f"{spec.text}: {sym.name} at {sym.vaddr:#x} is not in a "
                                  f"loadable segment of {path}")
            if (path, sym.file_offset) in seen:
                continue
            seen.add((path, sym.file_offset))
            if spec.args is not None:
                args, src = spec.args, "spec"
            else:
                args = dwarf_args(path, sym.name)
                src = "dwarf" if args is not None else "none"
                args = args or ()
            probes.append(Probe(len(probes), f"{module}:{sym.name}", sym.name, module,
                                sym.vaddr, sym.file_offset, args, src))
            if len(probes) > max_probes:
                raise TargetError(f"{spec.text}: more than {max_probes} functions match: "
                                  "narrow the glob")
    return probes
