"""Separate debug files: where a stripped binary's names and DWARF are.

Looked up as gdb does; the first file that checks out wins:

1. by build-id: ``<root>/.build-id/<xx>/<rest>.debug`` in each debug root
   (default ``/usr/lib/debug``; ``funcs --debug-dir``, ``TRACER_DEBUG_DIRS``);
2. by ``.gnu_debuglink`` NAME: ``<dir>/NAME``, ``<dir>/.debug/NAME``, then
   ``<root>/<dir>/NAME`` in each root (``<dir>``: the binary's directory);
3. from a debuginfod server (tracer/symbols/debuginfod.py), when
   ``DEBUGINFOD_URLS`` is set.

A binary opened through ``/proc/PID/root`` (a container's file) has each
root tried inside that root first, then on the host. A candidate is used
only when its build-id is the binary's (when the binary has one) and, found
by debuglink, when its CRC32 is the one the link records; otherwise it is
skipped and counted, never trusted. The result is cached per build-id.

`symbol_sources` counts the distinct symbols the run named (funcs targets
and stack frames) by where the name came from: the binary itself, a debug
file on disk, debuginfod, or none (an address without a name, or a
``func_0x<vaddr>`` FDE boundary).
"""

from __future__ import annotations

import os
import re
import stat
import struct
import threading
import zlib
from typing import NamedTuple

from . import debuginfod
from .debuginfod import DebuginfodClient
from .rawelf import RawElf

DEFAULT_ROOTS = ("/usr/lib/debug",)
ORIGINS = ("binary", "debug_file", "debuginfod", "none")
CACHE_MAX = 1024  # build-ids whose lookup result is kept
MAX_SEEN = 1 << 16  # distinct symbols remembered for symbol_sources
MAX_LINK_NAME = 255
COUNTERS = ("found_build_id", "found_debuglink", "found_debuginfod", "not_found",
            "build_id_mismatch", "crc_mismatch", "corrupt")
_PROC_ROOT = re.compile(r"^(/proc/\d+/root)(/.*)$")
_BUILD_ID = re.compile(r"^[0-9a-f]{4,128}$")
_ENV = object()  # configure(): read the environment


class Debuglink(NamedTuple):
    name: str
    crc: int


class DebugFile(NamedTuple):
    path: str
    origin: str  # "debug_file" | "debuginfod"
    how: str  # "build_id" | "debuglink" | "debuginfod"


class _State:
    def __init__(self):
        self.lock = threading.Lock()
        self.roots: tuple[str, ...] | None = None  # None: TRACER_DEBUG_DIRS or DEFAULT_ROOTS
        self.client = _ENV  # a DebuginfodClient, None (off), or _ENV (from the environment)
        self.found: dict[object, DebugFile | None] = {}
        self.crcs: dict[tuple, int] = {}
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.sources = dict.fromkeys(ORIGINS, 0)
        self.seen: set = set()


_s = _State()


def configure(roots=None, client=_ENV) -> None:
    """Debug roots (None: TRACER_DEBUG_DIRS, colon separated, else
    /usr/lib/debug) and the debuginfod client (default: DEBUGINFOD_URLS;
    None: off). Forgets earlier lookups."""
    with _s.lock:
        _s.roots = tuple(os.path.abspath(r) for r in roots) if roots is not None else None
        _s.client = client
        _s.found.clear()


def reset() -> None:
    """Defaults, empty caches, zero counters (tests)."""
    global _s
    _s = _State()


def clear_cache() -> None:
    with _s.lock:
        _s.found.clear()
        _s.crcs.clear()


def roots() -> tuple[str, ...]:
    if _s.roots is not None:
        return _s.roots
    env = os.environ.get("TRACER_DEBUG_DIRS")
    if env is not None:
        return tuple(os.path.abspath(r) for r in env.split(":") if r)
    return DEFAULT_ROOTS


def client():
    """The debuginfod client in use, or None."""
    if _s.client is _ENV:
        _s.client = DebuginfodClient.from_env()
    return _s.client


def counters() -> dict[str, int]:
    """The lookups' counters and the debuginfod client's (zero when off: the
    keys do not depend on the environment)."""
    with _s.lock:
        out = dict(_s.counters)
    c = client()
    out.update(c.counters if c is not None else dict.fromkeys(debuginfod.COUNTERS, 0))
    return out


# -- the binary's side ----------------------------------------------------------------

def read_debuglink(raw: RawElf) -> Debuglink | None:
    """.gnu_debuglink: a file name, NUL, padding to 4 bytes, its CRC32 (LE).
    None when absent or malformed (a name with a path in it included)."""
    sec = raw.section(".gnu_debuglink")
    if sec is None:
        return None
    data = raw.read(sec.offset, min(sec.size, MAX_LINK_NAME + 8))
    end = data.find(b"\0")
    if end <= 0:
        return None
    crc_at = (end + 4) & ~3
    if len(data) < crc_at + 4:
        return None
    name = os.fsdecode(data[:end])
    if "/" in name or name in (".", ".."):
        return None
    return Debuglink(name, struct.unpack_from("<I", data, crc_at)[0])


def split_proc_root(path: str) -> tuple[str, str]:
    """('/proc/PID/root', '/inner/path') for a file seen through a process's
    root, else ('', path)."""
    m = _PROC_ROOT.match(path)
    return (m.group(1), m.group(2)) if m else ("", path)


def candidates(path: str, build_id: str | None, link: Debuglink | None,
               debug_roots: tuple[str, ...]) -> list[tuple[str, str]]:
    """(file, how) in the order they are tried, before debuginfod."""
    prefix, inner = split_proc_root(path)
    bases = [prefix + r for r in debug_roots] + (list(debug_roots) if prefix else [])
    out: list[tuple[str, str]] = []
    if build_id and _BUILD_ID.match(build_id):
        out += [(f"{b}/.build-id/{build_id[:2]}/{build_id[2:]}.debug", "build_id")
                for b in bases]
    if link is not None:
        here = os.path.dirname(path)
        out += [(os.path.join(here, link.name), "debuglink"),
                (os.path.join(here, ".debug", link.name), "debuglink")]
        inner_dir = os.path.dirname(inner)
        out += [(f"{b}{inner_dir}/{link.name}".replace("//", "/"), "debuglink") for b in bases]
    return list(dict.fromkeys(out))


# -- lookup ---------------------------------------------------------------------------

def locate(path: str, build_id: str | None, link: Debuglink | None) -> DebugFile | None:
    """The debug file of the binary at path (see the module's docstring),
    cached per build-id (per path without one)."""
    key = ("bid", build_id) if build_id else ("path", path)
    with _s.lock:
        if key in _s.found:
            return _s.found[key]
    try:
        binary = os.stat(path)
    except OSError:
        binary = None
    found = None
    for cand, how in candidates(path, build_id, link, roots()):
        found = _check(cand, how, build_id, link, binary)
        if found is not None:
            break
    if found is None and build_id:
        found = _from_debuginfod(build_id)
    with _s.lock:
        _s.counters[f"found_{found.how}" if found else "not_found"] += 1
        if len(_s.found) >= CACHE_MAX:
            _s.found.clear()
        _s.found[key] = found
    return found


def _check(cand: str, how: str, build_id: str | None, link: Debuglink | None,
           binary: os.stat_result | None) -> DebugFile | None:
    try:
        st = os.stat(cand)
    except OSError:
        return None  # not there: the usual case, not counted
    if not stat.S_ISREG(st.st_mode) or (
            binary is not None and (st.st_dev, st.st_ino) == (binary.st_dev, binary.st_ino)):
        return None
    if not _ids_match(cand, build_id):
        return None
    if how == "debuglink" and link is not None and _crc32(cand, st) != link.crc:
        _count("crc_mismatch")
        return None
    return DebugFile(cand, "debug_file", how)


def _ids_match(path: str, build_id: str | None) -> bool:
    """Whether path is an ELF file with build_id (any, when build_id is None);
    a mismatch or a file that is not ELF is counted."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size

            def read(off: int, n: int) -> bytes:
                n = min(n, size - off)
                return os.pread(f.fileno(), n, off) if n > 0 and off >= 0 else b""
            got = RawElf(read).build_id()
    except (OSError, ValueError, IndexError, struct.error):  # ElfFormatError is a ValueError
        _count("corrupt")
        return False
    if build_id and got != build_id:
        _count("build_id_mismatch")
        return False
    return True


def _from_debuginfod(build_id: str) -> DebugFile | None:
    c = client()
    if c is None:
        return None
    path = c.fetch(build_id)
    if path is None:
        return None
    if not _ids_match(path, build_id):
        c.discard(build_id)  # never trusted, and not kept
        return None
    return DebugFile(path, "debuginfod", "debuginfod")


def _crc32(path: str, st: os.stat_result) -> int | None:
    key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    with _s.lock:
        if key in _s.crcs:
            return _s.crcs[key]
    crc = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                crc = zlib.crc32(chunk, crc)
    except OSError:
        return None
    with _s.lock:
        if len(_s.crcs) >= CACHE_MAX:
            _s.crcs.clear()
        _s.crcs[key] = crc
    return crc


def _count(name: str) -> None:
    with _s.lock:
        _s.counters[name] += 1


def describe(path: str, build_id: str | None, link: Debuglink | None) -> str:
    """Where a debug file was looked for, in one clause (for a message)."""
    where = ", ".join(roots()) or "no debug root"
    parts = [f"no debug file: build-id {build_id} not under {where}" if build_id
             else "no debug file: no build-id"]
    if link is not None:
        parts.append(f".gnu_debuglink {link.name!r} not beside it or under the roots "
                     "(or its CRC differs)")
    c = client()
    parts.append("DEBUGINFOD_URLS unset" if c is None else
                 f"{c.describe()} had none" if build_id else "debuginfod needs a build-id")
    return "; ".join(parts)


# -- where names came from ---------------------------------------------------------------

def count_symbol(key, origin: str) -> None:
    """Count one distinct symbol (key: module identity and vaddr) for origin,
    one of ORIGINS."""
    if key in _s.seen:  # the usual case, per stack frame: no lock (a set read is atomic)
        return
    with _s.lock:
        if key in _s.seen:
            return
        if len(_s.seen) >= MAX_SEEN:
            _s.seen.clear()  # bounded: a symbol seen again later counts again
        _s.seen.add(key)
        _s.sources[origin] += 1


def symbol_sources() -> dict[str, int]:
    with _s.lock:
        return dict(_s.sources)

