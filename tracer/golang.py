"""Go services: the server request each Go client call is made for, exactly,
from uprobes on the Go runtime and net/http (tracer/bpf/golang.bpf.c).

The Go scheduler moves goroutines between OS threads, and a pooled
connection is written by its own writeLoop goroutine: the thread link of the
correlator ("the request the writing thread handles") is wrong or absent for
Go. golang.bpf.o follows goroutines instead: a server request belongs to the
goroutine in serverHandler.ServeHTTP (or, for a grpc-go RPC, in
(*Server).handleStream: one HTTP/2 stream of the connection) and to the
goroutines it creates (runtime.newproc1), and a (*persistConn).roundTrip on
such a goroutine gives a record (client connection, server connection and
stream, times). The correlator asks
`GoRuntime.parent` at each client request (Correlator.runtime_parents): the record
of the request's connection names the server connection, and the server
request in flight on it is the parent (source "thread": a goroutine is Go's
thread; confidence 1).

Executables: found at start (/proc) and at exec (go_execs ring, drained on
every poll), attached once per inode (pid -1: every process running it).
What is read from each one:
- the Go version from .go.buildinfo (kept by -ldflags=-s -w);
- functions from .gopclntab (kept by stripping too): entry and end, so each
  function is disassembled (capstone) to find its RET instructions. Go moves
  goroutine stacks, and the return address a uretprobe plants breaks that,
  so return probes sit on the RET instructions instead;
- struct field offsets from DWARF when present, else from OFFSETS (by Go
  version) and GRPC_OFFSETS (by the grpc-go module version in the build
  info); neither: the binary is named in one line, its processes keep the
  correlator's other links.
The disassembly and the DWARF run in a child process without capabilities
(inspect_isolated). amd64 only (register ABI, Go >= 1.17: g in r14).
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import os
import re
import struct
import subprocess
import sys
from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import events, loader
from .addons import Addon
from .correlate import conn_key

if TYPE_CHECKING:
    from .symbols.rawelf import RawElf

log = logging.getLogger("tracer.golang")

SERVE = "net/http.serverHandler.ServeHTTP"
GRPC_SERVE = "google.golang.org/grpc.(*Server).handleStream"
ROUNDTRIP = "net/http.(*persistConn).roundTrip"
NEWPROC = "runtime.newproc1"
GOEXIT = "runtime.goexit1"
GRPC_MODULE = "google.golang.org/grpc"
# function -> (entry program, program at each RET or None) in golang.bpf.c;
# attached in this order: the runtime first, so no goroutine is missed once
# requests are followed
HOOKS: dict[str, tuple[str, str | None]] = {
    GOEXIT: ("go_exit", None),
    NEWPROC: ("go_newproc", "go_newproc_ret"),
    SERVE: ("go_serve", "go_serve_ret"),
    GRPC_SERVE: ("go_grpc_serve", "go_grpc_serve_ret"),
    ROUNDTRIP: ("go_roundtrip", None),
}
SERVERS = (SERVE, GRPC_SERVE)  # a followed executable has one or both
REQUIRED = (GOEXIT, NEWPROC, ROUNDTRIP)
# maps of sock.bpf.o that golang.bpf.o shares (conns.h, filters.h)
SHARED_MAPS = ("conns", "filter_cfg", "filter_pids", "filter_cgroups", "filter_netns",
               "filter_ports", "filter_comms")
MIN_GO = (1, 17)  # the register ABI on amd64: g in r14, arguments in registers
EM_X86_64 = 62
CAPSTONE = "capstone==5.0.6"
RECORD_KEEP_NS = 30 * 1_000_000_000  # a call record older than this joins nothing
# Records waiting per client connection. The records ring is drained ahead of
# the events ring, which lags under load: a pooled connection may carry many
# calls in between. A record leaves when its request (or a later one) is seen.
CALLS_PER_CONN = 1024
# From roundTrip's entry to the request's first write (kernel times): the
# connection is dialed before, so this is the writeLoop being scheduled. An
# older record is a call whose request was never written, not this one's.
CALL_TO_WRITE_NS = 1_000_000_000
MAX_CONNS = 65536  # client connections with records kept (an exec storm of clients)


# -- the mirror of golang.h (checked against BTF: tests/unit/test_golang.py) --------
class GoCallC(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint8), ("depth", ctypes.c_uint8), ("pad", ctypes.c_uint16),
                ("pid", ctypes.c_uint32), ("ts", ctypes.c_uint64),
                ("client_conn_id", ctypes.c_uint64), ("server_conn_id", ctypes.c_uint64),
                ("serve_ts", ctypes.c_uint64), ("stream_id", ctypes.c_uint32),
                ("pad2", ctypes.c_uint32)]


class GoOffsetsC(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint16) for name in (
        "response_conn", "conn_rwc", "conn_tls", "pconn_conn", "pconn_tls", "tcpconn_fd",
        "netfd_sysfd", "grpc_stream_id", "grpc_st_conn", "valid")]


class GoGkeyC(ctypes.Structure):
    _fields_ = [("tgid", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("g", ctypes.c_uint64)]


class GoServeC(ctypes.Structure):
    _fields_ = [("server_conn_id", ctypes.c_uint64), ("serve_ts", ctypes.c_uint64),
                ("depth", ctypes.c_uint32), ("stream_id", ctypes.c_uint32)]


STRUCTS = {"go_call": GoCallC, "go_offsets": GoOffsetsC, "go_gkey": GoGkeyC,
           "go_serve": GoServeC}
GO_REC_CALL = 1
GO_MAX_BINARIES = 64
GO_MAX_DEPTH = 8
# enum go_counter, in order: summary key of each
COUNTERS = ("hits_serve", "hits_serve_ret", "hits_newproc", "hits_newproc_ret", "hits_goexit",
            "hits_roundtrip", "hits_grpc_serve", "hits_grpc_serve_ret", "serve_no_conn", "serve_tls", "inherited", "depth_limit",
            "call_outside", "call_no_conn", "call_tls", "calls", "ring_full", "read_fault",
            "no_offsets")
ENUMS = {"go_counter": {f"GO_{k.upper().replace('HITS_', 'HIT_')}": i
                        for i, k in enumerate(COUNTERS)} | {"GO_CTR_MAX": len(COUNTERS)},
         "go_record_type": {"GO_REC_CALL": GO_REC_CALL}}
_CALL = struct.Struct("<BBHIQQQQII")


# -- what is read from a Go executable -----------------------------------------------
class NotGo(Exception):
    """Not a Go executable (or not one this add-on has anything to do with)."""


class Unsupported(Exception):
    """A Go executable this add-on cannot follow: the message names why."""


@dataclass(frozen=True)
class Offsets:
    """Field offsets golang.bpf.c reads (struct go_offsets)."""
    response_conn: int  # net/http.response.conn
    conn_rwc: int  # net/http.conn.rwc
    conn_tls: int  # net/http.conn.tlsState
    pconn_conn: int  # net/http.persistConn.conn
    pconn_tls: int  # net/http.persistConn.tlsState
    tcpconn_fd: int  # net.TCPConn.conn + net.conn.fd
    netfd_sysfd: int  # net.netFD.pfd + internal/poll.FD.Sysfd
    grpc_stream_id: int = 0  # grpc internal/transport.Stream.id (with GRPC_SERVE only)
    grpc_st_conn: int = 0  # grpc internal/transport.http2Server.conn

    def c(self) -> GoOffsetsC:
        return GoOffsetsC(self.response_conn, self.conn_rwc, self.conn_tls, self.pconn_conn,
                          self.pconn_tls, self.tcpconn_fd, self.netfd_sysfd,
                          self.grpc_stream_id, self.grpc_st_conn, 1)


@dataclass(frozen=True)
class GrpcOffsets:
    stream_id: int  # internal/transport.Stream.id
    st_conn: int  # internal/transport.http2Server.conn


# By Go version (inclusive range): the same from 1.17 through 1.24 (read from
# 1.19's DWARF here; the OpenTelemetry eBPF offsets tracker finds the same for
# the others). A newer version is used only with its own DWARF.
OFFSETS: list[tuple[tuple[int, int], tuple[int, int], Offsets]] = [
    ((1, 17), (1, 24), Offsets(response_conn=0, conn_rwc=16, conn_tls=48, pconn_conn=80,
                               pconn_tls=96, tcpconn_fd=0, netfd_sysfd=16)),
]
# By grpc-go module version (inclusive (major, minor, patch) range), for
# executables without DWARF: read from the DWARF of a build of that version
# here (workloads/go_grpc). Newer ones are followed only with their own DWARF.
GRPC_OFFSETS: list[tuple[tuple[int, int, int], tuple[int, int, int], GrpcOffsets]] = [
    ((1, 33, 0), (1, 33, 99), GrpcOffsets(stream_id=0, st_conn=32)),
]
_GRPC_STREAM = "google.golang.org/grpc/internal/transport.Stream"
_GRPC_HTTP2SERVER = "google.golang.org/grpc/internal/transport.http2Server"
_GRPC_DWARF_MEMBERS = {_GRPC_STREAM: ("id",), _GRPC_HTTP2SERVER: ("conn",)}
_HTTP_SERVER_TYPES = ("net/http.response", "net/http.conn")
# DWARF type -> members, and how they make up Offsets
_DWARF_MEMBERS = {
    "net/http.response": ("conn",), "net/http.conn": ("rwc", "tlsState"),
    "net/http.persistConn": ("conn", "tlsState"), "net.TCPConn": ("conn",),
    "net.conn": ("fd",), "net.netFD": ("pfd",), "internal/poll.FD": ("Sysfd",),
}


def parse_version(v: str) -> tuple[int, int] | None:
    """"go1.19.8" -> (1, 19); None for a development build or garbage."""
    m = re.match(r"go(\d+)\.(\d+)", v)
    return (int(m.group(1)), int(m.group(2))) if m else None


def table_offsets(version: tuple[int, int]) -> Offsets | None:
    for lo, hi, offs in OFFSETS:
        if lo <= version <= hi:
            return offs
    return None


def parse_module_version(v: str) -> tuple[int, int, int] | None:
    """"v1.33.3" -> (1, 33, 3); None for a pseudo-version or garbage."""
    m = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)(?:[-+].*)?", v)
    if m is None or "-0." in v:  # v0.0.0-2020...-hash, v1.2.4-0.2020...: not a release
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def grpc_table_offsets(version: str) -> GrpcOffsets | None:
    ver = parse_module_version(version)
    if ver is None:
        return None
    for lo, hi, offs in GRPC_OFFSETS:
        if lo <= ver <= hi:
            return offs
    return None


_BUILDINFO_MAGIC = b"\xff Go buildinf:"


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data):
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
    raise ValueError("truncated varint")


def build_version(elf: RawElf) -> str | None:
    """runtime.buildVersion from .go.buildinfo ("go1.19.8"), None if absent."""
    return build_info(elf)[0]


def build_info(elf: RawElf) -> tuple[str | None, str]:
    """runtime.buildVersion and runtime.modinfo from .go.buildinfo (both kept
    by -ldflags=-s -w): ("go1.19.8", "path\t...\ndep\tgoogle.golang.org/grpc\t
    v1.33.3\n..."), (None, "") if absent. Go >= 1.18 writes both strings
    inline (flags bit 2); older ones point to them."""
    sec = elf.section(".go.buildinfo")
    if sec is None:
        return None, ""
    data = elf.read(sec.offset, min(sec.size, 64 << 10))
    if not data.startswith(_BUILDINFO_MAGIC) or len(data) < 32:
        return None, ""
    ptr, flags = data[14], data[15]
    if flags & 2:
        n, pos = _uvarint(data, 32)
        version = data[pos:pos + n].decode("utf-8", "replace")
        n, pos = _uvarint(data, pos + n)
        return version, _strip_modinfo(data[pos:pos + n])
    if ptr != 8 or flags & 1:
        return None, ""  # a 32-bit or big-endian layout: not amd64 anyway
    strings = []
    for at in (16, 24):  # *string of buildVersion, then of modinfo
        (addr,) = struct.unpack_from("<Q", data, at)
        off = elf.vaddr_to_offset(addr)
        if off is None:
            strings.append(b"")
            continue
        sptr, slen = struct.unpack("<QQ", elf.read(off, 16))
        soff = elf.vaddr_to_offset(sptr)
        strings.append(elf.read(soff, slen) if soff is not None and 0 < slen < 1 << 20
                       else b"")
    version = strings[0].decode("utf-8", "replace") if 0 < len(strings[0]) < 256 else None
    return version, _strip_modinfo(strings[1])


def _strip_modinfo(raw: bytes) -> str:
    # the linker frames modinfo with 16 bytes of sentinel at each end
    # (debug/buildinfo does the same)
    if len(raw) >= 33 and raw[-17] == 0x0A:
        raw = raw[16:-16]
    return raw.decode("utf-8", "replace")


def module_version(modinfo: str, module: str) -> str | None:
    """The version of a dependency in build info's modinfo: its `dep` line,
    or the `=>` replacement after it when that one has a version."""
    version = None
    for line in modinfo.splitlines():
        f = line.split("\t")
        if version is not None:
            if f[0] == "=>" and len(f) >= 3 and f[2] not in ("", "(devel)"):
                version = f[2]
            return version
        if f[0] == "dep" and len(f) >= 3 and f[1] == module:
            version = f[2]
    return version


def pclntab_functions(elf: RawElf, names) -> dict[str, tuple[int, int]]:
    """Function name -> (entry, end) virtual addresses from .gopclntab
    (runtime/symtab.go pcHeader: Go 1.16/1.17 and 1.18+ layouts). The names
    are found in the name table first, so only offsets are compared per
    function (tens of thousands in a net/http binary)."""
    sec = elf.section(".gopclntab")
    if sec is None:
        raise NotGo("no .gopclntab")
    data = elf.read(sec.offset, sec.size)
    if len(data) < 64:
        raise Unsupported("truncated .gopclntab")
    magic = struct.unpack_from("<I", data)[0]
    ptr = data[7]
    if ptr != 8:
        raise Unsupported(f"pclntab pointer size {ptr}")

    def word(i: int) -> int:
        return struct.unpack_from("<Q", data, 8 + i * 8)[0]

    if magic in (0xFFFFFFF0, 0xFFFFFFF1):  # Go 1.18-1.19, 1.20+
        nfunc, text, names_at, funcs_at = word(0), word(2), word(3), word(7)
        text = text or next((s.addr for s in elf.sections if s.name == ".text"), 0)
        tab = array("I", data[funcs_at:funcs_at + (nfunc + 1) * 8])
        entries, funcoffs = tab[0::2], tab[1::2]
        entry_of = [text + e for e in entries]
    elif magic == 0xFFFFFFFA:  # Go 1.16-1.17
        nfunc, names_at, funcs_at = word(0), word(2), word(6)
        tab = array("Q", data[funcs_at:funcs_at + (nfunc + 1) * 16])
        entry_of, funcoffs = list(tab[0::2]), tab[1::2]
    else:
        raise Unsupported(f"pclntab magic {magic:#x} (Go older than 1.16?)")
    if len(funcoffs) < nfunc + 1:
        raise Unsupported("truncated .gopclntab function table")
    want: dict[int, str] = {}
    for name in names:
        needle = name.encode() + b"\0"
        i = data.find(needle, names_at)
        while i >= 0:
            want[i - names_at] = name
            i = data.find(needle, i + 1)
    name_field = 4 if magic != 0xFFFFFFFA else 8  # after entryOff (u32) or entry (uintptr)
    found: dict[str, tuple[int, int]] = {}
    for i in range(nfunc):
        (nameoff,) = struct.unpack_from("<i", data, funcs_at + funcoffs[i] + name_field)
        name = want.get(nameoff)
        if name is not None and name not in found:
            found[name] = (entry_of[i], entry_of[i + 1])
    return found


def ret_offsets(code: bytes, vaddr: int) -> list[int]:
    """Virtual addresses of the RET instructions in one function's code.
    The whole body must decode (Go's padding is int3): anything else would
    put a probe inside an instruction, so it raises Unsupported."""
    try:
        import capstone
    except ImportError:
        raise Unsupported(f"the capstone disassembler is not installed "
                          f"(pip install {CAPSTONE})") from None
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    rets, end = [], 0
    for addr, size, mnem, _ in md.disasm_lite(code, vaddr):
        if mnem.startswith("ret"):
            rets.append(addr)
        end = addr + size - vaddr
    if code[end:].strip(b"\xcc"):
        raise Unsupported(f"cannot disassemble the function at {vaddr:#x} past +{end:#x}")
    return rets


def dwarf_offsets(f, hooks=(SERVE,)) -> Offsets | None:
    """The offsets from the executable's own DWARF, or None (stripped, or a
    type missing). Only the types of the hooked functions are needed (a
    grpc-go server links no net/http server, and its types are gone): the
    other fields stay 0. Go writes names inline (DW_FORM_string) right after
    a DIE's abbreviation code, so each type's DIE is found by its name in
    .debug_info and parsed alone: 50 ms, where walking every DIE of a
    net/http binary takes a second."""
    from elftools.elf.elffile import ELFFile

    wanted = {t: fs for t, fs in _DWARF_MEMBERS.items()
              if SERVE in hooks or t not in _HTTP_SERVER_TYPES}
    if GRPC_SERVE in hooks:
        wanted.update(_GRPC_DWARF_MEMBERS)
    members: dict[tuple[str, str], int] = {}
    try:
        elf = ELFFile(f)
        if elf.get_section_by_name(".debug_info") is None \
                and elf.get_section_by_name(".zdebug_info") is None:
            return None
        dwarf = elf.get_dwarf_info()
        info = dwarf.debug_info_sec.stream.getvalue()
        for tname, fields in wanted.items():
            die = _find_struct(dwarf, info, tname)
            if die is None:
                return None
            for m in die.iter_children():
                mname = m.attributes.get("DW_AT_name")
                loc = m.attributes.get("DW_AT_data_member_location")
                if mname and loc and isinstance(loc.value, int) \
                        and mname.value.decode() in fields:
                    members[(tname, mname.value.decode())] = loc.value
    except Exception as e:  # noqa: BLE001 - any malformed DWARF: use the table
        log.debug("Go: DWARF unreadable (%s)", e)
        return None
    m = members
    try:
        offs = Offsets(pconn_conn=m["net/http.persistConn", "conn"],
                       pconn_tls=m["net/http.persistConn", "tlsState"],
                       tcpconn_fd=m["net.TCPConn", "conn"] + m["net.conn", "fd"],
                       netfd_sysfd=m["net.netFD", "pfd"] + m["internal/poll.FD", "Sysfd"],
                       response_conn=m.get(("net/http.response", "conn"), 0),
                       conn_rwc=m.get(("net/http.conn", "rwc"), 0),
                       conn_tls=m.get(("net/http.conn", "tlsState"), 0))
        if GRPC_SERVE in hooks:
            offs = dataclasses.replace(
                offs, grpc_stream_id=m[_GRPC_STREAM, "id"],
                grpc_st_conn=m[_GRPC_HTTP2SERVER, "conn"])
    except KeyError:
        return None
    if SERVE in hooks and ("net/http.response", "conn") not in m:
        return None
    return offs


def _find_struct(dwarf, info: bytes, name: str):
    """The DW_TAG_structure_type DIE named `name`, or None."""
    needle = name.encode() + b"\0"
    i = info.find(needle)
    while i >= 0:
        for code_len in (1, 2, 3):  # the ULEB128 abbreviation code before the name
            try:
                at = i - code_len
                die = dwarf.get_DIE_from_refaddr(at, dwarf.get_CU_containing(at))
            except Exception:  # noqa: BLE001 - not a DIE start: try the next
                continue
            attr = die.attributes.get("DW_AT_name")
            if die.tag == "DW_TAG_structure_type" and attr and attr.value == needle[:-1]:
                return die
        i = info.find(needle, i + 1)
    return None


@dataclass
class GoBinary:
    """What golang.bpf.o needs from one Go executable."""
    version: str
    offsets: Offsets
    offsets_from: str  # "dwarf" or "table"
    entry: dict[str, int]  # function -> file offset of its entry (the hooked ones)
    rets: dict[str, list[int]]  # function -> file offsets of its RET instructions
    grpc: str = ""  # grpc-go module version, from build info ("" if not linked)
    notes: tuple[str, ...] = ()  # what of the executable is not followed, and why

    @classmethod
    def inspect(cls, path: str) -> GoBinary:
        """Raises NotGo (nothing to do: not Go, or no net/http server and
        client in it) or Unsupported (a Go binary we cannot follow: why)."""
        with open(path, "rb") as f:
            return cls.inspect_file(f)

    @classmethod
    def inspect_file(cls, f) -> GoBinary:
        """inspect() of an open executable (a binary file object)."""
        elf, version, funcs, modinfo = _go_functions(f)
        if elf.machine != EM_X86_64:
            raise Unsupported(f"{version}: only amd64 is supported")
        ver = parse_version(version)
        if ver is not None and ver < MIN_GO:
            raise Unsupported(f"{version}: Go before 1.17 passes arguments on the stack")
        missing = [n for n in REQUIRED if n not in funcs]
        if missing:
            raise Unsupported(f"{version}: no {', '.join(missing)}")
        grpc = (module_version(modinfo, GRPC_MODULE) or "unknown") if GRPC_SERVE in funcs else ""
        offsets = dwarf_offsets(f, tuple(funcs))
        source = "dwarf"
        notes: list[str] = []
        if offsets is None:
            source = "table"
            offsets = table_offsets(ver) if ver is not None else None
            if offsets is None:
                raise Unsupported(f"{version}: no DWARF and no known struct offsets "
                                  f"for this version")
            if grpc:
                g = grpc_table_offsets(grpc)
                if g is None:
                    notes.append(f"grpc-go {grpc}: no DWARF and no known struct offsets "
                                 f"for this version, its RPCs are not followed")
                    del funcs[GRPC_SERVE]
                    if not any(n in funcs for n in SERVERS):
                        raise Unsupported(f"{version}: {notes[0]}")
                else:
                    offsets = dataclasses.replace(offsets, grpc_stream_id=g.stream_id,
                                                  grpc_st_conn=g.st_conn)
        entry: dict[str, int] = {}
        rets: dict[str, list[int]] = {}
        for name, (lo, hi) in funcs.items():
            off = elf.vaddr_to_offset(lo)
            if off is None:
                raise Unsupported(f"{version}: {name} is outside the file's segments")
            entry[name] = off
            if HOOKS[name][1] is not None:
                addrs = ret_offsets(elf.read(off, hi - lo), lo)
                if not addrs:
                    raise Unsupported(f"{version}: no RET instruction in {name}")
                rets[name] = [off + a - lo for a in addrs]
        return cls(version, offsets, source, entry, rets, grpc, tuple(notes))

    def describe(self, name: str) -> str:
        """The summary's go_binaries entry."""
        grpc = f", grpc-go {self.grpc}" if self.grpc and GRPC_SERVE in self.entry else ""
        return f"{name} ({self.version}{grpc}, offsets from {self.offsets_from})"

    def to_json(self) -> dict:
        return {"version": self.version, "offsets": dataclasses.asdict(self.offsets),
                "offsets_from": self.offsets_from, "entry": self.entry, "rets": self.rets,
                "grpc": self.grpc, "notes": list(self.notes)}

    @classmethod
    def from_json(cls, d: dict) -> GoBinary:
        return cls(d["version"], Offsets(**d["offsets"]), d["offsets_from"],
                   {k: int(v) for k, v in d["entry"].items()},
                   {k: [int(x) for x in v] for k, v in d["rets"].items()},
                   str(d.get("grpc", "")), tuple(str(n) for n in d.get("notes", ())))


def _go_functions(f) -> tuple[RawElf, str, dict[str, tuple[int, int]], str]:
    """The cheap part: ELF headers, version, the functions, the modules;
    NotGo unless a Go executable with a server (net/http or grpc-go) and a
    net/http client."""
    # here, not at import: the symbols package costs the tracer's start-up
    # (it runs in the inspecting child)
    from .symbols.rawelf import ElfFormatError, RawElf, file_reader

    try:
        elf = RawElf(file_reader(f.fileno()))
    except ElfFormatError as e:
        raise NotGo(str(e)) from None
    if elf.section(".gopclntab") is None and elf.section(".go.buildinfo") is None:
        raise NotGo("not a Go executable")
    version, modinfo = build_info(elf)
    funcs = pclntab_functions(elf, HOOKS)
    if ROUNDTRIP not in funcs or not any(n in funcs for n in SERVERS):
        raise NotGo("no net/http or grpc-go server and net/http client")
    return elf, version or "unknown", funcs, modinfo


INSPECT_TIMEOUT_S = 30.0


def inspect_isolated(path: str, timeout: float = INSPECT_TIMEOUT_S) -> GoBinary:
    """GoBinary.inspect in a child process (`python -m tracer.golang FD`): the
    disassembler (12 MB resident) and the DWARF parse (9 MB) never enter the
    agent, and a hostile executable is parsed outside the process that holds
    the BPF objects. Files that are not Go net/http executables are told
    apart here first, cheaply: no child for them."""
    with open(path, "rb") as f:
        _go_functions(f)
        fd = f.fileno()
        try:
            proc = subprocess.run([sys.executable, "-m", "tracer.golang", str(fd)],
                                  pass_fds=(fd,), capture_output=True, timeout=timeout,
                                  check=False)
        except (OSError, subprocess.SubprocessError) as e:
            raise Unsupported(f"cannot inspect it: {e}") from None
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise Unsupported(f"inspection failed (exit {proc.returncode}: {tail[0]})") from None
    if "binary" in out:
        return GoBinary.from_json(out["binary"])
    raise (NotGo if out.get("kind") == "not_go" else Unsupported)(out.get("why", "?"))


def _inspect_main(argv: list[str]) -> int:
    """The child of inspect_isolated: reads the file it was given, with no
    capability left; one JSON object on stdout."""
    from . import privileges

    privileges.drop({})  # a failure is only a warning: the parse is the same
    try:
        with os.fdopen(int(argv[0]), "rb") as f:
            out: dict = {"binary": GoBinary.inspect_file(f).to_json()}
    except NotGo as e:
        out = {"kind": "not_go", "why": str(e)}
    except Unsupported as e:
        out = {"kind": "unsupported", "why": str(e)}
    except (OSError, struct.error, ValueError, IndexError) as e:
        out = {"kind": "unsupported", "why": f"unreadable: {e}"}
    sys.stdout.write(json.dumps(out))
    return 0


# -- the probes ---------------------------------------------------------------------
@dataclass
class GoProbes:
    """golang.bpf.o, loaded on the maps of a loaded sock.bpf.o, attached
    once per Go executable (inode)."""

    obj: loader.BPFObject
    records: loader.RingBuffer | None = None
    execs: loader.RingBuffer | None = None
    seen: set = field(default_factory=set)  # (dev, inode) looked at
    binaries: dict[tuple[int, int], str] = field(default_factory=dict)  # attached: description
    slots: dict[tuple[int, int], int] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)  # path -> why
    refused: dict[tuple[int, int], str] = field(default_factory=dict)  # (dev, inode) -> why
    pids: set[int] = field(default_factory=set)  # processes running an attached executable
    unreadable: int = 0  # processes whose executable we may not read

    @classmethod
    def load(cls, sock: loader.BPFObject, **rodata: int) -> GoProbes:
        obj = loader.BPFObject.load_on("golang", sock, SHARED_MAPS, **rodata)
        try:
            probes = cls(obj)
            probes.records = obj.ring_buffer("go_records")
            probes.execs = obj.ring_buffer("go_execs")
        except BaseException:
            obj.close()
            raise
        return probes

    def start(self) -> None:
        try:
            self.obj.attach("go_exec")
        except loader.AttachError as e:
            log.warning("%s: Go processes started later are not followed", e)
        for pid in self.candidates():
            if pid != os.getpid():
                self.scan_pid(pid)

    def candidates(self) -> list[int]:
        """The processes the filters let through (filters.h process_wanted)."""
        raw = self.obj.map("filter_cfg").lookup(0)
        cfg = events.FilterConfigC.from_buffer_copy(raw) if raw else events.FilterConfigC()
        if cfg.by_pid:
            pids = [int.from_bytes(k, "little") for k in self.obj.map("filter_pids").keys()]
        else:
            pids = [int(e) for e in os.listdir("/proc") if e.isdigit()]
        if cfg.by_comm:
            names = {bytes(k) for k in self.obj.map("filter_comms").keys()}
            pids = [p for p in pids if _comm_key(p) in names]
        return sorted(pids)

    def scan_pid(self, pid: int) -> tuple[int, int] | None:
        """Attach to pid's executable if it is a Go one not seen yet; its
        (dev, inode), or None if unreadable or gone."""
        exe = f"/proc/{pid}/exe"
        try:
            st = os.stat(exe)
            name = os.readlink(exe)
        except PermissionError:
            self.unreadable += 1
            return None
        except OSError:
            return None  # gone, or a kernel thread
        key = (st.st_dev, st.st_ino)
        if key not in self.seen:
            self.seen.add(key)
            self.consider(exe, name, key)
        if key in self.binaries:
            self.pids.add(pid)
        return key

    def attach_pid(self, pid: int) -> dict:
        """In the privileged broker (tracer/broker.py, request attach_go): the
        same as scan_pid, with what the agent shows of it."""
        key = self.scan_pid(pid)
        return {"binary": self.binaries.get(key, ""), "unsupported": self.refused.get(key, "")}

    def _refuse(self, name: str, key: tuple[int, int], why: str) -> bool:
        self.unsupported[name] = self.refused[key] = why
        log.warning("Go: %s: %s; its processes keep the other correlation links", name, why)
        return False

    def consider(self, path: str, name: str, key: tuple[int, int]) -> bool:
        try:
            binary = inspect_isolated(path)
        except NotGo:
            return False
        except Unsupported as e:
            return self._refuse(name, key, str(e))
        except (OSError, struct.error, ValueError) as e:  # unreadable, truncated
            return self._refuse(name, key, f"unreadable: {e}")
        if len(self.slots) >= GO_MAX_BINARIES:
            return self._refuse(name, key, f"more than {GO_MAX_BINARIES} Go executables")
        slot = len(self.slots)
        self.obj.map("go_offsets").update(slot, bytes(binary.offsets.c()))
        before = set(self.obj.attached)
        try:
            for func, (entry, ret) in HOOKS.items():
                if func not in binary.entry:
                    continue  # a server kind it does not link
                if ret is not None:
                    for off in binary.rets[func]:
                        self.obj.attach_uprobe(ret, path, off, cookie=slot)
                self.obj.attach_uprobe(entry, path, binary.entry[func], cookie=slot)
        except loader.AttachError as e:
            for link in set(self.obj.attached) - before:  # all of them or none
                self.obj.detach(link)
            return self._refuse(name, key, str(e))
        self.slots[key] = slot
        self.binaries[key] = binary.describe(name)
        for note in binary.notes:
            self.unsupported[name] = note
            log.warning("Go: %s: %s", name, note)
        log.info("Go: attached to %s", self.binaries[key])
        return True

    def take_execs(self) -> list[int]:
        pids: list[int] = []

        def on_exec(buf, off, size):
            if size >= 4:
                pids.append(int.from_bytes(buf[off:off + 4], "little"))

        if self.execs is not None:
            self.execs.consume(on_exec)
        return pids

    def counters(self) -> dict[str, int]:
        m = self.obj.map("go_counters")
        return {name: m.percpu_sum(i) for i, name in enumerate(COUNTERS)}

    def probe_ns(self) -> dict[str, float]:
        """Mean BPF run time per hit of each program (bpf_stats; empty while
        kernel.bpf_stats_enabled is 0)."""
        out = {}
        for prog in sorted({p for pair in HOOKS.values() for p in pair if p}):
            try:
                with open(f"/proc/self/fdinfo/{self.obj.prog_fd(prog)}") as f:
                    info = dict(line.split(":", 1) for line in f if ":" in line)
                ns, cnt = int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0))
            except (OSError, ValueError):
                continue
            if cnt:
                out[prog] = round(ns / cnt, 1)
        return out

    def detach(self) -> None:
        self.obj.detach_all()

    def close(self) -> None:
        self.obj.close()


def _comm_key(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            name = f.read().rstrip(b"\n")
    except OSError:
        return b""
    return name[:events.TASK_COMM_LEN - 1].ljust(events.TASK_COMM_LEN, b"\0")


# -- the join -------------------------------------------------------------------------
class CallIndex:
    """go_call records by client connection, and the join to the correlator's
    server contexts. Pure: tests feed it records and a table."""

    def __init__(self, table) -> None:
        self.table = table  # tracer.conn.ConnectionTable: conns by id, the correlator
        # client conn_id -> (ts, server conn_id, serve_ts, HTTP/2 stream id or 0)
        self.calls: dict[int, deque] = {}
        self.links = 0
        self.no_call = 0  # a client request of a Go process with no record for it
        self.no_server = 0  # a record whose server request is not in flight (or unknown)
        self.records = 0
        self.stale = 0  # the latest record before a request was too old to be its call

    def add(self, ts: int, client: int, server: int, serve_ts: int, stream: int = 0) -> None:
        self.records += 1
        q = self.calls.get(client)
        if q is None:
            if len(self.calls) >= MAX_CONNS:
                self.calls.pop(next(iter(self.calls)))  # the oldest connection
            q = self.calls[client] = deque(maxlen=CALLS_PER_CONN)
        q.append((ts, server, serve_ts, stream))

    def on_record(self, buf, off: int, size: int) -> None:
        if size >= _CALL.size:
            typ, _, _, _, ts, client, server, serve_ts, stream, _ = _CALL.unpack_from(buf, off)
            if typ == GO_REC_CALL:
                self.add(ts, client, server, serve_ts, stream)

    def find(self, client_conn_id: int, ts: int):
        """The record of the call whose request starts at ts on that connection:
        the latest one made before it. It is taken, with the older ones: one
        request at a time goes out on a connection, and requests are seen in
        order, so an older record's request was never written."""
        q = self.calls.get(client_conn_id)
        rec = None
        while q and q[0][0] <= ts:
            rec = q.popleft()
        if q is not None and not q:
            del self.calls[client_conn_id]
        if rec is not None and ts - rec[0] > CALL_TO_WRITE_NS:
            self.stale += 1
            return None
        return rec

    def server_context(self, pid: int, server_conn_id: int, serve_ts: int, stream: int = 0):
        """The server request in flight on that connection (and HTTP/2 stream:
        the correlator keys those by (connection, stream id)) that had started
        by serve_ts (the latest such: one at a time on an HTTP/1 connection)."""
        sconn = self.table.conns.get(server_conn_id)
        key = conn_key(sconn, True) if sconn is not None else None
        if key is None:
            return None
        if stream:
            key = (key, stream)
        best = None
        for ctx in self.table.correlator.active_pid.get(pid, ()):
            if ctx.key == key and ctx.start_ts <= serve_ts \
                    and (best is None or ctx.start_ts > best.start_ts):
                best = ctx
        return best

    def expire(self, now_ns: int) -> None:
        old = now_ns - RECORD_KEEP_NS
        for cid in [c for c, q in self.calls.items() if q[-1][0] < old]:
            del self.calls[cid]


class GoRuntime(Addon):
    """The add-on (tracer/addons.py): golang.bpf.o on sock.bpf.o's maps, its
    records drained before every read of the events ring (a client request's
    record is always written before the request itself), the correlator's
    runtime_parents hook answered from them."""

    name = "go"
    drains = True
    warning = "Go goroutine links not traced"

    def __init__(self) -> None:
        self.probes: GoProbes | None = None
        self.index: CallIndex | None = None
        self.last: dict = {}  # counters() as of close()
        self.broker = None  # tracer/broker.py BrokerClient once separated
        self.broker_refused = ""  # why the broker does not attach for us ("": it does)
        self.link_fds: list[int] = []  # links the broker attached: kept, as tls.py does

    @classmethod
    def idle(cls) -> dict:
        return cls().counters()

    def start(self, kernel, table) -> None:
        self.index = CallIndex(table)
        if kernel.source is not None:  # recorded records: no process to follow, nothing to say
            self.warning = ""
            self.unavailable = "records are replayed"
            return
        self.probes = GoProbes.load(kernel.loaded(), self_tgid=os.getpid())
        self.probes.start()
        table.correlator.runtime_parents.append(self.parent)
        table.correlator.runtime_pids.append(self.probes.pids)

    def separated(self, broker) -> None:
        self.broker = broker

    def broker_ops(self) -> dict:
        """The broker's request for Go executables started after the split:
        it reads and attaches them (the agent holds no capability)."""
        if self.probes is None:
            return {}
        probes = self.probes

        def attach_go(pid: int) -> dict:
            if pid <= 0:
                raise ValueError("pid must be positive")
            return probes.attach_pid(pid)

        return {"attach_go": ({"pid": int}, attach_go)}

    def bpf_objects(self) -> list:
        return [self.probes.obj] if self.probes is not None else []

    def drain(self) -> None:
        p = self.probes
        for pid in p.take_execs():
            if self.broker is None:
                p.scan_pid(pid)
            elif not self.broker_refused:
                self._ask_broker(pid)
        p.records.consume(self.index.on_record)

    def _ask_broker(self, pid: int) -> None:
        """After the split this process may not read other processes'
        executables nor attach: the broker does both (tracer/broker.py)."""
        from .broker import BrokerGone

        try:
            reply, fds = self.broker.request("attach_go", pid=pid)
        except BrokerGone as e:
            self.broker_refused = f"the broker is gone ({e})"
            return
        self.link_fds.extend(fds)
        if not reply.get("ok"):
            self.broker_refused = str(reply.get("refused") or reply.get("error") or "refused")
            log.warning("Go executables started from now on are not followed (broker: %s)",
                        self.broker_refused)
            return
        p = self.probes
        if reply.get("binary"):
            p.binaries[("broker", reply["binary"])] = reply["binary"]
            p.pids.add(pid)
        elif reply.get("unsupported"):
            p.unsupported[f"pid {pid}"] = reply["unsupported"]

    def parent(self, conn, pid: int, ts: int):
        """Correlator.runtime_parents: the server request (correlate.Context) whose
        goroutine made the client request starting at ts on conn, or None.
        Processes that are not Go cost a dict miss (and a look at the ring)."""
        index = self.index
        rec = index.find(conn.conn_id, ts)
        if rec is None:
            p = self.probes
            if p is not None and p.records.available():
                p.records.consume(index.on_record)  # written after the last drain
                rec = index.find(conn.conn_id, ts)
            if rec is None:
                if p is not None and pid in p.pids:
                    index.no_call += 1
                return None
        ctx = index.server_context(pid, rec[1], rec[2], rec[3])
        if ctx is None:
            index.no_server += 1
            return None
        index.links += 1
        return ctx

    def tick(self, now_ns: int) -> None:
        self.index.expire(now_ns)

    def stop(self) -> None:
        if self.probes is not None:
            self.probes.detach()

    def close(self) -> None:
        if self.probes is not None:
            self.probes.records.consume(self.index.on_record)
            self.last = self.counters()
            self.probes.close()
            self.probes = None
        for fd in self.link_fds:
            os.close(fd)
        self.link_fds = []

    def counters(self) -> dict:
        p, i = self.probes, self.index
        if p is None:
            return self.last or {
                "go_binaries": [], "go_unsupported": {}, "go_unavailable": self.unavailable,
                "go_links": 0, "go_link_misses": {"no_call": 0, "no_server": 0, "stale": 0},
                "go_records": 0, "go_processes": 0, "go_unreadable_processes": 0,
                "go_exec_discovery": "",
                "go_kernel": {k: 0 for k in COUNTERS}, "go_probe_ns": {}}
        return {
            "go_binaries": sorted(p.binaries.values()), "go_unsupported": dict(p.unsupported),
            "go_unavailable": self.unavailable, "go_links": i.links,
            "go_link_misses": {"no_call": i.no_call, "no_server": i.no_server,
                               "stale": i.stale},
            "go_records": i.records, "go_processes": len(p.pids),
            "go_unreadable_processes": p.unreadable, "go_kernel": p.counters(),
            "go_exec_discovery": self.broker_refused,
            "go_probe_ns": p.probe_ns()}


if __name__ == "__main__":
    sys.exit(_inspect_main(sys.argv[1:]))
