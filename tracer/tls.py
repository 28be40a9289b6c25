"""TLS plaintext: find OpenSSL-compatible libraries and attach tls.bpf.o to them.

A uprobe on a file applies to every process that maps it, so each library is
attached once per inode (pid -1), whichever process revealed it. Candidates:

- the system libssl (3 and 1.1) at start, whether or not anything maps it yet,
  so processes started later are covered with no work;
- every executable mapping of every process (``/proc/<pid>/maps`` and the
  executable itself) that holds the OpenSSL API names: statically linked or
  renamed copies (node, grpcio's BoringSSL) are found by their symbols;
- processes that exec after the start (``sched_process_exec`` events from
  tls.bpf.c, drained by the agent's housekeeping tick), scanned again a few
  seconds later for libraries loaded lazily (``dlopen``).

Symbols come from .dynsym and .symtab (pyelftools); their virtual addresses
are turned into the file offsets that uprobes take.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import struct
import time
from dataclasses import dataclass, field

from . import events, loader

log = logging.getLogger("tracer.tls")

# API function -> (entry program, return program) in tls.bpf.c
HOOKS = {
    "SSL_read": ("ssl_read_enter", "ssl_ret"),
    "SSL_write": ("ssl_write_enter", "ssl_ret"),
    "SSL_read_ex": ("ssl_read_ex_enter", "ssl_ex_ret"),
    "SSL_write_ex": ("ssl_write_ex_enter", "ssl_ex_ret"),
    "SSL_do_handshake": ("ssl_handshake_enter", "ssl_handshake_ret"),
}
REQUIRED = ("SSL_read", "SSL_write")
# maps of sock.bpf.o that tls.bpf.o shares (tracer/bpf/maps.h)
SHARED_MAPS = ("events", "counters", "conns", "ssl_active", "ssl_fds", "ssl_last_read")
SYSTEM_LIBS = (
    "/lib/x86_64-linux-gnu/libssl.so.3", "/usr/lib/x86_64-linux-gnu/libssl.so.3",
    "/lib/x86_64-linux-gnu/libssl.so.1.1", "/usr/lib/x86_64-linux-gnu/libssl.so.1.1",
    "/lib/aarch64-linux-gnu/libssl.so.3", "/usr/lib64/libssl.so.3", "/usr/lib/libssl.so.3",
)
RESCAN_AFTER_S = (0.5, 3.0)  # after an exec: the loader, then lazy dlopen()s
MAX_RESCANS = 4096  # an exec storm: later rescans are dropped (counted in `rescans_dropped`)
_MARKER = b"SSL_do_handshake\0"  # cheap pre-check before parsing an ELF
_EXEC_SIZE = ctypes.sizeof(events.ExecEventC)
_SYM64 = struct.Struct("<IBBHQQ")  # Elf64_Sym
_STT_FUNC = 2


def symbol_offsets(path: str) -> dict[str, int]:
    """File offsets of the HOOKS functions defined in the ELF file at path.

    pyelftools reads the headers; the symbol tables are scanned with
    struct.iter_unpack against the string offsets of the wanted names, which
    is ~50x faster than building pyelftools' name index (node: 75k dynamic
    symbols, 1.5 s that way)."""
    from elftools.elf.elffile import ELFFile  # imported on first use: start-up cost

    found: dict[str, int] = {}
    with open(path, "rb") as f:
        elf = ELFFile(f)
        if elf.elfclass != 64 or not elf.little_endian:
            return found
        loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        for sec in elf.iter_sections():
            if sec["sh_type"] not in ("SHT_DYNSYM", "SHT_SYMTAB") or len(found) == len(HOOKS):
                continue
            strtab = elf.get_section(sec["sh_link"]).data()
            want: dict[int, str] = {}
            for name in HOOKS:
                needle = b"\0" + name.encode() + b"\0"
                i = strtab.find(needle)
                while i >= 0:
                    want[i + 1] = name
                    i = strtab.find(needle, i + 1)
            if not want:
                continue
            for st_name, st_info, _, st_shndx, st_value, _ in _SYM64.iter_unpack(sec.data()):
                name = want.get(st_name)
                if (name and name not in found and st_info & 0xF == _STT_FUNC
                        and st_shndx != 0 and st_value):
                    off = _file_offset(loads, st_value)
                    if off is not None:
                        found[name] = off
    return found


def _file_offset(loads, vaddr: int) -> int | None:
    for seg in loads:
        if seg["p_vaddr"] <= vaddr < seg["p_vaddr"] + seg["p_memsz"]:
            return vaddr - seg["p_vaddr"] + seg["p_offset"]
    return None


def _has_marker(path: str) -> bool:
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
            return m.find(_MARKER) >= 0
    except (OSError, ValueError):  # gone, unreadable, or empty
        return False


def exec_mappings(pid: int) -> list[tuple[str, int, int]]:
    """(path usable from here, dev, inode) of each file pid maps executable,
    and of its executable; a path from another mount namespace (or deleted)
    goes through /proc/<pid>/root."""
    out = []
    try:
        with open(f"/proc/{pid}/maps") as f:
            lines = f.readlines()
    except OSError:
        return out
    paths = set()
    try:
        paths.add(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        pass
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) == 6 and "x" in parts[1] and parts[5].startswith("/"):
            paths.add(parts[5].rstrip("\n"))
    for p in paths:
        path = p
        try:
            st = os.stat(path)
        except OSError:
            path = f"/proc/{pid}/root{p}"
            try:
                st = os.stat(path)
            except OSError:
                continue
        out.append((path, st.st_dev, st.st_ino))
    return out


@dataclass
class TlsProbes:
    """tls.bpf.o, loaded on the maps of a loaded sock.bpf.o."""

    obj: loader.BPFObject
    libraries: dict[tuple[int, int], str] = field(default_factory=dict)  # attached
    seen: set = field(default_factory=set)  # (dev, inode) already checked
    failed: dict[str, str] = field(default_factory=dict)  # path -> why not attached
    rescans: list[tuple[float, int]] = field(default_factory=list)  # (due, pid)
    execs: loader.RingBuffer | None = None
    rescans_dropped: int = 0

    @classmethod
    def load(cls, sock: loader.BPFObject, **rodata: int) -> TlsProbes:
        obj = loader.BPFObject.open(loader.object_path("tls"))
        try:
            for name in SHARED_MAPS:
                obj.reuse_map(name, sock.map(name))
            obj.set_rodata(**rodata)
            obj.load()
            probes = cls(obj)
            probes.execs = obj.ring_buffer("tls_execs")
        except BaseException:
            obj.close()
            raise
        return probes

    def start(self) -> None:
        """Attach the exec watch and the system libraries, then scan every
        process. Raises AttachError if uprobes do not work at all."""
        try:
            self.obj.attach("tp_exec")
        except loader.AttachError as e:
            log.warning("%s: libraries of processes started later are found only "
                        "if already attached", e)
        for path in SYSTEM_LIBS:
            try:
                st = os.stat(path)
            except OSError:
                continue
            self.consider(path, st.st_dev, st.st_ino, strict=not self.libraries)
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                self.scan_pid(int(entry))

    def scan_pid(self, pid: int) -> None:
        for path, dev, ino in exec_mappings(pid):
            self.consider(path, dev, ino)

    def consider(self, path: str, dev: int, ino: int, strict: bool = False) -> bool:
        """Attach to the file if it has the OpenSSL API and is new; strict:
        raise if the kernel refuses (the first library tells whether uprobes
        work here at all)."""
        from elftools.common.exceptions import ELFError

        key = (dev, ino)
        if key in self.seen:
            return False
        self.seen.add(key)
        if not _has_marker(path):
            return False
        try:
            offsets = symbol_offsets(path)
        except (ELFError, OSError, ValueError, KeyError) as e:  # a malformed file: skip it
            self.failed[path] = f"unreadable ELF: {e}"
            return False
        if not all(n in offsets for n in REQUIRED):
            return False
        try:
            self._attach(path, offsets)
        except loader.AttachError as e:
            self.failed[path] = str(e)
            if strict:
                raise
            log.warning("TLS: %s", e)
            return False
        self.libraries[key] = path
        log.info("TLS: attached to %s (%s)", path, ", ".join(sorted(offsets)))
        return True

    def _attach(self, path: str, offsets: dict[str, int]) -> None:
        for name, off in offsets.items():
            entry, ret = HOOKS[name]
            self.obj.attach_uprobe(entry, path, off, pid=-1)
            self.obj.attach_uprobe(ret, path, off, pid=-1, retprobe=True)

    def tick(self, now: float | None = None) -> None:
        """Housekeeping: look at processes that exec'd, and due rescans."""
        now = time.monotonic() if now is None else now
        pids: list[int] = []

        def on_exec(buf, off, size):
            if size >= _EXEC_SIZE:
                pids.append(int.from_bytes(buf[off:off + 4], "little"))

        if self.execs is not None:
            self.execs.consume(on_exec)
        for pid in pids:
            self.scan_pid(pid)  # a static binary is visible right away
            if len(self.rescans) < MAX_RESCANS:
                self.rescans.extend((now + d, pid) for d in RESCAN_AFTER_S)
            else:
                self.rescans_dropped += 1
        due = [p for t, p in self.rescans if t <= now]
        if due:
            self.rescans = [(t, p) for t, p in self.rescans if t > now]
            for pid in set(due):
                self.scan_pid(pid)

    def detach(self) -> None:
        for link in list(self.obj.attached):
            self.obj.detach(link)

    def close(self) -> None:
        self.obj.close()
