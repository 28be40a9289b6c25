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

Symbols come from .dynsym and .symtab (read with struct); their virtual
addresses are turned into the file offsets that uprobes take.

A library takes two uprobe_multi links where the kernel has them (6.6+,
`loader.uprobe_multi`, decided before loading): all its entry probes in one,
all its return probes in the other, the cookie of each offset naming the
function (`TlsHook`, tls.h). Releasing a link costs the kernel a synchronize,
so stopping costs two of them per library instead of two per function.
Elsewhere, or where the kernel refuses the multi link for a library, each
function takes its own entry and return link (one line, counted).

Split into broker and agent (tracer/broker.py), the agent drains the exec
ring and asks; the broker reads /proc/<pid>/maps, parses the ELF files it
found itself and attaches (`discover`, `consider`, on its copy of TlsProbes).
"""

from __future__ import annotations

import ctypes
import enum
import logging
import os
import struct
import time
from dataclasses import dataclass, field

from . import events, loader
from .addons import Addon

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


class TlsHook(enum.IntEnum):
    """enum tls_hook (tls.h): the bpf cookie that names the function under
    uprobe_multi (tests/kernel/test_uprobe_multi.py checks it against BTF)."""

    TLS_HOOK_NONE = 0
    TLS_HOOK_SSL_READ = 1
    TLS_HOOK_SSL_WRITE = 2
    TLS_HOOK_SSL_READ_EX = 3
    TLS_HOOK_SSL_WRITE_EX = 4
    TLS_HOOK_SSL_DO_HANDSHAKE = 5


HOOK_COOKIES = {name: TlsHook[f"TLS_HOOK_{name.upper()}"] for name in HOOKS}
MULTI_ENTRY, MULTI_RETURN = "ssl_enter_multi", "ssl_ret_multi"  # the uprobe_multi pair
MODE_MULTI, MODE_PER_FUNCTION = "uprobe_multi", "per-function"
# maps of sock.bpf.o that tls.bpf.o shares (tracer/bpf/maps.h)
SHARED_MAPS = ("events", "counters", "conns", "ssl_active", "ssl_fds", "ssl_last_read",
               "filter_cfg", "filter_pids", "filter_cgroups", "filter_netns", "filter_ports",
               "filter_comms")
SYSTEM_LIBS = (
    "/lib/x86_64-linux-gnu/libssl.so.3", "/usr/lib/x86_64-linux-gnu/libssl.so.3",
    "/lib/x86_64-linux-gnu/libssl.so.1.1", "/usr/lib/x86_64-linux-gnu/libssl.so.1.1",
    "/lib/aarch64-linux-gnu/libssl.so.3", "/usr/lib64/libssl.so.3", "/usr/lib/libssl.so.3",
)
RESCAN_AFTER_S = (0.5, 3.0)  # after an exec: the loader, then lazy dlopen()s
MAX_RESCANS = 4096  # an exec storm: later rescans are dropped (counted in `rescans_dropped`)
MAX_DISCOVERED = 1 << 16  # files the broker remembers having found (what attach may name)
_EXEC_SIZE = ctypes.sizeof(events.ExecEventC)
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr
_PHDR = struct.Struct("<IIQQQQQQ")  # Elf64_Phdr
_SHDR = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr
_SYM64 = struct.Struct("<IBBHQQ")  # Elf64_Sym
_PT_LOAD, _SHT_SYMTAB, _SHT_DYNSYM, _STT_FUNC = 1, 2, 11, 2


def symbol_offsets(path: str) -> dict[str, int]:
    """File offsets of the HOOKS functions defined in the ELF file at path
    (64-bit little-endian: x86_64, aarch64).

    The ELF headers are read with struct, and the symbol tables are scanned
    against the string-table offsets of the wanted names: no ELF library, no
    index of every symbol (node has 75k dynamic symbols; pyelftools took
    1.5 s and 5 MB to index them, this takes 0.1 s)."""
    found: dict[str, int] = {}
    with open(path, "rb") as f:
        fd = f.fileno()
        ehdr = os.pread(fd, _EHDR.size, 0)
        if len(ehdr) < _EHDR.size or ehdr[:4] != b"\x7fELF" or ehdr[4] != 2 or ehdr[5] != 1:
            return found  # not ELF64 little-endian
        (_, _, _, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum,
         _) = _EHDR.unpack(ehdr)
        if phentsize != _PHDR.size or shentsize != _SHDR.size:
            return found
        loads = []
        raw = os.pread(fd, phnum * _PHDR.size, phoff)
        for p_type, _, p_offset, p_vaddr, _, _, p_memsz, _ in _PHDR.iter_unpack(raw):
            if p_type == _PT_LOAD:
                loads.append((p_vaddr, p_memsz, p_offset))
        shdrs = list(_SHDR.iter_unpack(os.pread(fd, shnum * _SHDR.size, shoff)))
        # .dynsym first: exported names; .symtab (if not stripped) for the rest
        for want_type in (_SHT_DYNSYM, _SHT_SYMTAB):
            for sh in shdrs:
                if sh[1] != want_type or len(found) == len(HOOKS) or sh[6] >= len(shdrs):
                    continue
                link = shdrs[sh[6]]
                strtab = os.pread(fd, link[5], link[4])
                want = _name_offsets(strtab)
                if not want:
                    continue
                syms = os.pread(fd, sh[5] - sh[5] % _SYM64.size, sh[4])
                for st_name, st_info, _, st_shndx, st_value, _ in _SYM64.iter_unpack(syms):
                    name = want.get(st_name)
                    if (name and name not in found and st_info & 0xF == _STT_FUNC
                            and st_shndx != 0 and st_value):
                        off = _file_offset(loads, st_value)
                        if off is not None:
                            found[name] = off
    return found


def _name_offsets(strtab: bytes) -> dict[int, str]:
    """String-table offset -> HOOKS name, for every copy of each name.

    A name may also be the tail of a longer string ("xSSL_read"): linkers
    share suffixes, and st_name then points into the middle of it. Any
    position where `name\0` starts reads as that name, so every one counts."""
    want: dict[int, str] = {}
    for name in HOOKS:
        needle = name.encode() + b"\0"
        i = strtab.find(needle)
        while i >= 0:
            want[i] = name
            i = strtab.find(needle, i + 1)
    return want


def _file_offset(loads: list[tuple[int, int, int]], vaddr: int) -> int | None:
    for p_vaddr, p_memsz, p_offset in loads:
        if p_vaddr <= vaddr < p_vaddr + p_memsz:
            return vaddr - p_vaddr + p_offset
    return None


def _comm_key(pid: int) -> bytes:
    """/proc/<pid>/comm as a filter_comms key (NUL-padded), b"" if gone."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            name = f.read().rstrip(b"\n")
    except OSError:
        return b""
    return name[:events.TASK_COMM_LEN - 1].ljust(events.TASK_COMM_LEN, b"\0")


def exec_mappings(pid: int) -> list[tuple[str, int, int]]:
    """(path usable from here, dev, inode) of each file pid maps executable,
    and of its executable. The inode in the maps line decides: a path that
    names another file here (another mount namespace) goes through
    /proc/<pid>/root. PermissionError (a process we may not inspect) is
    raised, for the caller to count; a process gone already is just []."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            lines = f.readlines()
        exe = os.readlink(f"/proc/{pid}/exe")
        inodes = {exe: os.stat(f"/proc/{pid}/exe").st_ino}
    except PermissionError:
        raise
    except OSError:
        return []
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) == 6 and "x" in parts[1] and parts[5].startswith("/"):
            inodes[parts[5].rstrip("\n")] = int(parts[4])
    out = []
    for p, ino in inodes.items():
        for path in (p, f"/proc/{pid}/root{p}"):
            try:
                st = os.stat(path)
            except OSError:
                continue
            if st.st_ino == ino:
                out.append((path, st.st_dev, st.st_ino))
                break
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
    unreadable: int = 0  # processes whose maps we may not read (privileges): not scanned
    # (dev, inode) -> path, as found by this process itself: what attaching may name
    discovered: dict[tuple[int, int], str] = field(default_factory=dict)
    broker: object = None  # the agent's broker.BrokerClient once split: it scans for us
    held: list[int] = field(default_factory=list)  # fds of links the broker attached
    multi: bool = False  # libraries take two uprobe_multi links (else a pair per function)
    multi_why: str = ""  # why not, when not
    multi_refused: int = 0  # libraries whose multi link the kernel refused: per-function links
    # with multi: tls.bpf.o again, per-function programs only, loaded at the first
    # refusal on the same maps (its links are adopted by obj)
    fallback: loader.BPFObject | None = None
    load_args: tuple = ()  # (sock, rodata) for the fallback

    @classmethod
    def load(cls, sock: loader.BPFObject, multi: bool | None = None,
             **rodata: int) -> TlsProbes:
        """tls.bpf.o on sock's maps. multi: use uprobe_multi links (None: if
        the kernel has them). Only one set of programs is loaded: the multi
        pair (loaded for those links, it cannot take plain uprobes), or the
        per-function programs. A library whose multi link is refused gets
        per-function programs from a second copy, loaded then."""
        why = ""
        if multi is None:
            multi, why = loader.uprobe_multi()
            why = "" if multi else why
        elif not multi:
            why = "off"
        try:
            obj = loader.BPFObject.load_on("tls", sock, SHARED_MAPS,
                                           configure=_configure(multi), **rodata)
        except loader.LoadError as e:
            if not multi:
                raise
            why = f"the kernel refused the uprobe_multi programs ({loader._errno_msg(e.err)})"
            log.warning("TLS: %s: per-function uprobes", why)
            multi = False
            obj = loader.BPFObject.load_on("tls", sock, SHARED_MAPS,
                                           configure=_configure(False), **rodata)
        try:
            probes = cls(obj, multi=multi, multi_why=why, load_args=(sock, rodata))
            probes.execs = obj.ring_buffer("tls_execs")
        except BaseException:
            obj.close()
            raise
        if not multi:
            log.info("TLS: per-function uprobe links (%s): stopping takes a synchronize per "
                     "probe", why)
        return probes

    @property
    def mode(self) -> str:
        return MODE_MULTI if self.multi else MODE_PER_FUNCTION

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
            self.discovered[(st.st_dev, st.st_ino)] = path
            self.consider(path, st.st_dev, st.st_ino, strict=not self.libraries)
        for pid in self.candidates():
            if pid != os.getpid():
                self.scan_pid(pid)

    def candidates(self) -> list[int]:
        """The processes the filters let through (process_wanted in
        filters.h): with --pid only those and their children, with --comm
        only those names. The rest are never traced: scanning them is waste."""
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

    def discover(self, pid: int) -> list[tuple[str, int, int]]:
        """exec_mappings(pid), remembered as found here (PermissionError raised)."""
        found = exec_mappings(pid)
        for path, dev, ino in found:
            if len(self.discovered) < MAX_DISCOVERED or (dev, ino) in self.discovered:
                self.discovered[(dev, ino)] = path
        return found

    def scan_pid(self, pid: int) -> None:
        if self.broker is not None:
            self._scan_via_broker(pid)
            return
        try:
            found = self.discover(pid)
        except PermissionError:
            self.unreadable += 1
            return
        for path, dev, ino in found:
            self.consider(path, dev, ino)

    def _scan_via_broker(self, pid: int) -> None:
        """The agent's scan: the broker reads the maps and attaches; the agent
        keeps the fds of the new links (they outlive a broker that dies)."""
        from .broker import BrokerGone

        try:
            reply, _ = self.broker.request("maps", pid=pid)
            if not reply.get("ok"):
                self.unreadable += reply.get("error") == "unreadable"
                return
            for path, dev, ino in reply["mappings"]:
                key = (dev, ino)
                if key in self.seen:
                    continue
                self.seen.add(key)
                r, fds = self.broker.request("attach_tls", path=path, dev=dev, ino=ino)
                self.held.extend(fds)
                if r.get("attached"):
                    self.libraries[key] = path
                    log.info("TLS: attached to %s (through the broker)", path)
                elif r.get("error"):
                    self.failed[path] = r["error"]
        except BrokerGone:
            return  # said once by the client

    def consider(self, path: str, dev: int, ino: int, strict: bool = False) -> bool:
        """Attach to the file if it has the OpenSSL API and is new; strict:
        raise if the kernel refuses (the first library tells whether uprobes
        work here at all)."""
        key = (dev, ino)
        if key in self.seen:
            return False
        self.seen.add(key)
        # Only the headers and the symbol string tables are read: a file
        # without the names costs a few small reads, not a scan of its bytes.
        try:
            offsets = symbol_offsets(path)
        except OSError:  # gone or unreadable: as if it had no OpenSSL
            return False
        except struct.error as e:  # truncated ELF
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
        """All of the library's probes or none (AttachError)."""
        if self.multi and self._attach_multi(path, offsets):
            return
        obj = self._per_function_object()
        before = set(obj.attached)
        try:
            for name, off in offsets.items():
                entry, ret = HOOKS[name]
                obj.attach_uprobe(entry, path, off, pid=-1)
                obj.attach_uprobe(ret, path, off, pid=-1, retprobe=True)
        except loader.AttachError:
            for key in set(obj.attached) - before:
                obj.detach(key)
            raise
        if obj is not self.obj:
            self.obj.adopt_links(obj, set(obj.attached) - before)

    def _per_function_object(self) -> loader.BPFObject:
        if not self.multi:
            return self.obj
        if self.fallback is None:
            sock, rodata = self.load_args
            try:
                self.fallback = loader.BPFObject.load_on(
                    "tls", sock, SHARED_MAPS, configure=_configure(False, exec_watch=False),
                    **rodata)
            except loader.LoaderError as e:
                raise loader.AttachError(f"per-function uprobes: {e}", program=MULTI_ENTRY,
                                         err=e.err) from None
        return self.fallback

    def _attach_multi(self, path: str, offsets: dict[str, int]) -> bool:
        """The library's entry probes as one uprobe_multi link, its return
        probes as another; False (counted, one line) if the kernel refuses."""
        names = sorted(offsets)
        offs = [offsets[n] for n in names]
        cookies = [int(HOOK_COOKIES[n]) for n in names]
        entry = None
        try:
            entry = self.obj.attach_uprobe_multi(MULTI_ENTRY, path, offs, cookies)
            self.obj.attach_uprobe_multi(MULTI_RETURN, path, offs, cookies, retprobe=True)
        except loader.AttachError as e:
            if entry is not None:
                self.obj.detach(entry)
            self.multi_refused += 1  # said once, counted always
            (log.warning if self.multi_refused == 1 else log.debug)(
                "TLS: %s: per-function uprobes for this library", e)
            return False
        return True

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
        """Release every link: this object's and those the broker attached
        (their fds are held here), all at once, since each release waits for
        the kernel."""
        held, self.held = self.held, []
        if not held:
            self.obj.detach_all()
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(len(held), 31) + 1) as pool:
            ours = pool.submit(self.obj.detach_all)
            list(pool.map(os.close, held))
            ours.result()

    def close(self) -> None:
        for fd in self.held:
            os.close(fd)
        self.held.clear()
        self.obj.close()
        if self.fallback is not None:
            self.fallback.close()
            self.fallback = None


def _configure(multi: bool, exec_watch: bool = True):
    """Before load: with multi, the uprobe_multi pair (verified for its link
    type) and not the per-function programs; without, the reverse."""
    def configure(obj: loader.BPFObject) -> None:
        for prog in obj.programs:
            if prog in (MULTI_ENTRY, MULTI_RETURN):
                if multi:
                    obj.set_expected_attach_type(prog, loader.BPF_TRACE_UPROBE_MULTI)
                else:
                    obj.set_autoload(prog, False)
            elif prog == "tp_exec":
                obj.set_autoload(prog, exec_watch)
            elif multi:
                obj.set_autoload(prog, False)
    return configure


class TlsPlaintext(Addon):
    """The add-on (tracer/addons.py): tls.bpf.o on sock.bpf.o's maps, its
    discovery ticked by the agent. Without uprobes (or tls.bpf.o) the agent
    says so in one line and traces the rest; ciphertext is then parsed like
    any bytes."""

    name = "tls"
    warning = "TLS plaintext not traced"

    def __init__(self) -> None:
        self.probes: TlsProbes | None = None
        self.libraries: list[str] = []  # files attached to, kept after close()
        self.unreadable = 0  # processes discovery could not inspect, kept after close()
        self.mode = ""  # uprobe links: MODE_MULTI or MODE_PER_FUNCTION, kept after close()
        self.multi_refused = 0  # kept after close()

    @classmethod
    def idle(cls) -> dict:
        return cls().counters()

    def start(self, kernel, table) -> None:
        self.probes = TlsProbes.load(kernel.loaded(), capture_bytes=kernel.capture_bytes,
                                     wakeup_bytes=kernel.wakeup_bytes, self_tgid=os.getpid())
        self.probes.start()

    def separated(self, broker) -> None:
        self.probes.broker = broker

    def bpf_objects(self) -> list:
        return [self.probes.obj] if self.probes is not None else []

    def tick(self, now_ns: int) -> None:
        self.probes.tick(now_ns / 1e9)

    def stop(self) -> None:
        if self.probes is not None:
            self.probes.detach()  # before the syscall side: no SSL call left half-seen

    def close(self) -> None:
        if self.probes is not None:
            self.libraries = sorted(self.probes.libraries.values())
            self.unreadable = self.probes.unreadable
            self.mode, self.multi_refused = self.probes.mode, self.probes.multi_refused
            self.probes.close()
            self.probes = None

    def counters(self) -> dict:
        p = self.probes
        return {"tls_libraries": sorted(p.libraries.values()) if p else self.libraries,
                "tls_unavailable": self.unavailable,
                "tls_unreadable_processes": p.unreadable if p else self.unreadable,
                "tls_uprobes": p.mode if p else self.mode,
                "tls_uprobe_multi_refused": p.multi_refused if p else self.multi_refused}
