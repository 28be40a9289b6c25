"""A thin, typed binding to the system libbpf (libbpf.so.1) through ctypes.

Life cycle of an object, as a context manager:

    with BPFObject.open(path) as obj:          # OpenError
        obj.set_rodata(capture_bytes=512)      # before load
        obj.load()                             # LoadError, carries the verifier log
        obj.attach_all()                       # AttachError, names the program
        rb = obj.ring_buffer("events")         # mmap consumer, no callback per event
        rb.poll(100); rb.consume(handler)
    # links, maps and the object are released on exit

The ring buffer is read by mapping it into this process (as libbpf does) and
walking the records in Python: that avoids a ctypes callback per event, which
costs more than the decode itself. Every lost event is counted by the BPF side
in a per-CPU counters map that `percpu_sum` reads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import logging
import os
import re
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .ring import RingBuffer

log = logging.getLogger("tracer.loader")

BPF_DIR = Path(__file__).parent / "bpf"
BUILD_DIR = BPF_DIR / "build"

# enum values from the kernel uapi (stable ABI)
BTF_KIND_VAR = 14
BTF_KIND_DATASEC = 15
BPF_PROG_LOAD = 5
BPF_LINK_CREATE = 28
BPF_PROG_TYPE_KPROBE = 2
BPF_TRACE_UPROBE_MULTI = 48  # enum bpf_attach_type, Linux 6.6+
BPF_F_UPROBE_MULTI_RETURN = 1
_SYS_BPF = {"x86_64": 321, "aarch64": 280}
ENOTSUPP = 524  # the kernel's internal "not supported" (e.g. a uprobe at an offset it cannot probe)
UPROBE_MULTI_ENV = "TRACER_UPROBE_MULTI"  # "0": per-function uprobe links even if the kernel has them


class LoaderError(Exception):
    """Base of the loader's errors. str() is one actionable line."""

    stage = "bpf"

    def __init__(self, message: str, *, err: int = 0, log_text: str = ""):
        super().__init__(message)
        self.err = err
        self.log = log_text


class LibraryError(LoaderError):
    stage = "library"


class OpenError(LoaderError):
    stage = "open"


class LoadError(LoaderError):
    """The kernel refused the object; `log` holds libbpf's and the verifier's output."""

    stage = "load"


class AttachError(LoaderError):
    stage = "attach"

    def __init__(self, message: str, *, program: str, err: int = 0, log_text: str = ""):
        super().__init__(message, err=err, log_text=log_text)
        self.program = program


class MapError(LoaderError):
    stage = "map"


# ---------------------------------------------------------------------------
# libbpf binding


class _BtfType(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32),
                ("size_or_type", ctypes.c_uint32)]


class _BtfVarSecinfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("offset", ctypes.c_uint32),
                ("size", ctypes.c_uint32)]


class _UprobeOpts(ctypes.Structure):  # struct bpf_uprobe_opts (libbpf 1.1 fields)
    _fields_ = [("sz", ctypes.c_size_t), ("ref_ctr_offset", ctypes.c_size_t),
                ("bpf_cookie", ctypes.c_uint64), ("retprobe", ctypes.c_bool),
                ("func_name", ctypes.c_char_p)]


class _ProgLoadAttr(ctypes.Structure):  # union bpf_attr, BPF_PROG_LOAD (up to expected_attach_type)
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
                ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32),
                ("prog_flags", ctypes.c_uint32), ("prog_name", ctypes.c_char * 16),
                ("prog_ifindex", ctypes.c_uint32), ("expected_attach_type", ctypes.c_uint32)]


class _LinkCreateUprobeMulti(ctypes.Structure):
    """union bpf_attr, BPF_LINK_CREATE with link_create.uprobe_multi (Linux
    6.6+; pid since 6.6 too): 64 bytes, the layout of include/uapi/linux/bpf.h
    and of the running kernel's BTF. libbpf 1.1 has no API for this link."""

    _fields_ = [("prog_fd", ctypes.c_uint32), ("target_fd", ctypes.c_uint32),
                ("attach_type", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("path", ctypes.c_uint64), ("offsets", ctypes.c_uint64),
                ("ref_ctr_offsets", ctypes.c_uint64), ("cookies", ctypes.c_uint64),
                ("cnt", ctypes.c_uint32), ("multi_flags", ctypes.c_uint32),
                ("pid", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)

_lib = None
_lib_lock = threading.Lock()
_print_cb = None  # keep the callback alive for the process lifetime


class _LogCapture:
    """libbpf's print callback: collects messages (for verifier logs) and
    forwards them to logging at DEBUG (shown with -v)."""

    def __init__(self):
        self.lines: list[str] = []
        self.capturing = False

    def take(self) -> str:
        text = "".join(self.lines)
        self.lines.clear()
        return text


_capture = _LogCapture()


def libbpf() -> ctypes.CDLL:
    """Load and describe libbpf.so.1 once."""
    global _lib, _print_cb
    with _lib_lock:
        if _lib is not None:
            return _lib
        name = "libbpf.so.1"
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError as e:
            raise LibraryError(
                f"cannot load {name} ({e}): install it with 'apt-get install libbpf1'") from None
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        vsnprintf = libc.vsnprintf
        vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
        vsnprintf.restype = ctypes.c_int

        P, INT, U32, SZ = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_size_t
        sigs = {
            "libbpf_set_print": ([_PRINT_FN], P),
            "bpf_object__open_file": ([ctypes.c_char_p, P], P),
            "bpf_object__load": ([P], INT),
            "bpf_object__close": ([P], None),
            "bpf_object__btf": ([P], P),
            "bpf_object__find_map_by_name": ([P, ctypes.c_char_p], P),
            "bpf_object__next_program": ([P, P], P),
            "bpf_object__next_map": ([P, P], P),
            "bpf_program__name": ([P], ctypes.c_char_p),
            "bpf_program__section_name": ([P], ctypes.c_char_p),
            "bpf_program__set_autoload": ([P, ctypes.c_bool], INT),
            "bpf_program__autoload": ([P], ctypes.c_bool),
            "bpf_program__attach": ([P], P),
            "bpf_program__attach_uprobe_opts": ([P, INT, ctypes.c_char_p, SZ, P], P),
            "bpf_program__attach_cgroup": ([P, INT], P),
            "bpf_program__set_attach_target": ([P, INT, ctypes.c_char_p], INT),
            "bpf_program__attach_kprobe_opts": ([P, ctypes.c_char_p, P], P),
            "btf__load_vmlinux_btf": ([], P),
            "btf__free": ([P], None),
            "btf__type_cnt": ([P], U32),
            "bpf_prog_attach": ([INT, INT, INT, U32], INT),
            "bpf_prog_detach2": ([INT, INT, INT], INT),
            "bpf_program__fd": ([P], INT),
            "bpf_program__set_expected_attach_type": ([P, INT], INT),
            "bpf_link__destroy": ([P], INT),
            "bpf_link__fd": ([P], INT),
            "bpf_map__fd": ([P], INT),
            "bpf_map__name": ([P], ctypes.c_char_p),
            "bpf_map__key_size": ([P], U32),
            "bpf_map__value_size": ([P], U32),
            "bpf_map__max_entries": ([P], U32),
            "bpf_map__set_max_entries": ([P, U32], INT),
            "bpf_map__reuse_fd": ([P, INT], INT),
            "bpf_map__initial_value": ([P, ctypes.POINTER(SZ)], P),
            "bpf_map_lookup_elem": ([INT, P, P], INT),
            "bpf_map_update_elem": ([INT, P, P, ctypes.c_uint64], INT),
            "bpf_map_delete_elem": ([INT, P], INT),
            "bpf_map_get_next_key": ([INT, P, P], INT),
            "btf__find_by_name_kind": ([P, ctypes.c_char_p, U32], ctypes.c_int32),
            "btf__type_by_id": ([P, U32], ctypes.POINTER(_BtfType)),
            "btf__name_by_offset": ([P, U32], ctypes.c_char_p),
            "libbpf_num_possible_cpus": ([], INT),
            "libbpf_probe_bpf_prog_type": ([INT, P], INT),
            "libbpf_probe_bpf_map_type": ([INT, P], INT),
            "libbpf_probe_bpf_helper": ([INT, INT, P], INT),
            "bpf_obj_get_info_by_fd": ([INT, P, ctypes.POINTER(U32)], INT),
            "bpf_enable_stats": ([INT], INT),
        }
        for fname, (args, res) in sigs.items():
            fn = getattr(lib, fname)
            fn.argtypes = args
            fn.restype = res

        # The verifier log arrives as one message: one large, reused buffer.
        buf = ctypes.create_string_buffer(1 << 20)

        def _print(level, fmt, ap):
            vsnprintf(buf, len(buf), fmt, ap)
            text = buf.value.decode("utf-8", "replace")
            if _capture.capturing:
                _capture.lines.append(text)
            # Expected failures (feature probes, fallbacks) print warnings too:
            # everything goes to DEBUG, shown with -v; errors carry the text.
            log.debug("libbpf: %s", text.rstrip())
            return 0

        _print_cb = _PRINT_FN(_print)
        lib.libbpf_set_print(_print_cb)
        _lib = lib
        return lib


def _errno_msg(err: int) -> str:
    if err == ENOTSUPP:
        return "ENOTSUPP: not supported by the kernel for this target"
    return f"{errno.errorcode.get(err, err)}: {os.strerror(err)}"


def _last_error() -> int:
    return ctypes.get_errno() or errno.EINVAL


_libc = None
_uprobe_multi: tuple[bool, str] | None = None


def sys_bpf(cmd: int, attr: ctypes.Structure) -> int:
    """The bpf(2) system call, for what libbpf 1.1 cannot ask; -errno on failure."""
    global _libc
    nr = _SYS_BPF.get(os.uname().machine)
    if nr is None:
        return -errno.ENOSYS
    if _libc is None:  # the process's own libc: find_library would run ldconfig
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    ret = _libc.syscall(ctypes.c_long(nr), ctypes.c_long(cmd), ctypes.byref(attr),
                        ctypes.c_uint(ctypes.sizeof(attr)))
    return ret if ret >= 0 else -_last_error()


def uprobe_multi() -> tuple[bool, str]:
    """(usable, why): whether this kernel makes uprobe_multi links (6.6+).

    Tried as libbpf's probe_uprobe_multi_link does: a two-instruction
    program loaded for BPF_TRACE_UPROBE_MULTI, then a link asked for on "/".
    A kernel that knows the link checks the file and refuses with EBADF (a
    directory); one that does not refuses the attach type (EINVAL). No uprobe
    is made, so the probe costs no release. Decided once per process, before
    loading: a program loaded for these links cannot take plain uprobes.
    TRACER_UPROBE_MULTI=0 chooses the per-function links."""
    global _uprobe_multi
    if os.environ.get(UPROBE_MULTI_ENV, "") == "0":
        return False, f"off ({UPROBE_MULTI_ENV}=0)"
    if _uprobe_multi is not None:
        return _uprobe_multi
    insns = ctypes.create_string_buffer(b"\xb7" + bytes(7) + b"\x95" + bytes(7))  # r0 = 0; exit
    lic = ctypes.create_string_buffer(b"GPL")
    load = _ProgLoadAttr(prog_type=BPF_PROG_TYPE_KPROBE, insn_cnt=2,
                         insns=ctypes.addressof(insns), license=ctypes.addressof(lic),
                         expected_attach_type=BPF_TRACE_UPROBE_MULTI)
    prog = sys_bpf(BPF_PROG_LOAD, load)
    if prog < 0:
        _uprobe_multi = (False, f"probe program refused ({_errno_msg(-prog)})")
        return _uprobe_multi
    try:
        path = ctypes.create_string_buffer(b"/")
        offset = ctypes.c_uint64(0)
        attr = _LinkCreateUprobeMulti(prog_fd=prog, attach_type=BPF_TRACE_UPROBE_MULTI,
                                      path=ctypes.addressof(path),
                                      offsets=ctypes.addressof(offset), cnt=1)
        link = sys_bpf(BPF_LINK_CREATE, attr)
    finally:
        os.close(prog)
    if link >= 0:  # not expected; a link made is a link that works
        os.close(link)
        _uprobe_multi = (True, "uprobe_multi links (Linux 6.6+)")
    elif link == -errno.EBADF:
        _uprobe_multi = (True, "uprobe_multi links (Linux 6.6+)")
    else:
        _uprobe_multi = (False, f"kernel has no uprobe_multi links ({_errno_msg(-link)})")
    return _uprobe_multi


def ensure_tracefs() -> bool:
    """libbpf resolves tracepoint ids through tracefs, which is not mounted at
    boot on our kernels. Mount it if needed; True when it is usable."""
    for p in ("/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"):
        if os.path.isdir(p):
            return True
    ret = os.system("mount -t tracefs nodev /sys/kernel/tracing >/dev/null 2>&1")
    return ret == 0 and os.path.isdir("/sys/kernel/tracing/events")


def object_path(name: str) -> Path:
    """Path of a compiled object; a clear error when the build step was not run."""
    path = BUILD_DIR / f"{name}.bpf.o"
    if not path.exists():
        raise OpenError(f"{path} not found: build the BPF objects with 'make bpf'")
    return path


# ---------------------------------------------------------------------------
# maps


class Map:
    """A map of a loaded object: fixed key/value sizes, raw bytes in and out."""

    def __init__(self, ptr: int, name: str):
        lib = libbpf()
        self._lib = lib
        self.name = name
        self.fd = lib.bpf_map__fd(ptr)
        self.key_size = lib.bpf_map__key_size(ptr)
        self.value_size = lib.bpf_map__value_size(ptr)
        self.max_entries = lib.bpf_map__max_entries(ptr)

    def _key(self, key: bytes | int):
        if isinstance(key, int):
            key = key.to_bytes(self.key_size, "little")
        if len(key) != self.key_size:
            raise MapError(f"map {self.name}: key of {len(key)} bytes, expected {self.key_size}")
        return ctypes.create_string_buffer(key, len(key))

    def lookup(self, key: bytes | int, value_size: int | None = None) -> bytes | None:
        k = self._key(key)
        v = ctypes.create_string_buffer(value_size or self.value_size)
        if self._lib.bpf_map_lookup_elem(self.fd, k, v):
            err = _last_error()
            if err == errno.ENOENT:
                return None
            raise MapError(f"map {self.name}: lookup failed ({_errno_msg(err)})", err=err)
        return v.raw

    def update(self, key: bytes | int, value: bytes | int, flags: int = 0) -> None:
        if isinstance(value, int):
            value = value.to_bytes(self.value_size, "little")
        k = self._key(key)
        v = ctypes.create_string_buffer(value, len(value))
        if self._lib.bpf_map_update_elem(self.fd, k, v, flags):
            err = _last_error()
            raise MapError(f"map {self.name}: update failed ({_errno_msg(err)})", err=err)

    def delete(self, key: bytes | int) -> bool:
        if self._lib.bpf_map_delete_elem(self.fd, self._key(key)):
            err = _last_error()
            if err == errno.ENOENT:
                return False
            raise MapError(f"map {self.name}: delete failed ({_errno_msg(err)})", err=err)
        return True

    def keys(self) -> Iterator[bytes]:
        cur = None
        nxt = ctypes.create_string_buffer(self.key_size)
        while self._lib.bpf_map_get_next_key(self.fd, cur, nxt) == 0:
            yield nxt.raw
            cur = ctypes.create_string_buffer(nxt.raw, self.key_size)

    def percpu_sum(self, index: int) -> int:
        """Sum of a u64 slot of a PERCPU_ARRAY over all possible CPUs."""
        ncpu = self._lib.libbpf_num_possible_cpus()
        stride = (self.value_size + 7) // 8 * 8
        raw = self.lookup(index, stride * ncpu)
        if raw is None:
            return 0
        return sum(struct.unpack_from("<Q", raw, i * stride)[0] for i in range(ncpu))


# ---------------------------------------------------------------------------
# ring buffer


# ---------------------------------------------------------------------------
# objects


class BPFObject:
    """One BPF object file: open → configure → load → attach → close."""

    def __init__(self, ptr: int, path: Path):
        self._lib = libbpf()
        self._ptr = ptr
        self.path = path
        self.loaded = False
        self._links: dict[str, int] = {}  # key -> libbpf struct bpf_link *
        self._fd_links: dict[str, int] = {}  # key -> fd of a link made by bpf(2) itself
        self._rbs: list[RingBuffer] = []
        self._map_attach: list[tuple[int, int, int]] = []  # (prog fd, map fd, type)
        self.programs = self._programs()

    # -- open ------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> BPFObject:
        lib = libbpf()
        path = Path(path)
        if not path.exists():
            raise OpenError(f"{path} not found: build the BPF objects with 'make bpf'")
        _capture.take()
        _capture.capturing = True
        try:
            ptr = lib.bpf_object__open_file(str(path).encode(), None)
            err = _last_error()
        finally:
            _capture.capturing = False
        if not ptr:
            raise OpenError(f"cannot open {path.name} ({_errno_msg(err)})", err=err,
                            log_text=_capture.take())
        return cls(ptr, path)

    @classmethod
    def load_on(cls, name: str, sock: BPFObject, maps, configure=None,
                **rodata: int) -> BPFObject:
        """Object `name` loaded on `sock`'s maps: the maps named in `maps`
        are sock's own (reuse_map), rodata set, then configure(obj) if given
        (autoload, attach types); closed again if loading fails."""
        obj = cls.open(object_path(name))
        try:
            for m in maps:
                obj.reuse_map(m, sock.map(m))
            obj.set_rodata(**rodata)
            if configure is not None:
                configure(obj)
            obj.load()
        except BaseException:
            obj.close()
            raise
        return obj

    def __enter__(self) -> BPFObject:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _programs(self) -> dict[str, int]:
        out = {}
        p = None
        while True:
            p = self._lib.bpf_object__next_program(self._ptr, p)
            if not p:
                return out
            out[self._lib.bpf_program__name(p).decode()] = p

    def section(self, prog: str) -> str:
        return self._lib.bpf_program__section_name(self.programs[prog]).decode()

    def attachable(self, prog: str) -> bool:
        """False for a program with no attach target (SEC("tracepoint")): it is
        only reached by tail calls from the others."""
        return self.section(prog) not in ("tp", "tracepoint")

    def maps(self) -> list[str]:
        out = []
        m = None
        while True:
            m = self._lib.bpf_object__next_map(self._ptr, m)
            if not m:
                return out
            out.append(self._lib.bpf_map__name(m).decode())

    def _map_ptr(self, name: str) -> int:
        ptr = self._lib.bpf_object__find_map_by_name(self._ptr, name.encode())
        if not ptr:
            raise MapError(f"{self.path.name} has no map '{name}'")
        return ptr

    # -- configure (before load) -------------------------------------------------
    def rodata_vars(self, section: str = ".rodata") -> dict[str, tuple[int, int]]:
        """name -> (offset, size) of the const volatile globals, from BTF."""
        btf = self._lib.bpf_object__btf(self._ptr)
        if not btf:
            return {}
        tid = self._lib.btf__find_by_name_kind(btf, section.encode(), BTF_KIND_DATASEC)
        if tid < 0:
            return {}
        t = self._lib.btf__type_by_id(btf, tid)
        vlen = t.contents.info & 0xFFFF
        secinfo = ctypes.cast(ctypes.addressof(t.contents) + ctypes.sizeof(_BtfType),
                              ctypes.POINTER(_BtfVarSecinfo))
        out = {}
        for i in range(vlen):
            si = secinfo[i]
            vt = self._lib.btf__type_by_id(btf, si.type)
            name = self._lib.btf__name_by_offset(btf, vt.contents.name_off).decode()
            out[name] = (si.offset, si.size)
        return out

    def set_rodata(self, **values: int) -> None:
        """Set const volatile globals (filters, knobs) before load."""
        if self.loaded:
            raise OpenError("rodata can only be set before load")
        mptr = self._map_ptr(".rodata")
        size = ctypes.c_size_t()
        data = self._lib.bpf_map__initial_value(mptr, ctypes.byref(size))
        layout = self.rodata_vars()
        for name, value in values.items():
            if name not in layout:
                raise OpenError(f"{self.path.name} has no rodata variable '{name}'")
            off, vsize = layout[name]
            if off + vsize > size.value:
                raise OpenError(f"rodata variable '{name}' is out of the section")
            raw = int(value).to_bytes(vsize, "little", signed=value < 0)
            ctypes.memmove(data + off, raw, vsize)

    def set_expected_attach_type(self, prog: str, attach_type: int) -> None:
        """Before load: the attach type the kernel verifies the program for
        (e.g. BPF_TRACE_UPROBE_MULTI, which libbpf 1.1's section names lack)."""
        ret = self._lib.bpf_program__set_expected_attach_type(self.programs[prog], attach_type)
        if ret:
            err = -ret if ret < 0 else _last_error()
            raise OpenError(f"cannot set the attach type of {prog}: {_errno_msg(err)}", err=err)

    def set_autoload(self, prog: str, enabled: bool) -> None:
        self._lib.bpf_program__set_autoload(self.programs[prog], enabled)

    def autoload(self, prog: str) -> bool:
        return bool(self._lib.bpf_program__autoload(self.programs[prog]))

    def set_max_entries(self, map_name: str, n: int) -> None:
        if self._lib.bpf_map__set_max_entries(self._map_ptr(map_name), n):
            err = _last_error()
            raise MapError(f"map {map_name}: cannot resize to {n} ({_errno_msg(err)})", err=err)

    # -- load -------------------------------------------------------------------
    def reuse_map(self, name: str, other: Map) -> None:
        """Before load: make map `name` the already-created map `other` (same
        definition), so two objects share it (bpf_map__reuse_fd)."""
        ret = self._lib.bpf_map__reuse_fd(self._map_ptr(name), other.fd)
        if ret:
            err = -ret if ret < 0 else _last_error()
            raise MapError(f"cannot reuse map {other.name} as {name} in {self.path.name}: "
                           f"{_errno_msg(err)}", err=err)

    def load(self) -> None:
        _capture.take()
        _capture.capturing = True
        try:
            ret = self._lib.bpf_object__load(self._ptr)
        finally:
            _capture.capturing = False
        text = _capture.take()
        if ret:
            err = -ret if ret < 0 else _last_error()
            hint = ""
            if err == errno.EPERM:
                hint = ": run as root, or with CAP_BPF and CAP_PERFMON"
            raise LoadError(f"kernel refused {self.path.name} ({_errno_msg(err)}){hint}",
                            err=err, log_text=text)
        self.loaded = True

    # -- attach -----------------------------------------------------------------
    def attach(self, prog: str) -> None:
        if prog in self._links:
            return
        sec = self.section(prog)
        if sec.startswith("tracepoint/") or sec.startswith("tp/"):
            ensure_tracefs()
        _capture.take()
        _capture.capturing = True
        try:
            link = self._lib.bpf_program__attach(self.programs[prog])
            err = _last_error()
        finally:
            _capture.capturing = False
        if not link:
            raise AttachError(f"cannot attach {prog} ({sec}): {_errno_msg(err)}", program=prog,
                              err=err, log_text=_capture.take())
        self._links[prog] = link

    def attach_uprobe(self, prog: str, binary: str, offset: int, pid: int = -1,
                      retprobe: bool = False, cookie: int = 0) -> None:
        """Attach at a file offset of `binary` (a shared library or executable),
        in process `pid` only (-1: every process); `cookie` is what
        bpf_get_attach_cookie returns in the program."""
        opts = _UprobeOpts(ctypes.sizeof(_UprobeOpts), 0, cookie, retprobe, None)
        link = self._lib.bpf_program__attach_uprobe_opts(
            self.programs[prog], pid, binary.encode(), offset, ctypes.byref(opts))
        if not link:
            err = _last_error()
            where = f"{binary}+{offset:#x}" + ("" if pid < 0 else f", pid {pid}")
            raise AttachError(f"cannot attach {'uretprobe' if retprobe else 'uprobe'} {prog} "
                              f"to {where}: {_errno_msg(err)}", program=prog, err=err)
        # the cookie is part of the key: two probes at one address are two links
        self._links[f"{prog}@{binary}:{offset}:{pid}" + (f"#{cookie}" if cookie else "")] = link

    def attach_uprobe_multi(self, prog: str, binary: str, offsets: list[int],
                            cookies: list[int] | None = None, retprobe: bool = False,
                            pid: int = -1) -> str:
        """One uprobe_multi link (Linux 6.6+) at every file offset of `binary`,
        cookies[i] being what bpf_get_attach_cookie returns at offsets[i];
        pid -1: every process. `prog` must have been loaded with
        BPF_TRACE_UPROBE_MULTI as its expected attach type. Returns the link's
        key. Releasing it costs one synchronize for all its probes, where
        per-offset links cost one each."""
        n = len(offsets)
        if not n or (cookies is not None and len(cookies) != n):
            raise AttachError(f"uprobe_multi {prog}: {n} offsets, "
                              f"{len(cookies or ())} cookies", program=prog, err=errno.EINVAL)
        offs = (ctypes.c_uint64 * n)(*offsets)
        cks = (ctypes.c_uint64 * n)(*cookies) if cookies is not None else None
        path = ctypes.create_string_buffer(os.fsencode(binary))
        attr = _LinkCreateUprobeMulti(
            prog_fd=self.prog_fd(prog), attach_type=BPF_TRACE_UPROBE_MULTI,
            path=ctypes.addressof(path), offsets=ctypes.addressof(offs),
            cookies=ctypes.addressof(cks) if cks is not None else 0, cnt=n,
            multi_flags=BPF_F_UPROBE_MULTI_RETURN if retprobe else 0, pid=max(pid, 0))
        fd = sys_bpf(BPF_LINK_CREATE, attr)
        if fd < 0:
            where = f"{binary} ({n} offsets" + (")" if pid < 0 else f", pid {pid})")
            raise AttachError(f"cannot attach uprobe_multi {'return ' if retprobe else ''}"
                              f"{prog} to {where}: {_errno_msg(-fd)}", program=prog, err=-fd)
        key = f"{prog}@{binary}:multi:{pid}"
        self._fd_links[key] = fd
        return key

    def set_attach_target(self, prog: str, func: str) -> None:
        """Before load: the kernel function an fentry/fexit program attaches to."""
        ret = self._lib.bpf_program__set_attach_target(self.programs[prog], 0, func.encode())
        if ret:
            err = -ret if ret < 0 else _last_error()
            raise OpenError(f"cannot target {prog} at {func}: {_errno_msg(err)}", err=err)

    def attach_kprobe(self, prog: str, func: str, retprobe: bool = False,
                      cookie: int = 0) -> None:
        """Attach a kprobe/kretprobe by kernel function name; `cookie` is what
        bpf_get_attach_cookie returns in the program."""

        class _KprobeOpts(ctypes.Structure):  # struct bpf_kprobe_opts (libbpf 1.1 fields)
            _fields_ = [("sz", ctypes.c_size_t), ("bpf_cookie", ctypes.c_uint64),
                        ("offset", ctypes.c_size_t), ("retprobe", ctypes.c_bool)]

        opts = _KprobeOpts(ctypes.sizeof(_KprobeOpts), cookie, 0, retprobe)
        link = self._lib.bpf_program__attach_kprobe_opts(self.programs[prog], func.encode(),
                                                         ctypes.byref(opts))
        if not link:
            err = _last_error()
            kind = "kretprobe" if retprobe else "kprobe"
            raise AttachError(f"cannot attach {kind} {prog} to {func}: {_errno_msg(err)}",
                              program=prog, err=err)
        self._links[f"{prog}@{func}:{int(retprobe)}"] = link

    def attach_cgroup(self, prog: str, cgroup_path: str) -> None:
        """Attach a cgroup program (e.g. sockops) to a cgroup v2 directory."""
        fd = os.open(cgroup_path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            link = self._lib.bpf_program__attach_cgroup(self.programs[prog], fd)
            err = _last_error()
        finally:
            os.close(fd)
        if not link:
            raise AttachError(f"cannot attach {prog} to cgroup {cgroup_path}: "
                              f"{_errno_msg(err)}", program=prog, err=err)
        self._links[f"{prog}@{cgroup_path}"] = link

    def attach_to_map(self, prog: str, map_name: str, attach_type: int) -> None:
        """bpf_prog_attach of a program to a map (e.g. sk_msg on a SOCKHASH,
        attach type BPF_SK_MSG_VERDICT); detached by close()."""
        pfd, mfd = self.prog_fd(prog), self.map(map_name).fd
        if self._lib.bpf_prog_attach(pfd, mfd, attach_type, 0):
            err = _last_error()
            raise AttachError(f"cannot attach {prog} to map {map_name}: {_errno_msg(err)}",
                              program=prog, err=err)
        self._map_attach.append((pfd, mfd, attach_type))

    def attach_all(self) -> list[str]:
        """Attach every program that was loaded; returns their names."""
        names = [p for p in self.programs if self.autoload(p) and self.attachable(p)]
        for p in names:
            self.attach(p)
        return names

    def detach(self, prog: str) -> None:
        link = self._links.pop(prog, None)
        if link:
            self._lib.bpf_link__destroy(link)
        fd = self._fd_links.pop(prog, None)
        if fd is not None:
            os.close(fd)

    def adopt_links(self, other: BPFObject, keys) -> None:
        """Make links that `other` attached this object's: listed, detached
        and closed with it (a link does not need its object once made)."""
        for key in keys:
            if key in other._links:
                self._links[key] = other._links.pop(key)
            elif key in other._fd_links:
                self._fd_links[key] = other._fd_links.pop(key)

    def link_fd(self, key: str) -> int:
        """The fd of an attached link (e.g. to pass to another process)."""
        if key in self._fd_links:
            return self._fd_links[key]
        return self._lib.bpf_link__fd(self._links[key])

    def detach_all(self) -> None:
        """Destroy every link, several at a time: each tracepoint or uprobe
        release waits for an RCU grace period in the kernel (~70 ms here), and
        ctypes drops the GIL, so concurrent releases overlap (24 links: 1.7 s
        one by one, 0.9 s this way)."""
        release = [(self._lib.bpf_link__destroy, link) for link in self._links.values()]
        release += [(os.close, fd) for fd in self._fd_links.values()]
        self._links.clear()
        self._fd_links.clear()
        if len(release) < 2:
            for fn, link in release:
                fn(link)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(len(release), 32)) as pool:
            list(pool.map(lambda r: r[0](r[1]), release))

    @property
    def attached(self) -> list[str]:
        return [*self._links, *self._fd_links]

    # -- run time -----------------------------------------------------------------
    def map(self, name: str) -> Map:
        return Map(self._map_ptr(name), name)

    def ring_buffer(self, name: str) -> RingBuffer:
        m = self.map(name)
        try:
            rb = RingBuffer(m.fd, m.max_entries)
        except OSError as e:
            raise MapError(f"cannot map the ring buffer ({e})", err=e.errno or 0) from None
        self._rbs.append(rb)
        return rb

    def prog_fd(self, prog: str) -> int:
        return self._lib.bpf_program__fd(self.programs[prog])

    def close(self) -> None:
        for rb in self._rbs:
            rb.close()
        self._rbs.clear()
        for pfd, mfd, kind in self._map_attach:
            self._lib.bpf_prog_detach2(pfd, mfd, kind)
        self._map_attach.clear()
        for link in self._links.values():
            self._lib.bpf_link__destroy(link)
        self._links.clear()
        for fd in self._fd_links.values():
            os.close(fd)
        self._fd_links.clear()
        if self._ptr:
            self._lib.bpf_object__close(self._ptr)
            self._ptr = None


def clock_offset_ns() -> int:
    """Offset from bpf_ktime_get_ns (CLOCK_MONOTONIC) to the wall clock.

    Bracket a monotonic read with two wall-clock reads and keep the tightest
    of a few tries, so the offset error is a few hundred ns at most.
    """
    best = None
    for _ in range(16):
        w0 = time.time_ns()
        m = time.monotonic_ns()
        w1 = time.time_ns()
        if best is None or w1 - w0 < best[0]:
            best = (w1 - w0, (w0 + w1) // 2 - m)
    return best[1]


# ---- the kernel's reason for a refusal, in one line ---------------------------
_LOG_NOISE = re.compile(r"processed \d+ insns|verification time|stack depth|"
                        r"max_states_per_insn|^libbpf: |^\s*$|^; ")


def refusal_line(message: str, log_text: str) -> str:
    """'<program>: <the verifier's last line>' from a libbpf load log, else
    message: the kernel's reason for refusing an object, in one line."""
    prog, last, in_log = "", "", False
    for line in (log_text or "").splitlines():
        m = re.search(r"prog '([^']+)': BPF program load failed", line)
        if m:
            prog = m.group(1)
        if "-- BEGIN PROG LOAD LOG --" in line:
            in_log, last = True, ""
        elif "-- END PROG LOAD LOG --" in line:
            in_log = False
        elif in_log and not _LOG_NOISE.search(line):
            last = line.strip()
    if not last:
        return message
    # a kernel older than the helper names it "unknown#<id>": the build's name
    last = re.sub(r"invalid func unknown#(\d+)", lambda m: (
        f"invalid func {_built_helper_names().get(int(m[1]), 'unknown')}#{m[1]}"
        " (the kernel lacks this helper)"), last)
    return f"{prog}: {last}" if prog else last


@functools.cache
def _built_helper_names() -> dict[int, str]:
    """Helper id -> name, from the BTF header the objects were built against."""
    try:
        text = (BUILD_DIR / "vmlinux.h").read_text()
    except OSError:
        return {}
    return {int(n): f"bpf_{name}" for name, n in re.findall(r"\bBPF_FUNC_(\w+) = (\d+),", text)}


def refusal(e: LoaderError) -> str:
    """One line for a load or attach failure, with the verifier's reason."""
    why = refusal_line(str(e), e.log)
    if why == str(e):
        return why
    code = f" ({_errno_msg(e.err)})" if e.err else ""
    return f"{why}{code}"


BPF_PROG_TYPE_TRACEPOINT = 5
BPF_PROG_TYPE_SOCK_OPS = 13
BPF_PROG_TYPE_SK_MSG = 16
BPF_FUNC_loop = 181


def prog_type_supported(prog_type: int) -> bool:
    """libbpf's probe: does this kernel load a program of this type?"""
    return libbpf().libbpf_probe_bpf_prog_type(prog_type, None) == 1


def bpf_loop() -> bool:
    """bpf_loop (5.17+): sock.bpf.o's exit program verifies its iovec loop
    once with it, and falls back to a bounded loop without it."""
    return libbpf().libbpf_probe_bpf_helper(BPF_PROG_TYPE_TRACEPOINT, BPF_FUNC_loop, None) == 1
